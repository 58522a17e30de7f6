"""The kiosk's private keys at rest: given only as systemd credentials, the real ``kiosk``
command signs batches the real cloud API accepts and opens its roster, with no key file in
its state folder (none is made either); ``kiosk doctor`` reports plain key files as the
weaker mode with the fix, and credentials as good; the units carry the credential lines,
which verify with ``systemd-analyze`` once enabled.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cloud_sync.outbox import Outbox
from cloud_sync.signing import public_key_text
from edge.vault.keys import BOX_FILE, SIGN_FILE, device_keys
from edge.vault.live import open_roster
from tests.conftest import need
from tests.helpers import run_cli
from tests.integration.sync.cloudkit import start_cloud
from tests.vault_helpers import record as vault_record

KIOSK = "kiosk-creds"
ROOT = Path(__file__).resolve().parents[2]
SKIP = [arg for name in ("camera", "board", "models", "cloud", "units") for arg in ("--skip", name)]


def provisioned(tmp_path: Path) -> tuple[Path, Path, str]:
    """A kiosk as provisioning leaves it (plain keys, a roster with two riders), then
    converted: the keys moved into a credentials folder under their credential names and
    the plain files deleted. The state folder, the credentials folder, the public key."""
    state = tmp_path / "state"
    keys = device_keys(state / "keys", create=True)
    store = open_roster(state / "roster.sqlite", state / "keys", KIOSK)
    store.enrol("ann", vault_record("Ann Example", 1))
    store.enrol("bob", vault_record("Bob Example", 2))
    store.close()
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    for plain, name in ((SIGN_FILE, "kiosk-signing-key"), (BOX_FILE, "kiosk-box-key")):
        (state / "keys" / plain).rename(creds / name)
    assert not list((state / "keys").iterdir())
    return state, creds, public_key_text(keys.sign)


def kiosk_env(state: Path, creds: Path | None, **extra: str) -> dict[str, str]:
    env = {"KIOSK_KIOSK__ID": KIOSK, "KIOSK_KIOSK__STATE_DIR": str(state), **extra}
    if creds is not None:
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    return env


def key_files(state: Path) -> list[Path]:
    return sorted(path for path in state.rglob("*.pem"))


def test_the_kiosk_signs_and_opens_its_roster_with_keys_from_credentials_only(
    tmp_path: Path,
) -> None:
    state, creds, public = provisioned(tmp_path)
    outbox = Outbox(state / "outbox.sqlite", KIOSK)
    outbox.append("kiosk.started", version="1.0", mode="rental")
    outbox.close()
    cloud = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}")
    try:
        registered = cloud.admin(
            "POST", "/v1/admin/kiosks", json={"kiosk_id": KIOSK, "public_key": public}
        )
        assert registered.status_code == 200, registered.text
        env = kiosk_env(state, creds, KIOSK_SYNC__CLOUD_URL=cloud.url)
        printed = run_cli("sync", "key", env=env)
        assert printed.returncode == 0 and printed.stdout.strip() == public, printed.stderr
        pushed = run_cli("sync", "now", env=env)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert [event["type"] for event in cloud.events(KIOSK)] == ["kiosk.started"]
    finally:
        cloud.stop()
    verified = run_cli("roster", "verify", env=kiosk_env(state, creds))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "2 rider(s) verified" in verified.stdout
    assert key_files(state) == []  # nothing fell back to, or made, a plain key file

    without = run_cli("roster", "verify", env=kiosk_env(state, None))
    assert without.returncode != 0  # the keys are nowhere else
    assert key_files(state) == []


def doctor_keys(env: dict[str, str]) -> dict[str, str]:
    done = run_cli("doctor", "--json", *SKIP, env=env)
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    keys: dict[str, str] = checks["keys"]
    return keys


def test_doctor_warns_about_plain_key_files_and_passes_credentials(tmp_path: Path) -> None:
    state = tmp_path / "state"
    device_keys(state / "keys", create=True)
    shutil.copy2(state / "keys" / SIGN_FILE, state / SIGN_FILE)
    plain = doctor_keys(kiosk_env(state, None))
    assert plain["outcome"] == "warn" and "plain key files" in plain["detail"]
    assert "systemd-creds encrypt --with-key=tpm2" in plain["fix"]

    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    shutil.copy2(state / "keys" / SIGN_FILE, creds / "kiosk-signing-key")
    shutil.copy2(state / "keys" / BOX_FILE, creds / "kiosk-box-key")
    leftover = doctor_keys(kiosk_env(state, creds))
    assert leftover["outcome"] == "warn" and "plain copies remain" in leftover["detail"]
    assert leftover["fix"].startswith("delete the plain copies: shred -u ")
    for path in key_files(state):
        path.unlink()
    good = doctor_keys(kiosk_env(state, creds))
    assert good["outcome"] == "pass", good
    assert "kiosk-signing-key" in good["detail"] and "kiosk-box-key" in good["detail"]


@pytest.mark.parametrize("unit", ["kiosk-edge.service", "kiosk-sync.service"])
def test_the_units_name_the_key_credentials_and_verify_with_them_enabled(
    unit: str, tmp_path: Path
) -> None:
    text = (ROOT / "systemd" / unit).read_text()
    lines = [
        line.removeprefix("#")
        for line in text.splitlines()
        if line.startswith("#LoadCredentialEncrypted=")
    ]
    assert lines == [
        "LoadCredentialEncrypted=kiosk-signing-key:/etc/credstore.encrypted/kiosk-signing-key",
        "LoadCredentialEncrypted=kiosk-box-key:/etc/credstore.encrypted/kiosk-box-key",
    ]
    analyze = shutil.which("systemd-analyze")
    need(analyze is not None, "systemd-analyze")
    assert analyze is not None
    program = tmp_path / "kiosk"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    enabled = text.replace("#LoadCredentialEncrypted=", "LoadCredentialEncrypted=").replace(
        "/opt/kiosk/current/bin/kiosk", str(program)
    )
    (tmp_path / unit).write_text(enabled)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [line for line in done.stderr.splitlines() if "LoadCredential" in line]
    assert complaints == [], done.stderr
