"""``kiosk provision`` against the real cloud API (uvicorn on a free port, SQLite), in a
temporary root: the provisioning file as ``scripts/flash`` writes it, a token from the
admin API, and the kiosk's own commands afterwards."""

from __future__ import annotations

import json
import stat
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync import keyfiles
from cloud_sync.outbox import Outbox
from cloud_sync.signing import public_key_text
from tests.conftest import free_port
from tests.helpers import run_cli
from tests.integration.sync.cloudkit import Cloud, start_cloud
from tests.integration.test_flash import load_flash

PSK = "correct-horse-battery"
SSH_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq0w1p9xYt7k0j6k2sXo3b6CwCk3hL0qX9d2QkPqGxZ tech@depot"
)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    running = start_cloud(f"sqlite:///{tmp_path / 'cloud' / 'cloud.sqlite'}")
    try:
        yield running
    finally:
        running.stop()


def issue_token(cloud: Cloud, **body: Any) -> str:
    response = cloud.admin("POST", "/v1/admin/provisioning-tokens", json=body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def write_provisioning(folder: Path, **fields: str) -> Path:
    """The file exactly as scripts/flash writes it to the boot partition."""
    flash = load_flash()
    data = flash.Provisioning.checked({"site": "North gate", **fields})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kiosk-provision.toml"
    path.write_text(data.toml(), encoding="utf-8")
    return path


def provision(source: Path, root: Path, retry_for: float = 5) -> Any:
    return run_cli(
        "provision", "--from", str(source), "--root", str(root), "--retry-for", str(retry_for)
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("kiosk: error:")]


def journal(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "var/lib/kiosk/provision.json").read_text())
    return data


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def every_file(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def test_provision_registers_pins_writes_settings_and_then_does_nothing(
    tmp_path: Path, cloud: Cloud
) -> None:
    token = issue_token(cloud, kiosk_id="kiosk-0042")
    root = tmp_path / "root"
    source = write_provisioning(
        tmp_path / "boot",
        kiosk_id="kiosk-0042",
        cloud_url=cloud.url,
        token=token,
        wifi_ssid="depot net",
        wifi_psk=PSK,
        ssh_key=SSH_KEY,
        timezone="Europe/Madrid",
    )

    result = provision(source, root)

    assert result.returncode == 0, result.stderr
    assert "kiosk-0042 provisioned: settings in" in result.stdout
    assert not source.exists(), "the token must be gone from the boot partition"
    config = root / "etc/kiosk/kiosk.toml"
    assert mode(config) == 0o640
    settings = tomllib.loads(config.read_text())
    roster_key = cloud.admin("GET", "/v1/admin/roster").json()["roster_public_key"]
    assert settings["kiosk"] == {
        "id": "kiosk-0042",
        "site": "North gate",
        "state_dir": str(root / "var/lib/kiosk"),
    }
    assert settings["sync"] == {"cloud_url": cloud.url}
    assert settings["roster"] == {"cloud_roster_key": roster_key}
    assert run_cli("config", "check", str(config)).returncode == 0

    # one Ed25519 identity: the sync client's key, the same in the device-keys folder
    state = root / "var/lib/kiosk"
    sync_key = keyfiles.read_private_key(state / "kiosk-ed25519.pem", Ed25519PrivateKey)  # type: ignore[type-abstract]
    copy = keyfiles.read_private_key(state / "keys/kiosk-ed25519.pem", Ed25519PrivateKey)  # type: ignore[type-abstract]
    assert public_key_text(copy) == public_key_text(sync_key)
    for key_file in ("kiosk-ed25519.pem", "keys/kiosk-ed25519.pem", "keys/kiosk-x25519.pem"):
        assert mode(state / key_file) == 0o600
    box = run_cli("--config", str(config), "sync", "key", "--box").stdout.strip()
    [registered] = cloud.admin("GET", "/v1/admin/kiosks").json()
    assert registered["kiosk_id"] == "kiosk-0042"
    assert registered["public_key"] == public_key_text(sync_key)
    assert registered["box_public_key"] == box
    assert registered["site"] == "North gate"

    first_boot = root / "etc/kiosk/first-boot"
    wifi = first_boot / "wifi.nmconnection"
    assert mode(wifi) == 0o600
    assert "ssid=depot net\n" in wifi.read_text() and f"psk={PSK}\n" in wifi.read_text()
    assert (first_boot / "timezone").read_text() == "Europe/Madrid\n"
    assert (first_boot / "authorized_keys").read_text() == SSH_KEY + "\n"
    secrets_seen = [path for path in every_file(root) if token.encode() in path.read_bytes()] + [
        path for path in every_file(root) if PSK.encode() in path.read_bytes() and path != wifi
    ]
    assert secrets_seen == []
    assert token not in result.stdout + result.stderr and PSK not in result.stdout + result.stderr

    before = {path: path.read_bytes() for path in every_file(root)}
    again = provision(source, root)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"kiosk-0042 is already provisioned ({config}); nothing to do"
    assert {path: path.read_bytes() for path in every_file(root)} == before

    # the kiosk signs with the key it registered: the cloud takes its batch, and its roster
    outbox = Outbox(state / "outbox.sqlite", "kiosk-0042")
    outbox.append(
        "rental.started",
        rental_id="r1",
        person_id="p1",
        slot=1,
        powerbank_id="pb-1",
        request_id="q1",
    )
    outbox.close()
    sent = run_cli("--config", str(config), "sync", "now")
    assert sent.returncode == 0, sent.stderr
    assert [event["type"] for event in cloud.events("kiosk-0042")] == ["rental.started"]
    pulled = run_cli("--config", str(config), "roster", "pull", "--json")
    assert pulled.returncode == 0, pulled.stderr


def test_a_used_unknown_or_wrong_token_fails_clearly(tmp_path: Path, cloud: Cloud) -> None:
    token = issue_token(cloud)
    first = write_provisioning(
        tmp_path / "boot-a", kiosk_id="kiosk-a", cloud_url=cloud.url, token=token
    )
    assert provision(first, tmp_path / "a").returncode == 0

    used = write_provisioning(
        tmp_path / "boot-b", kiosk_id="kiosk-b", cloud_url=cloud.url, token=token
    )
    result = provision(used, tmp_path / "b")
    assert result.returncode == 7
    assert error_lines(result.stderr) == [
        f"kiosk: error: the cloud refused the provisioning token ({cloud.url}/v1/provision: "
        "401 bad_token: this provisioning token was already used); issue a new one "
        "(kiosk-cloud issue-token --kiosk-id kiosk-b)"
    ]
    assert used.exists() and not (tmp_path / "b/etc/kiosk/kiosk.toml").exists()
    assert token not in result.stderr

    unknown = write_provisioning(
        tmp_path / "boot-c", kiosk_id="kiosk-c", cloud_url=cloud.url, token="kpt_" + "x" * 32
    )
    result = provision(unknown, tmp_path / "c")
    assert result.returncode == 7 and "unknown provisioning token" in result.stderr

    bound = issue_token(cloud, kiosk_id="kiosk-z")
    other = write_provisioning(
        tmp_path / "boot-d", kiosk_id="kiosk-d", cloud_url=cloud.url, token=bound
    )
    result = provision(other, tmp_path / "d")
    assert result.returncode == 7 and "this token is for kiosk 'kiosk-z'" in result.stderr

    taken = write_provisioning(
        tmp_path / "boot-e", kiosk_id="kiosk-a", cloud_url=cloud.url, token=issue_token(cloud)
    )
    result = provision(taken, tmp_path / "e")
    assert result.returncode == 7
    assert "409 kiosk_exists" in result.stderr
    assert "issue a token bound to it (kiosk-cloud issue-token --kiosk-id kiosk-a)" in result.stderr


GOOD = (
    'kiosk_id = "kiosk-0042"\nsite = "North gate"\ncloud_url = "https://cloud.example"\n'
    'token = "kpt_0123456789abcdefXYZ"\n'
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            GOOD.replace("kiosk-0042", "Kiosk_42"),
            "kiosk_id: 'Kiosk_42' must be 2-63 of a-z, 0-9 and -",
        ),
        (GOOD.replace('site = "North gate"\n', ""), "site: is missing"),
        (
            GOOD.replace("https://cloud.example", "cloud.example"),
            "cloud_url: 'cloud.example' is not an http(s) URL",
        ),
        (
            GOOD.replace("kpt_0123456789abcdefXYZ", "short"),
            "token: must be 16-256 URL-safe characters",
        ),
        (GOOD + 'wifi_ssid = "depot"\n', "wifi_ssid and wifi_psk go together"),
        (GOOD + 'wifi_password = "x"\n', "wifi_password: unknown field"),
        (GOOD + "timezone = 1\n", "timezone: must be a string in quotes (got 1)"),
        (GOOD + "timezone = \n", "not valid TOML: "),
    ],
    ids=["kiosk-id", "missing-site", "url", "token", "wifi-pair", "unknown", "type", "toml"],
)
def test_a_bad_provisioning_file_is_refused_in_one_line_with_nothing_written(
    tmp_path: Path, text: str, reason: str
) -> None:
    source = tmp_path / "boot" / "kiosk-provision.toml"
    source.parent.mkdir()
    source.write_text(text, encoding="utf-8")
    root = tmp_path / "root"

    result = provision(source, root)

    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kiosk: error: {source}: {reason}")
    assert "kpt_0123456789abcdefXYZ" not in result.stderr
    assert not root.exists()
    assert source.read_text(encoding="utf-8") == text


