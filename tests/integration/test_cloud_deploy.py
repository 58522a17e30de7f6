"""The cloud as a service (scripts/cloud/): the image's entrypoint, its Containerfile and the
compose file, tested without a container engine (this machine has only the docker client).

- the entrypoint runs here as it runs in the image: against a real PostgreSQL and a real
  SQLite file it migrates, makes the roster keys, and serves with its worker processes; a
  secret file named after the setting (admin_token) is what the API takes; a bad setting
  stops it at once, an unreachable database after the wait;
- the Containerfile copies only files that exist, everything the wheel is built from, and
  runs the entrypoint it copies as a user other than root;
- the compose file names the services, their health checks and settings that exist, and
  the broker command it runs really starts mosquitto with a password.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cloud_sync.server.config import CloudSettings, load_cloud_settings
from tests.conftest import free_port, need
from tests.helpers import BIN, REPO
from tests.integration.sync.cloudkit import fresh_pg_database

DEPLOY = REPO / "scripts" / "cloud"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
TOKEN = "entrypoint-admin-token-0123456789abcdef"
SETTINGS = {f"KIOSK_CLOUD_{name.upper()}" for name in CloudSettings.model_fields}
# read by the entrypoint itself, not by kiosk-cloud
ENTRYPOINT_SETTINGS = {"KIOSK_CLOUD_DATABASE_WAIT_S"}


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIOSK_", "PG"))}
    env.pop("CREDENTIALS_DIRECTORY", None)
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "admin_token").write_text(TOKEN + "\n", encoding="utf-8")
    env.update(
        PATH=f"{BIN}:{env['PATH']}",
        CREDENTIALS_DIRECTORY=str(secrets),
        KIOSK_CLOUD_LOG_LEVEL="warning",
    )
    env.update(values)
    return env


def _entrypoint(
    tmp_path: Path, *args: str, timeout: float = 60, **values: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        env=_env(tmp_path, **values),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Any]:
    """Start ``entrypoint.sh`` (no arguments: serve) and wait for /healthz."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**values: str) -> tuple[str, int]:
        port = free_port()
        log = (tmp_path / "serve.log").open("ab")
        proc = subprocess.Popen(
            [str(ENTRYPOINT)],
            env=_env(tmp_path, KIOSK_CLOUD_PORT=str(port), KIOSK_CLOUD_LOG_LEVEL="info", **values),
            cwd=tmp_path,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "serve.log").read_text())
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return url, proc.pid
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(
            "the entrypoint did not serve: " + (tmp_path / "serve.log").read_text()
        )

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                # a clean stop on SIGTERM, as `docker stop` or systemd sends: uvicorn shuts the
                # app down, then ends as the signal would (-15) or, with workers, with 0
                assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
                assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)


