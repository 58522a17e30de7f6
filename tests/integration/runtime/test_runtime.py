"""``kiosk run`` end to end: replayed rider photos through the real face model, the real
driver against the board simulator on a pty, the rental ledger and outbox in SQLite, and
SIGTERM / SIGKILL as systemd would send them. The later tests run the same parts
(``edge.runtime.assemble``) on a thread of the test, to read the rider screen and inject faults.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from cloud_sync.errors import OutboxFullError
from cloud_sync.outbox import Outbox
from cloud_sync.roster_wire import RiderRecord, Template
from edge.cabinet.rentals import SETTLE_RESERVE, Ledger
from edge.cabinet.slots import DEFAULT_MIN_CHARGE, SlotState
from edge.flow import Effect, EjectFailed, Input, Phase, Screen
from edge.runtime.assemble import Parts, assemble
from edge.runtime.loop import Runtime
from edge.settings import load_settings
from edge.vault.live import open_roster
from hardware.errors import BoardError
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from models.encoder import FaceEngine
from models.images import read_image
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


def config(state: Path, images: Path, url: str, /, **sections: Mapping[str, object]) -> Path:
    """A settings file for this test; ``sections`` (``vision__liveness=...``) add or override."""
    values: dict[str, dict[str, object]] = {
        "kiosk": {"id": "kiosk-e2e", "state_dir": str(state)},
        "camera": {"kind": "replay", "source": str(images), "fps": 8},
        "board": {"url": url, "timeout_s": 0.3, "slots": 4},
        "ui": {"port": 0},
        "vision.liveness": {"method": "off"},
        "flow": {"eject_s": 6, "take_s": 8, "result_s": 1},
    }
    for name, fields in sections.items():
        values.setdefault(name.replace("__", "."), {}).update(fields)
    lines = []
    for name, fields in values.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in fields.items())
    path = state / "kiosk.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def board() -> Iterator[BoardSimulator]:
    sim = BoardSimulator(
        SimConfig(slots=4, filled=4, charge_rate=50, eject_s=0.3, take_after_s=0.5, seed=7)
    )
    sim.start()
    wait_for(lambda: charged(sim), 10)
    yield sim
    sim.stop()


def charged(sim: BoardSimulator) -> bool:
    """A docked powerbank charged past the rental threshold (rentable as the kiosk starts)."""
    return any(
        slot.powerbank_id and slot.charge >= DEFAULT_MIN_CHARGE for slot in sim.cabinet.slots
    )


def start(config_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "kiosk"), "--log-format", "json", "--config", str(config_path), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
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
    except AssertionError:
        err = stop(process) if process.poll() is None else process.communicate()[1]
        raise AssertionError(f"no face.unrecognised: {types(tmp_path)}\n{err[-4000:]}") from None
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


# -- the same parts in this process: the rider screen, the flow and the ledger in reach --------


@dataclass
class Running:
    """``kiosk run``'s parts (``edge.runtime.assemble``) running on a thread of this test."""

    parts: Parts
    thread: threading.Thread
    errors: list[BaseException]
    screens: list[dict[str, object]]
    inputs: list[object]

    @property
    def runtime(self) -> Runtime:
        return self.parts.runtime

    @property
    def screen(self) -> dict[str, object]:
        return self.parts.hub.state

    def shows(self, key: str, detail: str | None = None) -> bool:
        state = self.screen
        return state["key"] == key and (detail is None or state["detail"] == detail)

    def alive(self) -> bool:
        return self.thread.is_alive() and not self.errors


@contextmanager
def running(config_path: Path) -> Iterator[Running]:
    """What ``kiosk run`` does (edge/cli/run_cmd.py), on a thread; stopped at the end."""
    parts = assemble(load_settings(config_path))
    with suppress(BoardError):  # as run_cmd does before it starts the runtime
        parts.runtime.inventory.refresh(parts.board)
    errors: list[BaseException] = []
    screens: list[dict[str, object]] = []
    inputs: list[object] = []
    hub, flow = parts.hub, parts.runtime.flow
    publish, handle = hub.publish, flow.handle

    def recording_publish(screen: Screen | None = None, offline: bool | None = None) -> None:
        if screen is not None:
            screens.append(asdict(screen))
        publish(screen, offline)

    def recording_handle(event: Input, rental_id: str | None = None) -> list[Effect]:
        inputs.append(event)
        return handle(event, rental_id)

    hub.publish = recording_publish  # type: ignore[method-assign]
    flow.handle = recording_handle  # type: ignore[method-assign]

    def run() -> None:
        try:
            parts.runtime.run()
        except BaseException as exc:
            errors.append(exc)
            raise

    thread = threading.Thread(target=run, name="kiosk-run", daemon=True)
    thread.start()
    try:
        yield Running(parts, thread, errors, screens, inputs)
    finally:
        parts.runtime.stop()
        thread.join(timeout=30)
        parts.board.close()
        parts.runtime.outbox.close()