def test_an_unreachable_cloud_is_retried_and_the_next_run_resumes(tmp_path: Path) -> None:
    port = free_port()
    database = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    cloud = start_cloud(database, port=port)
    token = issue_token(cloud)
    cloud.stop()  # the cloud goes away before the kiosk boots
    root = tmp_path / "root"
    source = write_provisioning(
        tmp_path / "boot", kiosk_id="kiosk-7", cloud_url=cloud.url, token=token
    )

    offline = provision(source, root, retry_for=2)

    assert offline.returncode == 7
    [line] = error_lines(offline.stderr)
    assert line.startswith(
        f"kiosk: error: cannot register with the cloud: {cloud.url}: cannot connect"
    )
    assert "the keys are kept; the next run resumes" in line
    assert int(line.split("gave up after ")[1].split()[0]) >= 2, "it must have retried"
    assert journal(root)["done"] == ["keys", "first-boot"]
    made = journal(root)["public_key"]
    assert source.exists() and not (root / "etc/kiosk/kiosk.toml").exists()

    cloud = start_cloud(database, port=port)
    try:
        resumed = provision(source, root)
        assert resumed.returncode == 0, resumed.stderr
        assert "keys:" not in resumed.stdout, "keys already made are not made again"
        assert "kiosk-7 provisioned (resumed)" in resumed.stdout
        [registered] = cloud.admin("GET", "/v1/admin/kiosks").json()
        assert registered["public_key"] == made
        assert journal(root)["done"] == ["keys", "first-boot", "register", "config", "cleanup"]
    finally:
        cloud.stop()


