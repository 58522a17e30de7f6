"""A kiosk that has not heard from the cloud for ``roster.purge_after_h`` deletes its
roster by itself: a real ``kiosk run`` holding a roster pulled from a real cloud API, the
cloud then out of reach. The sealed rows and the data keys leave the disk (database and WAL
searched byte for byte), ``roster.purged`` is recorded, the kiosk says why it cannot rent,
and the next pull brings a full roster back."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.sealing import raw_public
from edge.vault.keys import device_keys
from hardware.sim import BoardSimulator
from models.encoder import FaceEngine
from models.images import read_image
from tests.helpers import run_cli
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import config, events, frames, start, stop, wait_for
from tests.integration.sync.cloudkit import CONSENT, Cloud, start_cloud

board = test_runtime.board
engine = test_runtime.engine


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    running = start_cloud(f"sqlite:///{tmp_path / 'cloud' / 'cloud.sqlite'}")
    yield running
    running.stop()


def on_disk(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_a_kiosk_silent_too_long_purges_its_roster_and_pulls_it_again(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator, cloud: Cloud
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    pinned = cloud.admin("GET", "/v1/admin/roster").json()["roster_public_key"]
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 4, blanks=40)
    path = config(
        state,
        images,
        board.path,
        camera={"loop": True},
        roster={"cloud_roster_key": pinned, "purge_after_h": 4 / 3600},  # 4 s of silence
        sync={"cloud_url": cloud.url, "roster_interval_s": 1},  # pulls inside the 4 s
    )
    key = run_cli("--config", str(path), "sync", "key")
    assert key.returncode == 0, key.stderr
    box = device_keys(state / "keys", create=True).box.public_key()
    registered = cloud.admin(
        "POST",
        "/v1/admin/kiosks",
        json={
            "kiosk_id": "kiosk-e2e",
            "public_key": key.stdout.strip(),
            "box_public_key": base64.b64encode(raw_public(box)).decode(),
        },
    )
    assert registered.status_code == 200, registered.text
    image = read_image(dev_faces / "person_03" / "01.jpg")
    vector = engine.encode(image, max(engine.detect(image), key=lambda b: b.area))
    cloud.accept_consent_text()
    added = cloud.admin(
        "POST",
        "/v1/admin/riders",
        json={
            "person_id": "rider-3",
            "display_name": "Asha Example",
            "templates": [{"model": engine.model_version, "vector": vector.tolist()}],
            "consent": CONSENT,
        },
    )
    assert added.status_code == 201, added.text
    pulled = run_cli("--config", str(path), "roster", "pull")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    roster = state / "roster.sqlite"
    with sqlite3.connect(roster) as db:
        (sealed,) = db.execute("SELECT sealed FROM riders").fetchone()
        (wrapped,) = db.execute("SELECT wrapped FROM data_keys").fetchone()
    assert sealed[20:52] in on_disk(roster)

    cloud.stop()  # the network is gone: no pull succeeds from now on
    process = start(path)
    try:
        wait_for(lambda: any(e["type"] == "roster.purged" for e in events(state)), timeout=30)
        purged = next(e for e in events(state) if e["type"] == "roster.purged")
        assert purged["payload"]["reason"] == "silent"  # type: ignore[index]
        assert purged["payload"]["riders"] == 1 and purged["payload"]["from_version"] == 1  # type: ignore[index]
        assert purged["payload"]["silent_s"] >= 4  # type: ignore[index]
        # while the kiosk still runs: no sealed row, no wrapped data key left on the disk
        disk = on_disk(roster)
        for secret in (sealed, wrapped.encode()):
            for start_at in range(0, len(secret) - 16, 8):
                assert secret[start_at : start_at + 16] not in disk

        def says_why() -> bool:  # runtime.json is rewritten every few seconds
            shown = run_cli("--config", str(path), "status", "--json")
            return "roster_purged" in shown.stdout

        wait_for(says_why, timeout=30)
    finally:
        err = stop(process) if process.poll() is None else process.communicate()[1]
    assert [e["type"] for e in events(state)].count("roster.purged") == 1, err[-2000:]

    # the cloud is back: the next pull is a full snapshot, and the rider with it
    again = start_cloud(cloud.settings.database_url)
    try:
        fresh = config(
            state,
            images,
            board.path,
            roster={"cloud_roster_key": pinned, "purge_after_h": 4 / 3600},
            sync={"cloud_url": again.url, "roster_interval_s": 1},
        )
        repulled = run_cli("--config", str(fresh), "roster", "pull")
        assert repulled.returncode == 0, repulled.stdout + repulled.stderr
        with sqlite3.connect(roster) as db:
            assert db.execute("SELECT person_id FROM riders").fetchall() == [("rider-3",)]
    finally:
        again.stop()
