"""``kiosk run`` end to end: replayed rider photos through the real face model, the real
driver against the board simulator on a pty, the rental ledger and outbox in SQLite, and
SIGTERM / SIGKILL as systemd would send them.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.roster_wire import RiderRecord, Template
from edge.vault.live import open_roster
from edge.vision.engine import FaceEngine
from hardware.cameras import read_image
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from tests.helpers import BIN


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


def enrol(state: Path, engine: FaceEngine, photo: Path, person_id: str, name: str) -> None:
    image = read_image(photo)
    boxes = engine.detect(image)
    vector = engine.encode(image, max(boxes, key=lambda box: box.area))
    store = open_roster(state / "roster.sqlite", state / "keys", "kiosk-e2e")
    store.enrol(person_id, RiderRecord(name, (Template(engine.model_version, vector),)))
    store.close()


def frames(folder: Path, photo: Path, count: int, blanks: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"{index:03d}{photo.suffix}").symlink_to(photo)
    for index in range(blanks):
        (folder / f"{count + index:03d}-blank.png").write_bytes(BLANK_PNG)
    return folder


def blank_png() -> bytes:
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".png", np.full((480, 640, 3), 90, dtype=np.uint8))
    assert ok
    return bytes(data)


BLANK_PNG = blank_png()


def config(state: Path, images: Path, board: str) -> Path:
    path = state / "kiosk.toml"
    path.write_text(
        f"""
[kiosk]
id = "kiosk-e2e"
state_dir = "{state}"
[camera]
kind = "replay"
source = "{images}"
fps = 8
[board]
url = "{board}"
timeout_s = 0.3
slots = 4
[ui]
port = 0
[vision.liveness]
method = "off"
[flow]
eject_s = 6
take_s = 8
result_s = 1
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def board() -> Iterator[BoardSimulator]:
    sim = BoardSimulator(
        SimConfig(slots=4, filled=4, charge_rate=50, eject_s=0.3, take_after_s=0.5, seed=7)
    )
    sim.start()
    time.sleep(0.5)  # charged past the rental threshold
    yield sim
    sim.stop()


def start(config_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "kiosk"), "--log-format", "json", "--config", str(config_path), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events(state: Path) -> list[dict[str, object]]:
    path = state / "outbox.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            rows = db.execute("SELECT body FROM events ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            return []
    return [json.loads(body) for (body,) in rows]


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError("kiosk run did not stop on SIGTERM:\n" + err[-3000:]) from None
    assert process.returncode == 0, err[-3000:]
    return err


def types(state: Path) -> list[str]:
    return [str(event["type"]) for event in events(state)]


def test_an_enrolled_rider_rents_a_powerbank(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=60)
    process = start(config(tmp_path, images, board.path))
    try:
        wait_for(lambda: "rental.started" in types(tmp_path) or process.poll() is not None)
    finally:
        err = stop(process) if process.poll() is None else process.communicate()[1]
    started = [event for event in events(tmp_path) if event["type"] == "rental.started"]
    assert len(started) == 1, err[-3000:]
    payload = started[0]["payload"]
    assert isinstance(payload, dict)
    assert payload["person_id"] == "rider-3"
    assert len(board.ejects) == 1
    assert board.ejects[0].slot == payload["slot"]
    assert types(tmp_path)[0] == "kiosk.started"


def test_a_stranger_is_refused_and_nothing_is_ejected(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    images = frames(tmp_path / "frames", dev_faces / "person_06" / "01.jpg", 12, blanks=20)
    process = start(config(tmp_path, images, board.path))
    try:
        wait_for(lambda: "face.unrecognised" in types(tmp_path) or process.poll() is not None)
    finally:
        stop(process) if process.poll() is None else process.communicate()
    assert "rental.started" not in types(tmp_path)
    assert board.ejects == []


def test_a_jammed_slot_gives_a_fault_and_no_started_rental(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    sim = BoardSimulator(
        SimConfig(slots=2, filled=2, charge_rate=50, eject_s=0.3, jammed=[1, 2], seed=3)
    )
    sim.start()
    try:
        time.sleep(0.5)
        enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
        images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=60)
        process = start(config(tmp_path, images, sim.path))
        try:
            wait_for(lambda: "rental.failed" in types(tmp_path) or process.poll() is not None)
        finally:
            stop(process) if process.poll() is None else process.communicate()
    finally:
        sim.stop()
    seen = types(tmp_path)
    assert "rental.started" not in seen
    failed = next(event for event in events(tmp_path) if event["type"] == "rental.failed")
    assert failed["payload"]["reason"] == "jammed"  # type: ignore[index]
    assert "slot.fault" in seen


def test_sigkill_mid_rental_then_restart_settles_from_the_board(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    """Killed after the eject and before the rider takes the powerbank: on restart the
    kiosk finds the intent, waits for the board, and records the rental exactly once."""
    sim = BoardSimulator(
        SimConfig(slots=2, filled=2, charge_rate=50, eject_s=0.3, take_after_s=4.0, seed=5)
    )
    sim.start()
    try:
        time.sleep(0.5)
        enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
        images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=200)
        path = config(tmp_path, images, sim.path)
        first = start(path)
        try:
            wait_for(lambda: len(sim.ejects) == 1 or first.poll() is not None)
        finally:
            first.kill()
            first.communicate()
        assert "rental.started" not in types(tmp_path)
        (tmp_path / "frames-empty").mkdir()
        (tmp_path / "frames-empty" / "blank.png").write_bytes(BLANK_PNG)
        path.write_text(
            path.read_text().replace(str(images), str(tmp_path / "frames-empty")), encoding="utf-8"
        )
        second = start(path)
        try:
            wait_for(lambda: "rental.started" in types(tmp_path) or second.poll() is not None)
        finally:
            stop(second) if second.poll() is None else second.communicate()
    finally:
        sim.stop()
    assert types(tmp_path).count("rental.started") == 1
    assert len(sim.ejects) == 1


def test_a_return_into_an_empty_slot_is_recorded(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=80)
    process = start(config(tmp_path, images, board.path))
    try:
        wait_for(lambda: "rental.started" in types(tmp_path) or process.poll() is not None)
        started = next(event for event in events(tmp_path) if event["type"] == "rental.started")
        payload = started["payload"]
        assert isinstance(payload, dict)
        other = 2 if payload["slot"] == 1 else 1
        board.act("remove", slot=other)  # make room elsewhere, as another rental would
        time.sleep(0.5)
        board.act("return", slot=other, powerbank_id=str(payload["powerbank_id"]), value=40)
        wait_for(lambda: "rental.returned" in types(tmp_path) or process.poll() is not None)
    finally:
        stop(process) if process.poll() is None else process.communicate()
    returned = next(event for event in events(tmp_path) if event["type"] == "rental.returned")
    assert returned["payload"]["powerbank_id"] == payload["powerbank_id"]  # type: ignore[index]
    assert returned["payload"]["slot"] == other  # type: ignore[index]