def test_a_registration_whose_answer_was_lost_finishes_on_the_next_run(
    tmp_path: Path, cloud: Cloud
) -> None:
    token = issue_token(cloud)
    root = tmp_path / "root"
    offline = write_provisioning(
        tmp_path / "boot",
        kiosk_id="kiosk-9",
        cloud_url=f"http://127.0.0.1:{free_port()}",
        token=token,
    )
    assert provision(offline, root, retry_for=0).returncode == 7  # keys made, nothing sent
    made = journal(root)
    # the kiosk's request reaches the cloud, and the power goes before the answer is read
    spent = cloud.http.post(
        cloud.url + "/v1/provision",
        json={
            "token": token,
            "kiosk_id": "kiosk-9",
            "public_key": made["public_key"],
            "box_public_key": made["box_public_key"],
        },
    )
    assert spent.status_code == 201, spent.text
    stranger = public_key_text(Ed25519PrivateKey.generate())
    replay = cloud.http.post(
        cloud.url + "/v1/provision",
        json={"token": token, "kiosk_id": "kiosk-9", "public_key": stranger},
    )
    assert replay.status_code == 401, "a spent token registers no other key"
    source = write_provisioning(
        tmp_path / "boot", kiosk_id="kiosk-9", cloud_url=cloud.url, token=token
    )

    result = provision(source, root)

    assert result.returncode == 0, result.stderr
    assert "register: kiosk-9 registered" in result.stdout
    settings = tomllib.loads((root / "etc/kiosk/kiosk.toml").read_text())
    assert settings["roster"]["cloud_roster_key"] == spent.json()["roster_public_key"]


@pytest.fixture
def odd_cloud() -> Iterator[tuple[str, dict[str, Any]]]:
    """A cloud that registers whatever keys it is sent, then answers with ``odd``'s fields
    over its own (say, a roster key that is no key)."""
    odd: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer = {key: sent[key] for key in ("kiosk_id", "public_key", "box_public_key")}
            body = json.dumps({**answer, "site": "North gate", **odd}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", odd
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("odd", "reason"),
    [
        ({"roster_public_key": "AAAA"}, "roster_public_key: String should match pattern"),
        ({"roster_public_key": "AQ" + "A" * 41 + "="}, "roster_public_key: is a point of small"),
        ({"site": "North gate\n[update]"}, "site: must be one line"),
        ({"site": "x" * 300}, "site: must be one line of at most 200 characters"),
    ],
)
def test_a_registration_answer_the_settings_cannot_take_is_not_recorded(
    tmp_path: Path, odd_cloud: tuple[str, dict[str, Any]], odd: dict[str, Any], reason: str
) -> None:
    """The cloud registers the keys but answers a roster key that is no key (or one anyone
    can sign for), or a site of many lines: one line, exit 7, nothing recorded past the
    keys, and the next run registers again once the cloud answers sense."""
    url, answer = odd_cloud
    answer.update(odd)
    root = tmp_path / "root"
    source = write_provisioning(
        tmp_path / "boot", kiosk_id="kiosk-5", cloud_url=url, token="kpt_0123456789abcdefXYZ"
    )

    refused = provision(source, root)

    assert refused.returncode == 7, refused.stderr
    [line] = error_lines(refused.stderr)
    assert f"{url}/v1/provision: the cloud's answer cannot be used ({reason}" in line, line
    assert journal(root)["done"] == ["keys", "first-boot"]
    assert source.exists() and not (root / "etc/kiosk/kiosk.toml").exists()

    answer.clear()
    fixed = provision(source, root)
    assert fixed.returncode == 0, fixed.stderr
    assert "kiosk-5 provisioned (resumed)" in fixed.stdout and not source.exists()
    assert tomllib.loads((root / "etc/kiosk/kiosk.toml").read_text())["kiosk"]["site"] == (
        "North gate"
    )