MIB = 1024 * 1024


def fill(outbox: Outbox) -> None:
    """Pending money events (nothing sent yet) until not one more fits in the budget."""
    number = 0
    try:
        while True:
            try:
                with outbox.transaction() as tx:
                    for _ in range(100):
                        number += 1
                        tx.append("rental.returned", slot=1, powerbank_id=f"PB{number:06d}")
            except OutboxFullError:
                break
        while True:
            number += 1
            outbox.append("rental.returned", slot=1, powerbank_id=f"PB{number:06d}")
    except OutboxFullError:
        pass


def fill_outbox(path: Path, max_bytes: int = MIB) -> None:
    outbox = Outbox(path, "kiosk-e2e", max_bytes=max_bytes)
    try:
        fill(outbox)
    finally:
        outbox.close()


def test_a_full_outbox_stops_rentals_and_says_why_without_ejecting(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=40)
    fill_outbox(tmp_path / "outbox.sqlite")
    before = len(events(tmp_path))
    path = config(tmp_path, images, board.path, outbox={"max_bytes": MIB})
    with running(path) as kiosk:
        wait_for(lambda: any(record.accepted for record in kiosk.runtime.decisions))
        time.sleep(1.5)  # time enough to have ejected
        assert kiosk.alive(), kiosk.errors
        assert kiosk.shows("out_of_service", "outbox_full")
        assert kiosk.runtime.flow.phase == Phase.OUT_OF_SERVICE
    assert board.ejects == []
    assert not [t for t in types(tmp_path)[before:] if t.startswith("rental.")]
    assert kiosk.errors == []


def test_an_intent_left_in_a_full_outbox_waits_and_settles_once_the_kiosk_syncs(
    tmp_path: Path, board: BoardSimulator
) -> None:
    """An eject under way when an older kiosk stopped, without room for its event: the
    kiosk starts (no crash loop), stays out of service, and settles it after a sync."""
    board.act("remove", slot=2)  # the rider took the powerbank of the interrupted rental
    outbox = Outbox(tmp_path / "outbox.sqlite", "kiosk-e2e", max_bytes=MIB)
    Ledger(outbox)
    with outbox.transaction() as tx:  # written as before reservations existed
        tx.execute(
            "INSERT INTO rentals (rental_id, person_id, slot, powerbank_id, state) "
            "VALUES ('R-old', 'rider-3', 2, 'PB-OLD', 'ejecting')"
        )
    outbox.close()
    fill_outbox(tmp_path / "outbox.sqlite")
    images = tmp_path / "frames"
    images.mkdir()
    (images / "blank.png").write_bytes(BLANK_PNG)
    path = config(tmp_path, images, board.path, outbox={"max_bytes": MIB})
    with running(path) as kiosk:
        wait_for(lambda: kiosk.shows("out_of_service", "outbox_full") or not kiosk.alive(), 20)
        time.sleep(1.5)
        assert kiosk.alive(), kiosk.errors
        assert [i.rental_id for i in kiosk.runtime.ledger.unsettled()] == ["R-old"]
        sync = Outbox(tmp_path / "outbox.sqlite", "kiosk-e2e", max_bytes=MIB)
        sync.mark_sent([event.id for event in sync.events("pending", limit=100_000)])
        sync.close()
        wait_for(lambda: "rental.started" in types(tmp_path), 20)
        wait_for(lambda: kiosk.shows("idle"), 10)
        assert kiosk.alive(), kiosk.errors
    started = [event for event in events(tmp_path) if event["type"] == "rental.started"]
    assert [event["payload"]["rental_id"] for event in started] == ["R-old"]  # type: ignore[index]