def _admin_answers(url: str) -> None:
    good = httpx.get(url + "/v1/admin/events", headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.status_code == 200, good.text  # the token came from the file admin_token
    bad = httpx.get(url + "/v1/admin/events", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401


def test_entrypoint_passes_shellcheck() -> None:
    need(shutil.which("shellcheck") is not None, "shellcheck (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert os.access(ENTRYPOINT, os.X_OK)


@pytest.mark.service
def test_entrypoint_on_postgresql_migrates_makes_keys_and_serves_with_workers(
    tmp_path: Path, serving: Any
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    with fresh_pg_database() as url:
        values = {
            "KIOSK_CLOUD_DATABASE_URL": url,
            "KIOSK_CLOUD_ROSTER_KEY_FILE": str(keys / "roster-ed25519.pem"),
            "KIOSK_CLOUD_ROSTER_DATA_KEY_FILE": str(keys / "roster-data.key"),
        }
        init = _entrypoint(tmp_path, "init", **values)
        assert init.returncode == 0, init.stderr
        assert "applied migrations [1, 2, 3, 4" in init.stdout
        public_key = init.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"[A-Za-z0-9_=+/-]{40,}", public_key), init.stdout
        for key in keys.iterdir():
            assert key.stat().st_mode & 0o777 == 0o600
        again = _entrypoint(tmp_path, "init", **values)  # a second init changes nothing
        assert again.returncode == 0, again.stderr
        assert "the schema is up to date" in again.stdout
        assert again.stdout.strip().splitlines()[-1] == public_key

        base, pid = serving(KIOSK_CLOUD_WORKERS="2", **values)
        health = httpx.get(base + "/healthz").json()
        assert health["database"] == "postgres"
        _admin_answers(base)
        listed = _entrypoint(tmp_path, "kiosks", **values)  # any other command: kiosk-cloud's
        assert listed.returncode == 0, listed.stderr
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        assert len(children.stdout.split()) >= 2, "no worker processes"  # KIOSK_CLOUD_WORKERS


def test_entrypoint_on_sqlite_serves_from_its_working_folder(tmp_path: Path, serving: Any) -> None:
    base, _ = serving(KIOSK_CLOUD_DATABASE_URL=f"sqlite:///{tmp_path}/cloud.sqlite")
    assert httpx.get(base + "/healthz").json()["database"] == "sqlite"
    _admin_answers(base)
    assert (tmp_path / "roster-ed25519.pem").is_file()  # made beside SQLite at the first start


def test_entrypoint_stops_at_once_on_a_bad_setting(tmp_path: Path) -> None:
    result = _entrypoint(tmp_path, KIOSK_CLOUD_DATABASE_URL="mysql://db/x", timeout=30)
    assert result.returncode == 3
    assert "KIOSK_CLOUD_DATABASE_URL" in result.stderr
    waits = _entrypoint(tmp_path, KIOSK_CLOUD_DATABASE_WAIT_S="soon")
    assert waits.returncode == 2
    assert "KIOSK_CLOUD_DATABASE_WAIT_S must be whole seconds" in waits.stderr


def _stand_in(tmp_path: Path, failures: int, wait_s: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint with a stand-in kiosk-cloud first on PATH that records each call; its
    first ``failures`` migrations fail (exit 7) as they do while the database starts."""
    stand_in = tmp_path / "bin"
    stand_in.mkdir()
    (stand_in / "kiosk-cloud").write_text(
        "#!/bin/sh\n"
        'echo "$* PGPASSWORD=$PGPASSWORD" >> "$CALLS"\n'
        f'if [ "$1" = migrate ] && [ "$(grep -c migrate "$CALLS")" -le {failures} ]; then\n'
        "  exit 7\nfi\n",
        encoding="utf-8",
    )
    (stand_in / "kiosk-cloud").chmod(0o755)
    env = _env(tmp_path, CALLS=str(tmp_path / "calls"), KIOSK_CLOUD_DATABASE_WAIT_S=wait_s)
    (Path(env["CREDENTIALS_DIRECTORY"]) / "postgres_password").write_text("pw-1\n")
    env["PATH"] = f"{stand_in}:{env['PATH']}"
    return subprocess.run(
        [str(ENTRYPOINT), "serve", "--port", "9000"], env=env, capture_output=True, text=True
    )


def test_entrypoint_waits_for_the_database_and_hands_over_secrets(tmp_path: Path) -> None:
    result = _stand_in(tmp_path, failures=2, wait_s="10")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    # migrated once the database answers, then serve runs once, the secret as PGPASSWORD
    assert calls == ["migrate PGPASSWORD=pw-1"] * 3 + ["serve --port 9000 PGPASSWORD=pw-1"]


def test_entrypoint_gives_up_on_a_database_that_never_answers(tmp_path: Path) -> None:
    result = _stand_in(tmp_path, failures=1000, wait_s="2")
    assert result.returncode == 7
    assert "the database did not answer within 2s" in result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["migrate PGPASSWORD=pw-1"] * 2  # never served


# -- the image definition ------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    rows = [line.strip() for line in joined.splitlines()]
    return [
        (row.split(None, 1)[0].upper(), row.split(None, 1)[1])
        for row in rows
        if row and not row.startswith("#")
    ]


def test_containerfile_copies_files_that_exist_and_all_the_wheel_needs() -> None:
    steps = _instructions()
    targets = re.findall(r"ARG TARGET=(\S+)", "\n".join(f"{k} {v}" for k, v in steps))
    assert targets == ["cloud"]
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    copied: set[str] = set()
    for kind, rest in steps:
        if kind != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for source in sources:
            for target in ("cloud", "cloud-enrol"):  # the build argument's two values
                path = source.replace("${TARGET}", target)
                assert (REPO / path).exists(), path
                assert path not in ignored, f"{path} is left out of the build context"
                copied.add(path)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(wheel["packages"]) | set(wheel["shared-scripts"]) | {"pyproject.toml"} <= copied
    assert project["project"]["readme"] in copied


def test_containerfile_runs_the_entrypoint_unprivileged_with_real_settings() -> None:
    steps = _instructions()
    entry = [rest for kind, rest in steps if kind == "ENTRYPOINT"]
    assert entry == ['["/usr/local/bin/kiosk-cloud-entrypoint"]']
    assert ("COPY", "scripts/cloud/entrypoint.sh /usr/local/bin/kiosk-cloud-entrypoint") in steps
    users = [rest for kind, rest in steps if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = [rest for kind, rest in steps if kind == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    env = " ".join(rest for kind, rest in steps if kind == "ENV")
    named = set(re.findall(r"(KIOSK_CLOUD_\w+)=", env))
    assert "KIOSK_CLOUD_HOST" in named and named <= SETTINGS, named - SETTINGS
    assert ".venv" in (REPO / ".dockerignore").read_text(encoding="utf-8").split()


# -- the compose file ------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return data


def test_compose_runs_api_replicas_on_postgresql_with_a_broker() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "init", "api", "lb", "mosquitto"}
    api = services["api"]
    assert api["deploy"]["replicas"] >= 2
    assert api["command"] == ["serve"] and services["init"]["command"] == ["init"]
    assert api["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "init": {"condition": "service_completed_successfully"},
    }
    for name in ("postgres", "api", "lb", "mosquitto"):  # everything that keeps running
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "unless-stopped", name
    assert api["read_only"] is True and api["cap_drop"] == ["ALL"]
    build = api["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_compose_settings_exist_and_agree_with_each_other() -> None:
    compose = _compose()
    services = compose["services"]
    env = services["api"]["environment"]
    assert set(env) <= SETTINGS | ENTRYPOINT_SETTINGS, set(env) - SETTINGS
    settings = CloudSettings(**{k.removeprefix("KIOSK_CLOUD_").lower(): v for k, v in env.items()})
    assert settings.database_url.startswith("postgresql://")
    assert "@postgres:5432/" in settings.database_url
    assert settings.workers >= 2
    assert services["postgres"]["environment"]["POSTGRES_DB"] in settings.database_url
    # the replicas trust X-Forwarded-For from the load balancer only
    lb_address = services["lb"]["networks"]["cloud"]["ipv4_address"]
    assert settings.forwarded_allow_ips == lb_address
    # every replica reads the roster keys that init made, from one shared volume
    keys = settings.roster_key_paths
    assert keys is not None
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["api"]["volumes"]}
    assert {str(p.parent) for p in keys} == {"/var/lib/kiosk-cloud/keys"}
    assert mounts["/var/lib/kiosk-cloud/keys"] in compose["volumes"]
    assert services["init"]["volumes"] == services["api"]["volumes"]
    # secrets come from files under secrets/, which git never takes
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert "secrets/" in (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    # the load balancer proxies to the api service on the port the replicas listen on
    nginx = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    assert f"server api:{env.get('KIOSK_CLOUD_PORT', 8000)}" in nginx
    body = int(re.search(r"client_max_body_size (\d+)m", nginx).group(1))  # type: ignore[union-attr]
    assert body * 1024 * 1024 >= settings.max_body_bytes
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in nginx  # never the client's own


@pytest.mark.service
def test_compose_broker_command_starts_mosquitto_with_a_password(
    request: pytest.FixtureRequest,
) -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    need(Path(mosquitto).exists(), "mosquitto")
    service = _compose()["services"]["mosquitto"]
    # the broker drops root for its own user, which must reach the folder (pytest's is 0700)
    root = Path(tempfile.mkdtemp(prefix="kiosk-compose-mqtt-"))
    root.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    for folder in ("config", "data", "secrets"):
        (root / folder).mkdir(parents=True)
    (root / "data").chmod(0o777)
    (root / "secrets" / "mqtt_password").write_text("broker-pw-1")
    port = free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text(encoding="utf-8")
    (root / "config" / "mosquitto.conf").write_text(
        conf.replace("/mosquitto/", f"{root}/").replace("listener 1883", f"listener {port}")
    )
    script = service["entrypoint"][2].replace("$$", "$").replace("/mosquitto/", f"{root}/")
    script = script.replace("/run/secrets/", f"{root}/secrets/")
    script = script.replace("exec mosquitto", f"exec {mosquitto}")
    if os.geteuid() != 0:  # only root may hand the file to the broker's user
        script = re.sub(r"&& chown \S+ \S+ ", "", script)
    env = dict(os.environ, **service["environment"])
    broker = subprocess.Popen(["/bin/sh", "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        subscribe = ["mosquitto_sub", "-p", str(port), "-t", "$SYS/broker/uptime", "-C", "1"]
        for _ in range(50):
            login = subprocess.run(
                [*subscribe, "-W", "2", "-u", "kiosk-fleet", "-P", "broker-pw-1"],
                capture_output=True,
                text=True,
            )
            if login.returncode == 0 or broker.poll() is not None:
                break
        assert login.returncode == 0, login.stderr
        anonymous = subprocess.run([*subscribe, "-W", "2"], capture_output=True, text=True)
        assert anonymous.returncode != 0 and "not authorised" in anonymous.stderr
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def test_systemd_and_image_defaults_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    unit = (REPO / "systemd" / "kiosk-cloud.service").read_text(encoding="utf-8")
    pairs = dict(re.findall(r"^Environment=(KIOSK_CLOUD_\w+)=(\S+)$", unit, re.MULTILINE))
    assert set(pairs) <= SETTINGS, set(pairs) - SETTINGS
    for key, value in pairs.items():
        monkeypatch.setenv(key, value)
    settings = load_cloud_settings()
    assert settings.workers >= 2
    assert settings.database_url == "sqlite:////var/lib/kiosk-cloud/cloud.sqlite"


def test_secret_files_are_named_after_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd credentials and container secrets are files named after the setting; the
    environment still wins over them."""
    (tmp_path / "admin_token").write_text(TOKEN + "\n")
    (tmp_path / "database_url").write_text("postgresql://cloud@db:5432/cloud\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = load_cloud_settings()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == TOKEN
    assert settings.database_url == "postgresql://cloud@db:5432/cloud"
    monkeypatch.setenv("KIOSK_CLOUD_DATABASE_URL", "sqlite:///other.sqlite")
    assert load_cloud_settings().database_url == "sqlite:///other.sqlite"


def test_the_operators_page_names_every_setting() -> None:
    page = (REPO / "docs" / "cloud.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(KIOSK_CLOUD_\w+)` \|", page, re.MULTILINE))
    assert documented == SETTINGS, (SETTINGS - documented, documented - SETTINGS)
    for section in ("## Install", "## Configure", "## Scale out", "## Back up", "## Upgrade"):
        assert section in page, section
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(docs/cloud.md)" in readme
