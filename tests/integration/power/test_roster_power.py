"""Roster pulls cut by the power: a snapshot or delta the kiosk applied (and recorded as
``roster.applied``) is still there after the cut, a pull cut half-way leaves the old
roster or the new one whole, never a mix, and the next pull finishes; a rider deleted in
the cloud stays gone from the kiosk after a cut, and its erasure receipt (``roster.erased``)
reaches the outbox once, even when the power went after the roster changed and before the
outbox took the receipt (two files: the receipt is owed in the roster's transaction).

Real parts: the sync daemon's roster pull in a subprocess with the kiosk's roster, keys
and outbox on LazyFS; the cloud API under uvicorn on its own disk.
"""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync import keyfiles
from cloud_sync.outbox import Outbox
from cloud_sync.sealing import raw_public
from cloud_sync.signing import public_key_text
from edge.vault.files import read_pull_state
from edge.vault.keys import device_keys
from edge.vault.live import open_roster
from tests.integration.power.kit import (
    Part,
    earlier_boot,
    event_bodies,
    inspect,
    outbox_rows,
    wait_until,
)
from tests.integration.power.lazyfs import PowerFolder
from tests.integration.sync.cloudkit import Cloud
from tests.integration.sync.test_roster_sync import add_rider, delete_rider

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]

KIOSK = "kiosk-r"


def set_up_kiosk(power: PowerFolder, folder: Path, cloud: Cloud) -> str:
    """Keys, an empty outbox and roster, registered with the cloud; the pinned roster key."""
    folder.mkdir()
    key = Ed25519PrivateKey.generate()
    keyfiles.write_private_key(folder / "kiosk.pem", key)
    keys = device_keys(folder / "keys", create=True)
    pinned: str = cloud.admin("GET", "/v1/admin/roster").json()["roster_public_key"]
    box = base64.b64encode(raw_public(keys.box.public_key())).decode()
    answer = cloud.admin("POST", "/v1/admin/kiosks",
                         json={"kiosk_id": KIOSK, "public_key": public_key_text(key),
                               "box_public_key": box})  # fmt: skip
    assert answer.status_code == 200, answer.text
    Outbox(folder / "outbox.sqlite", KIOSK).close()
    open_roster(folder / "roster.sqlite", folder / "keys", KIOSK, pinned).close()
    earlier_boot(power, folder)
    return pinned


def held(folder: Path, pinned: str) -> tuple[int, list[str]]:
    """The version the roster file holds and its riders, read after a reboot."""
    store = open_roster(folder / "roster.sqlite", folder / "keys", KIOSK, pinned, read_only=True)
    try:
        riders = sorted(store.load().riders)
    finally:
        store.close()
    state = read_pull_state(folder / "roster.sqlite")
    return (state.version if state is not None else 0), riders


def pull(
    power: PowerFolder, folder: Path, cloud: Cloud, pinned: str, cut_after: float | None
) -> None:
    """Pull once; the power goes when it is done, or ``cut_after`` seconds into it."""
    part = Part("roster", str(folder), KIOSK, cloud.url, pinned, "1")
    try:
        if cut_after is None:
            part.wait_for("done")
        else:
            time.sleep(cut_after)
    finally:
        part.kill()
    power.cut()
    power.mount()


def test_roster_pulls_cut_by_the_power_leave_a_whole_roster(
    power: PowerFolder, cloud: Cloud
) -> None:
    folder = power.path / "kiosk"
    pinned = set_up_kiosk(power, folder, cloud)
    add_rider(cloud, "ann", 1)
    first = add_rider(cloud, "bob", 2)
    pull(power, folder, cloud, pinned, None)
    assert held(folder, pinned) == (first, ["ann", "bob"])  # applied, then the cut: kept
    applied = [row for row in outbox_rows(folder / "outbox.sqlite") if row[2] == "roster.applied"]
    assert len(applied) == 1

    add_rider(cloud, "cyd", 3)
    second = delete_rider(cloud, "bob")
    rng = random.Random(5)
    for _ in range(3):  # cut somewhere in the delta's pull (or before, or after it)
        pull(power, folder, cloud, pinned, rng.uniform(0.1, 1.2))
        assert held(folder, pinned) in ((first, ["ann", "bob"]), (second, ["ann", "cyd"]))
    pull(power, folder, cloud, pinned, None)
    assert held(folder, pinned) == (second, ["ann", "cyd"])


def test_an_erasure_cut_between_the_roster_and_the_outbox_is_still_receipted_once(
    power: PowerFolder, cloud: Cloud, tmp_path: Path
) -> None:
    """The power goes after the delta that deletes a rider was applied to the roster and
    before the outbox took its events (another writer held the outbox a moment): after
    the reboot, the next pull records ``roster.applied`` and the rider's receipt, once."""
    folder = power.path / "kiosk"
    pinned = set_up_kiosk(power, folder, cloud)
    add_rider(cloud, "ann", 1)
    first = add_rider(cloud, "bob", 2)
    pull(power, folder, cloud, pinned, None)
    deleted = delete_rider(cloud, "bob")

    go = tmp_path / "go"
    part = Part("roster", str(folder), KIOSK, cloud.url, pinned, "1", str(go))
    locker: Part | None = None
    try:
        part.wait_for("ready")
        locker = Part("lock", str(folder / "outbox.sqlite"))
        locker.wait_for("locked")
        go.touch()
        version = "SELECT value FROM meta WHERE key = 'version'"
        wait_until(lambda: inspect(folder / "roster.sqlite", version) == [(str(deleted),)])
        time.sleep(0.2)  # the pull is waiting for the outbox now
    finally:
        part.kill()
        if locker is not None:
            locker.kill()
    power.cut()
    power.mount()
    assert held(folder, pinned) == (deleted, ["ann"])  # the deletion was committed

    for _ in range(2):  # the next pull records what the cut left owed; the one after, nothing
        pull(power, folder, cloud, pinned, None)
    events = event_bodies(folder)
    receipts = [e["payload"] for e in events if e["type"] == "roster.erased"]
    applied = [e["payload"]["to_version"] for e in events if e["type"] == "roster.applied"]
    assert receipts == [{"person_id": "bob", "roster_version": deleted}], json.dumps(events)
    assert applied == [first, deleted]
