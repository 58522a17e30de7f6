"""Battery health end to end: a real ``kiosk run`` against the board simulator on a pty,
one battery running hot and one that never charges; a rider rents; ``kiosk sync now``
carries the kiosk's ``kiosk.status`` to a real cloud API, and ``kiosk-cloud fleet``
shows what an operator needs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from models.encoder import FaceEngine
from tests.helpers import run_cli
from tests.integration.runtime.test_runtime import (
    BLANK_PNG,
    config,
    enrol,
    events,
    start,
    stop,
    wait_for,
)
from tests.integration.sync.cloudkit import Cloud, start_cloud


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture
def cabinet() -> Iterator[BoardSimulator]:
    # seed 5 docks 87 %, 90 % and 93 %: slot 1 (hot) would be the fullest after a second
    # of charging, slot 2 (stalled) stays at 90 %, slot 3 charges to 100 %, slot 4 is empty
    sim = BoardSimulator(
        SimConfig(
            slots=4,
            filled=3,
            seed=5,
            charge_rate=20,
            eject_s=0.3,
            take_after_s=0.5,
            hot=[1],
            stalled=[2],
        )
    )
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    running = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}")
    yield running
    running.stop()


def rider_frames(folder: Path, photo: Path) -> Path:
    """Nobody for a second (the board's first status is judged), then the rider, then
    nobody."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(8):
        (folder / f"{index:03d}-blank.png").write_bytes(BLANK_PNG)
    for index in range(8, 20):
        (folder / f"{index:03d}{photo.suffix}").symlink_to(photo)
    for index in range(20, 120):
        (folder / f"{index:03d}-blank.png").write_bytes(BLANK_PNG)
    return folder


def fleet(cloud: Cloud) -> dict[str, Any]:
    shown = run_cli(
        "fleet", "--json", "--database-url", cloud.settings.database_url, program="kiosk-cloud"
    )
    assert shown.returncode == 0, shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)[0]
    return found


def test_a_hot_or_stalled_powerbank_is_never_rented_and_the_cloud_sees_why(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, cabinet: BoardSimulator, cloud: Cloud
) -> None:
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    images = rider_frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg")
    settings = config(
        tmp_path,
        images,
        cabinet.path,
        board={"charge_stall_s": 2, "hot_battery_c": 50},
        flow={"status_every_s": 0.5},
        sync={"cloud_url": cloud.url, "status_interval_s": 1},
        kiosk={"id": "kiosk-e2e"},
    )
    key = run_cli("--config", str(settings), "sync", "key")
    assert key.returncode == 0, key.stderr
    registered = run_cli(
        "register-kiosk", "kiosk-e2e", "--public-key", key.stdout.strip(),
        "--database-url", cloud.settings.database_url, program="kiosk-cloud",
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr

    process = start(settings)
    try:
        wait_for(
            lambda: (
                any(e["type"] == "rental.started" for e in events(tmp_path))
                or process.poll() is not None
            )
        )
        statuses = [e for e in events(tmp_path) if e["type"] == "kiosk.status"]
        assert len(statuses) == 1  # one each second, but none while the last is unsent
        deadline = time.monotonic() + 30
        shown: dict[str, Any] = {}
        while time.monotonic() < deadline:  # the status waits until the last one is sent
            sent = run_cli("--config", str(settings), "sync", "now", "--json")
            assert sent.returncode == 0, sent.stderr
            shown = fleet(cloud)
            if len(shown["flagged"]) == 2 and shown["free_slots"] == 2:
                break
            time.sleep(0.5)
    finally:
        err = stop(process) if process.poll() is None else process.communicate()[1]

    started = [e for e in events(tmp_path) if e["type"] == "rental.started"]
    assert len(started) == 1, err[-3000:]
    assert [eject.slot for eject in cabinet.ejects] == [3]  # never the hot or the stalled one
    faults = {e["payload"]["code"] for e in events(tmp_path) if e["type"] == "slot.fault"}  # type: ignore[index]
    assert {"battery_hot", "battery_not_charging"} <= faults

    assert shown["online"] and shown["board_online"]
    assert {(f["slot"], f["health"]) for f in shown["flagged"]} == {
        (1, "hot"),
        (2, "not_charging"),
    }
    assert (shown["free_slots"], shown["charged"]) == (2, 0)  # slot 3 rented, slot 4 empty
    hot = next(s for s in shown["slots"] if s["number"] == 1)
    assert hot["temperature"] == 55 and hot["powerbank_id"] == cabinet.cabinet.slots[0].powerbank_id

    cached = run_cli("--config", str(settings), "slots", "--json", "--cached")
    assert cached.returncode == 0, cached.stderr
    health = {row["slot"]: row["health"] for row in json.loads(cached.stdout)["slots"]}
    assert health == {1: "hot", 2: "not_charging", 3: None, 4: None}  # kept in slots.db
