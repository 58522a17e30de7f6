"""``kiosk provision`` cut by the power after each of its steps: after the reboot it runs again
to the end, and the kiosk it leaves is whole (settings that load, the key it registered,
a batch the cloud takes, the token gone from the boot partition), through one more cut.

Real parts: ``kiosk provision`` as a subprocess with its root (the state folder and the
boot partition) on LazyFS; the cloud API under uvicorn on its own disk.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync import keyfiles
from cloud_sync.outbox import Outbox
from cloud_sync.signing import public_key_text
from tests.helpers import BIN, run_cli
from tests.integration.power.kit import fsync_tree, wait_until
from tests.integration.power.lazyfs import PowerFolder
from tests.integration.provision.test_provision import issue_token, write_provisioning
from tests.integration.sync.cloudkit import Cloud

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]


def journal_done(root: Path) -> list[str]:
    try:
        data = json.loads((root / "var/lib/kiosk/provision.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not there yet, or being replaced
        return []
    return list(data.get("done", []))


@pytest.mark.parametrize("after", ["keys", "first-boot", "register", "config"])
def test_provisioning_cut_after_each_step_finishes_whole_on_the_next_run(
    power: PowerFolder, cloud: Cloud, after: str
) -> None:
    """Cut right after each step the journal records, then run ``kiosk provision`` again
    after the reboot."""
    kiosk_id = "kiosk-0007"
    token = issue_token(cloud, kiosk_id=kiosk_id)
    root = power.path / "root"
    source = write_provisioning(power.path / "boot", kiosk_id=kiosk_id, cloud_url=cloud.url,
                                token=token)  # fmt: skip
    fsync_tree(power.path)  # the card as scripts/flash left it
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    first = subprocess.Popen(
        [str(BIN / "kiosk"), "provision", "--from", str(source), "--root", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        wait_until(lambda: after in journal_done(root) or first.poll() is not None)
    finally:
        first.kill()
        first.communicate()
    power.cut()
    power.mount()

    again = run_cli("provision", "--from", str(source), "--root", str(root))
    assert again.returncode == 0, (after, again.stderr[-2000:])
    power.cut()  # right after it said "provisioned"
    power.mount()

    config = root / "etc/kiosk/kiosk.toml"
    assert run_cli("config", "check", str(config)).returncode == 0, config.read_text()
    state = root / "var/lib/kiosk"
    key = keyfiles.read_private_key(state / "kiosk-ed25519.pem", Ed25519PrivateKey)  # type: ignore[type-abstract]
    [registered] = [k for k in cloud.admin("GET", "/v1/admin/kiosks").json()
                    if k["kiosk_id"] == kiosk_id]  # fmt: skip
    assert registered["public_key"] == public_key_text(key), after
    assert not source.exists(), "the token must be gone from the boot partition"
    outbox = Outbox(state / "outbox.sqlite", kiosk_id)  # open, as kiosk run holds it
    try:
        outbox.append("kiosk.started", version="1", mode="rental")
        sent = run_cli("--config", str(config), "sync", "now")
    finally:
        outbox.close()
    assert sent.returncode == 0, sent.stderr
    assert [e["type"] for e in cloud.events(kiosk_id)] == ["kiosk.started"]
