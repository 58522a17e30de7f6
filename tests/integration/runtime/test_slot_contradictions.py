"""The real driver against a simulated board whose answers contradict their requests.

Each case turns on one of the simulator's lies (``hardware.sim_lies``): well-formed frames
with good CRCs that name another slot, request id, powerbank, message type, protocol
version or slot count. The driver must refuse every one with ``ContradictionError`` and
never report an eject as presented on the strength of such an answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import flow as f
from edge.cabinet.slots import Inventory, SlotState, eject_slot
from edge.runtime.board_worker import BoardWorker, Refreshed
from hardware.board import BoardEvent, BoardOffline
from hardware.driver import SerialBoard
from hardware.errors import (
    ContradictionError,
    EjectForgottenError,
    ProtocolVersionError,
    SlotJammedError,
)
from hardware.messages import Booted, Fault, FaultCode
from hardware.protocol import wire_request_id
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from hardware.sim_lies import Lie

pytestmark = pytest.mark.timeout(60)
# a notification is repeated after 1 s without an acknowledgement: a loaded machine's late
# acknowledgement never brings the power-up Booted back in the middle of a test
FAST: dict[str, Any] = {
    "eject_s": 0.05,
    "take_after_s": 5.0,
    "seed": 7,
    "slots": 8,
    "notify_retry_s": 1.0,
}


@pytest.fixture
def sim(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BoardSimulator]:
    overrides = getattr(request, "param", {})
    with BoardSimulator(SimConfig(**{**FAST, **overrides}), link=tmp_path / "tty") as simulator:
        yield simulator


@pytest.fixture
def board(sim: BoardSimulator) -> Iterator[SerialBoard]:
    """The driver once the board's power-up ``Booted`` has arrived: that notification also
    tells the driver the protocol version, so a test racing it would test the timing."""
    with SerialBoard(sim.path, timeout_s=0.2, retries=3, backoff_s=0.01) as driver:
        until(driver, lambda event: isinstance(event, Booted))
        yield driver


def until(
    board: SerialBoard, wanted: Callable[[BoardEvent], bool], seconds: float = 10
) -> list[BoardEvent]:
    """The events up to the first one ``wanted`` accepts (a loaded machine is slow)."""
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        event = board.next_event(timeout=0.05)
        if event is not None:
            got.append(event)
            if wanted(event):
                return got
    raise AssertionError(f"no such board event within {seconds} s: {got}")


def events_within(board: SerialBoard, seconds: float) -> list[BoardEvent]:
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        event = board.next_event(timeout=0.05)
        if event is not None:
            got.append(event)
    return got


# -- ejects --------------------------------------------------------------------------------

SLOW = {"eject_s": 3.0}  # far longer than the driver's poll (2 x timeout): it asks again
EJECT_LIES: list[tuple[Lie, dict[str, Any], str]] = [
    ("outcome_slot", {}, "Ejected for the eject of slot 3 .* names slot 4"),
    ("outcome_slot", {"jammed": [3]}, "Jammed for the eject of slot 3 .* names slot 4"),
    ("outcome_powerbank", {}, "Ejected for the eject of slot 3 names powerbank"),
    ("eject_reply_slot", {}, "answered for slot 4"),
    ("eject_reply_request", {}, "answered for slot 3 .request"),
    ("eject_reply_type", {}, "Eject answered by Ack"),
    ("fresh_presented", {}, "a new request cannot be presented already"),
    ("repeat_as_new", SLOW, "took request .* for a new one"),
    ("repeat_powerbank", SLOW, "asked again, the board names powerbank"),
]


@pytest.mark.parametrize(
    ("lie", "sim", "message"),
    [(lie, config, message) for lie, config, message in EJECT_LIES],
    indirect=["sim"],
    ids=[f"{lie}-{i}" for i, (lie, _, _) in enumerate(EJECT_LIES)],
)
def test_an_eject_answer_that_contradicts_the_eject_is_never_a_confirmation(
    sim: BoardSimulator, board: SerialBoard, tmp_path: Path, lie: Lie, message: str
) -> None:
    inventory = Inventory(tmp_path / "slots.db", 8)
    inventory.refresh(board)
    sim.faults.lie = lie
    with pytest.raises(ContradictionError, match=message):
        eject_slot(board, inventory, 3, "rental-lied-to")
    # the outcome is unknown: the slot waits for the board's status, no other slot moves
    assert inventory.slot(3).state == SlotState.EJECTING
    assert inventory.slot(4).state != SlotState.AWAITING_REMOVAL
    assert [(record.slot, record.request_id) for record in sim.ejects][:1] == [
        (3, wire_request_id("rental-lied-to"))
    ], "the board ejected something else than asked"
    assert len(sim.ejects) == 1
    # asked again with the same request id (as the kiosk does for an unconfirmed eject),
    # the driver still refuses: no later answer of this board confirms that eject
    sim.faults.lie = None
    before = sim.stats["frames_in"]
    with pytest.raises(ContradictionError):
        board.eject(3, "rental-lied-to")
    assert sim.stats["frames_in"] == before
    assert board.stats.contradictions >= 1


# the board answers 0.8 s after each request; the eject ends at 1 s, and its (lying)
# Ejected leaves 2.2 s later, at 3.2 s. The driver (timeout 1 s) asks again 2 s after the
# first answer, at about 2.8 s, and that true answer ("presented") comes at about 3.6 s:
# the lie arrives while the driver waits for it
@pytest.mark.parametrize(
    "sim",
    [{"eject_s": 1.0, "notify_retry_s": 5.0, "faults": {"slow_s": 0.8, "slow_notify_s": 2.2}}],
    indirect=True,
)
@pytest.mark.parametrize(
    ("lie", "message"),
    [
        ("outcome_slot", "names slot 4"),
        ("outcome_jammed", "the board sent Jammed, and asked again answered presented"),
    ],
)
def test_a_lie_that_arrives_while_the_driver_asks_again_is_not_ignored(
    sim: BoardSimulator, lie: Lie, message: str
) -> None:
    with SerialBoard(sim.path, timeout_s=1.0, retries=3, backoff_s=0.01) as board:
        until(board, lambda event: isinstance(event, Booted))
        board.hello()
        sim.faults.lie = lie
        with pytest.raises(ContradictionError, match=message):
            board.eject(3, "rental-asked-twice")
        assert [(record.slot, record.request_id) for record in sim.ejects] == [
            (3, wire_request_id("rental-asked-twice"))
        ]
        assert board.stats.contradictions == 1


# the board's notifications leave 3 s late: the driver asks again (after 0.6 s) before it
# hears of the restart a technician's reset caused while the latch was opening
@pytest.mark.parametrize(
    "sim",
    [{"eject_s": 0.3, "notify_retry_s": 5.0, "faults": {"slow_notify_s": 3.0}}],
    indirect=True,
)
def test_a_board_restarted_during_an_eject_is_never_taken_as_refusing_it(
    sim: BoardSimulator, board: SerialBoard
) -> None:
    board.timeout_s = 0.3
    outcome: list[BaseException | object] = []

    def eject() -> None:
        try:
            outcome.append(board.eject(3, "rental-across-a-reset"))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=eject)
    worker.start()
    deadline = time.monotonic() + 10
    while not sim.ejects and time.monotonic() < deadline:
        time.sleep(0.01)
    board.reset()  # accepted, then the board restarts and forgets the request
    worker.join(timeout=20)
    [error] = outcome
    # refused when asked again ("slot busy": the powerbank stands out): not "nothing
    # ejected", which would record a failed rental for a rider holding the powerbank
    assert isinstance(error, EjectForgottenError), error
    assert "refused it (slot_busy)" in str(error)
    assert len(sim.ejects) == 1
    with pytest.raises(ContradictionError):  # and never asked about again
        board.eject(3, "rental-across-a-reset")


@pytest.mark.parametrize("sim", [{"jammed": [3]}], indirect=True)
def test_a_true_jam_is_still_a_jam(sim: BoardSimulator, board: SerialBoard) -> None:
    with pytest.raises(SlotJammedError):
        board.eject(3, "really-jammed")


def test_a_refusal_naming_another_slot_says_nothing_about_the_slot(
    sim: BoardSimulator, board: SerialBoard, tmp_path: Path
) -> None:
    inventory = Inventory(tmp_path / "slots.db", 8)
    inventory.refresh(board)
    sim.act("remove", 3)  # the board will refuse: SLOT_EMPTY, but it says "of slot 4"
    sim.faults.lie = "nack_slot"
    with pytest.raises(ContradictionError, match="Eject of slot 3 refused as slot_empty of slot 4"):
        eject_slot(board, inventory, 3, "rental-refused")
    assert inventory.slot(3).state == SlotState.EJECTING  # not "empty": the status will say
    assert inventory.slot(4).condition != SlotState.EMPTY
    sim.faults.lie = None
    inventory.refresh(board)
    assert inventory.slot(3).state == SlotState.EMPTY and sim.ejects == []


def test_the_rental_flow_treats_a_contradicted_eject_as_unsettled(
    sim: BoardSimulator, board: SerialBoard, tmp_path: Path
) -> None:
    """The reported defect: the board acknowledges slot 3, then says slot 4 was ejected."""
    inventory = Inventory(tmp_path / "slots.db", 8)
    inventory.refresh(board)
    posted: list[f.Input | Refreshed] = []
    worker = BoardWorker(board, inventory, posted.append, every_s=60, retry_s=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    sim.faults.lie = "outcome_slot"
    worker.eject(f.Eject(slot=3, rental_id="rental-6", person_id="p-1"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        isinstance(item, f.EjectUnsettled | f.Ejected | f.EjectFailed) for item in posted
    ):
        time.sleep(0.02)
    worker.stop()
    thread.join(timeout=5)
    outcomes = [type(item).__name__ for item in posted if not isinstance(item, Refreshed)]
    assert outcomes == ["EjectUnconfirmed", "EjectUnsettled"], outcomes
    assert [record.slot for record in sim.ejects] == [3]  # asked once, never anew


# -- the hello: protocol version and slot count ----------------------------------------------


@pytest.mark.parametrize("sim", [{"faults": {"lie": "hello_version"}}], indirect=True)
def test_a_hello_in_another_protocol_version_is_refused(
    sim: BoardSimulator, board: SerialBoard, tmp_path: Path
) -> None:
    with pytest.raises(ProtocolVersionError, match="protocol version 2"):
        board.hello()
    assert not board.online and board.info is None
    inventory = Inventory(tmp_path / "slots.db", 8)
    with pytest.raises(ProtocolVersionError):  # every command says hello first, again refused
        inventory.refresh(board)
    with pytest.raises(ProtocolVersionError):
        board.eject(2, "never-sent")
    assert inventory.choose() is None and sim.ejects == []
    sim.faults.lie = None
    inventory.refresh(board)
    assert board.online and inventory.choose() is not None


def test_a_restart_in_another_protocol_version_takes_the_board_offline(
    sim: BoardSimulator, board: SerialBoard
) -> None:
    board.hello()
    sim.faults.lie = "booted_version"
    board.reset()
    events = until(board, lambda event: isinstance(event, BoardOffline))
    events += events_within(board, 0.3)
    assert not any(isinstance(event, Booted) for event in events), events
    assert board.info is None and board.stats.contradictions >= 1


@pytest.mark.parametrize(
    ("lie", "message"),
    [
        ("status_total", "the status counts 9 slots; the board reported 8 at hello"),
        ("status_slots", r"from slot 1 lists slots \[2, 3"),
    ],
)
def test_a_status_that_contradicts_the_hello_is_refused(
    sim: BoardSimulator, board: SerialBoard, tmp_path: Path, lie: Lie, message: str
) -> None:
    inventory = Inventory(tmp_path / "slots.db", 8)
    inventory.refresh(board)
    sim.faults.lie = lie
    with pytest.raises(ContradictionError, match=message):
        inventory.refresh(board)
    assert inventory.choose() is None  # the kiosk offers nothing until the board agrees
    sim.faults.lie = None
    inventory.refresh(board)
    assert inventory.choose() is not None


def test_a_notification_about_a_slot_past_the_last_is_refused(
    sim: BoardSimulator, board: SerialBoard
) -> None:
    board.hello()
    sim.faults.lie = "note_slot_range"
    sim.act("overheat", 2)  # the board says slot 9
    events, deadline = [], time.monotonic() + 10
    while board.stats.contradictions < 1 and time.monotonic() < deadline:
        events += events_within(board, 0.05)
    events += events_within(board, 0.3)
    assert not any(isinstance(event, Fault) for event in events), events
    assert board.stats.contradictions >= 1
    sim.faults.lie = None
    sim.act("overheat", 5)
    until(board, lambda event: event == Fault(5, FaultCode.OVERHEAT, 70))