def test_the_intent_holds_room_for_its_outcome(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", "kiosk-e2e", max_bytes=MIB)
    ledger = Ledger(outbox)
    ledger.begin("R1", "rider-3", 2, "PB-1")
    fill(outbox)  # returns, boardings: whatever else comes while the eject is under way
    assert not ledger.has_room()
    with pytest.raises(OutboxFullError):
        ledger.begin("R2", "rider-4", 3, "PB-2")
    assert [intent.rental_id for intent in ledger.unsettled()] == ["R1"]
    assert ledger.started("R1", "PB-1")  # the reserved room
    assert outbox.events(limit=100_000)[-1].type == "rental.started"
    assert outbox.stats().bytes_used <= MIB
    outbox.close()


def test_the_reserve_covers_the_largest_settling_event(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", "k" * 63)
    longest = {"rental_id": "r" * 64, "person_id": "p" * 128, "slot": 64}
    outbox.append("rental.started", **longest, powerbank_id="b" * 64, request_id="q" * 64)
    outbox.append("rental.failed", **longest, reason="x" * 128)
    sizes = [size for (size,) in outbox.connection.execute("SELECT size FROM events")]
    outbox.close()
    assert sizes and max(sizes) <= SETTLE_RESERVE


def test_an_eject_the_board_did_not_confirm_is_asked_about_again_never_repeated(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    """The board accepts the eject, then falls silent: the rider is asked to wait, no
    failure is recorded, and once the board answers the same request id settles it."""
    sim = BoardSimulator(  # the latch takes 4 s: the board falls silent well before it opens
        SimConfig(slots=2, filled=2, charge_rate=50, eject_s=4.0, take_after_s=1.0, seed=5)
    )
    sim.start()
    try:
        time.sleep(0.5)
        enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
        images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=60)
        flow = {"eject_s": 3, "board_eject_s": 1, "confirm_s": 20, "take_s": 8, "result_s": 1}
        with running(config(tmp_path, images, sim.path, flow=flow)) as kiosk:
            wait_for(lambda: len(sim.ejects) == 1 or not kiosk.alive())
            sim.act("silent")  # the eject was accepted; nothing more is heard
            wait_for(lambda: kiosk.shows("eject_wait") or not kiosk.alive(), 20)
            time.sleep(1.0)
            assert "rental.failed" not in types(tmp_path)
            sim.act("normal")
            wait_for(lambda: "rental.started" in types(tmp_path) or not kiosk.alive(), 30)
            assert kiosk.alive(), kiosk.errors
    finally:
        sim.stop()
    assert types(tmp_path).count("rental.started") == 1
    assert "rental.failed" not in types(tmp_path)
    assert len(sim.ejects) == 1
    keys = [screen["key"] for screen in kiosk.screens]
    assert keys.index("eject_wait") < keys.index("enjoy")


def test_a_jam_reaches_the_flow_once(tmp_path: Path, dev_faces: Path, engine: FaceEngine) -> None:
    sim = BoardSimulator(
        SimConfig(slots=2, filled=2, charge_rate=50, eject_s=0.3, jammed=[1, 2], seed=3)
    )
    sim.start()
    try:
        time.sleep(0.5)
        enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
        images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=60)
        with running(config(tmp_path, images, sim.path)) as kiosk:
            wait_for(lambda: "rental.failed" in types(tmp_path) or not kiosk.alive())
            time.sleep(1.0)  # the board's Jammed notification has arrived by now
    finally:
        sim.stop()
    failures = [event for event in kiosk.inputs if isinstance(event, EjectFailed)]
    assert [(event.reason) for event in failures] == ["jammed"]
    assert types(tmp_path).count("rental.failed") == 1


def test_a_charging_slot_becomes_ready_while_the_kiosk_runs(tmp_path: Path) -> None:
    sim = BoardSimulator(SimConfig(slots=2, filled=0, charge_rate=5, seed=1))
    sim.start()
    try:
        images = tmp_path / "frames"
        images.mkdir()
        (images / "blank.png").write_bytes(BLANK_PNG)
        path = config(tmp_path, images, sim.path, flow={"status_every_s": 0.5}, board={"slots": 2})
        with running(path) as kiosk:
            wait_for(lambda: kiosk.runtime.inventory.board_online, 10)
            sim.act("return", slot=1, value=72)  # Inserted at 72 %: charging, not ready
            wait_for(lambda: kiosk.runtime.inventory.slot(1).state == SlotState.CHARGING, 10)
            wait_for(lambda: kiosk.runtime.inventory.slot(1).state == SlotState.READY, 10)
            assert kiosk.runtime.inventory.choose() == 1
    finally:
        sim.stop()


def test_a_board_that_stops_answering_and_comes_back_is_noticed(tmp_path: Path) -> None:
    """No notification says so: only the periodic status request finds out, both ways."""
    sim = BoardSimulator(SimConfig(slots=2, filled=2, charge_rate=50, seed=2))
    sim.start()
    try:
        images = tmp_path / "frames"
        images.mkdir()
        (images / "blank.png").write_bytes(BLANK_PNG)
        path = config(tmp_path, images, sim.path, board={"slots": 2})
        with running(path) as kiosk:
            wait_for(lambda: kiosk.runtime.inventory.board_online and kiosk.shows("idle"), 20)
            sim.act("silent")
            wait_for(lambda: kiosk.shows("out_of_service", "board_offline"), 20)
            sim.act("normal")
            wait_for(lambda: kiosk.shows("idle"), 10)
            assert kiosk.runtime.inventory.board_online
    finally:
        sim.stop()


def test_a_lost_camera_takes_the_kiosk_out_of_service(
    tmp_path: Path, board: BoardSimulator
) -> None:
    # a live camera that is not there (unplugged): retried, and out of service meanwhile
    # (a replay folder that is missing stops kiosk run at start: test_replay_source.py)
    path = config(
        tmp_path, tmp_path, board.path, camera={"kind": "opencv", "source": "/dev/video99"}
    )
    with running(path) as kiosk:
        wait_for(lambda: kiosk.shows("out_of_service", "camera_lost"), 20)
        assert kiosk.runtime.camera_health is not None
        assert kiosk.runtime.camera_health.down in ("lost", "retrying")


def test_an_old_roster_takes_the_kiosk_out_of_service_until_a_pull(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    with sqlite3.connect(tmp_path / "roster.sqlite") as db:  # enrolled 4 days ago
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'changed_at'", (str(time.time() - 96 * 3600),)
        )
    images = tmp_path / "frames"
    images.mkdir()
    (images / "blank.png").write_bytes(BLANK_PNG)
    path = config(tmp_path, images, board.path, roster={"max_age_h": 72})
    with running(path) as kiosk:
        wait_for(lambda: kiosk.shows("out_of_service", "roster_too_old"), 20)
        kiosk.runtime.roster.record_pull(None)  # a pull that found nothing new
        wait_for(lambda: kiosk.shows("idle"), 10)


def test_boarding_ignores_open_rentals(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    outbox = Outbox(tmp_path / "outbox.sqlite", "kiosk-e2e")
    Ledger(outbox)
    with outbox.transaction() as tx:  # a powerbank the rider has not returned yet
        tx.execute(
            "INSERT INTO rentals (rental_id, person_id, slot, powerbank_id, state) "
            "VALUES ('R-open', 'rider-3', 1, 'PB-1', 'open')"
        )
    outbox.close()
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=20)
    kiosk_section = {"mode": "boarding", "route": "42", "vehicle": "bus-7"}
    with running(config(tmp_path, images, board.path, kiosk=kiosk_section)) as kiosk:
        wait_for(lambda: "boarding.recorded" in types(tmp_path) or not kiosk.alive(), 30)
    boarded = [event for event in events(tmp_path) if event["type"] == "boarding.recorded"]
    assert [event["payload"]["person_id"] for event in boarded] == ["rider-3"]  # type: ignore[index]
    assert board.ejects == []


def test_under_systemd_it_says_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, board: BoardSimulator
) -> None:
    """sd_notify over a real datagram socket, as systemd's NOTIFY_SOCKET provides it."""
    import socket
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="notify-", dir="/tmp"))  # a short socket path
    address = folder / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(address))
    listener.settimeout(0.5)
    images = frames(tmp_path / "frames", tmp_path / "blank.png", 0, blanks=5)
    received: list[str] = []

    def listen(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with suppress(TimeoutError):
                received.append(listener.recv(4096).decode())

    def heard(state: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while not any(state in message.split("\n") for message in received):
            if time.monotonic() > deadline:
                return False
            listen(0.5)
        return True

    def pings() -> int:
        return sum("WATCHDOG=1" in message.split("\n") for message in received)

    process = start(
        config(tmp_path, images, board.path),
        env={"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "900000"},
    )
    try:
        assert heard("READY=1"), received
        assert heard("WATCHDOG=1"), received
        before = pings()
        listen(2.0)  # WatchdogSec=0.9 s: a ping at least every 0.3 s, so several by now
        assert pings() >= before + 2, received
        process.send_signal(signal.SIGTERM)
        assert heard("STOPPING=1"), received
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        listener.close()
    assert process.returncode == 0, err[-3000:]
