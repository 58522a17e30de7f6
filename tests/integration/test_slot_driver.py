"""The real driver against the board simulator on a real pty."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from cloud_sync.outbox import Outbox
from edge.cabinet.slots import Inventory, SlotState, eject_slot
from hardware.board import BoardEvent, BoardOffline, BoardOnline
from hardware.driver import SerialBoard
from hardware.errors import (
    BoardConnectError,
    BoardRefusedError,
    BoardTimeoutError,
    EjectForgottenError,
    ProtocolError,
    SlotJammedError,
    SlotRangeError,
)
from hardware.messages import (
    Booted,
    Eject,
    EjectOutcome,
    EjectReply,
    Fault,
    FaultCode,
    Hello,
    HelloReply,
    Inserted,
    Nack,
    NackCode,
    Removed,
)
from hardware.protocol import Packet, StreamDecoder, crc16, encode, wire_request_id
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig

pytestmark = pytest.mark.timeout(60)
FAST = {"eject_s": 0.05, "take_after_s": 5.0, "seed": 7, "slots": 8}


@pytest.fixture
def sim(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BoardSimulator]:
    overrides = getattr(request, "param", {})
    config = SimConfig(**{**FAST, **overrides})
    with BoardSimulator(config, link=tmp_path / "ttyBOARD") as simulator:
        yield simulator


@pytest.fixture
def board(sim: BoardSimulator) -> Iterator[SerialBoard]:
    with SerialBoard(sim.path, timeout_s=0.2, retries=3, backoff_s=0.01) as driver:
        yield driver


def wait_for(
    board: SerialBoard, match: Callable[[BoardEvent], bool], within: float = 5.0
) -> BoardEvent:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        event = board.next_event(timeout=0.05)
        if event is not None and match(event):
            return event
    raise AssertionError("the expected board event did not arrive")


def docked(sim: BoardSimulator, slot: int) -> str:
    return sim.cabinet.slots[slot - 1].powerbank_id


def test_normal_eject(sim: BoardSimulator, board: SerialBoard) -> None:
    powerbank = docked(sim, 3)
    result = board.eject(3, "rental-1")
    assert (result.slot, result.powerbank_id, result.outcome) == (
        3,
        powerbank,
        EjectOutcome.PRESENTED,
    )
    [record] = sim.ejects
    assert (record.slot, record.request_id) == (3, wire_request_id("rental-1"))
    report = board.status()[2]
    assert report.slot == 3 and report.condition.name == "PRESENTED"


def settled_hello(board: SerialBoard) -> None:
    """A hello answered without a retry: no late reply to a resent hello is left to use up
    a fault the test sets next."""
    timeout_s, board.timeout_s = board.timeout_s, 5.0
    try:
        board.hello()
    finally:
        board.timeout_s = timeout_s


def test_lost_reply_is_retried_without_a_second_eject(
    sim: BoardSimulator, board: SerialBoard
) -> None:
    settled_hello(board)
    sim.faults.drop_next = 1
    result = board.eject(5, "rental-2")
    assert board.stats.retries >= 1
    assert result.outcome == EjectOutcome.PRESENTED and result.duplicate
    assert [(r.slot, r.request_id) for r in sim.ejects] == [(5, wire_request_id("rental-2"))]
    # the same request id again, later (a restarted kiosk): still one eject
    again = board.eject(5, "rental-2")
    assert again.duplicate and len(sim.ejects) == 1


def test_a_booted_the_board_repeats_is_one_restart_never_a_forgotten_eject(
    sim: BoardSimulator, board: SerialBoard
) -> None:
    settled_hello(board)
    while board.next_event(timeout=0.3) is not None:
        pass
    sim.faults.lose_acks = 4  # the restart's Booted is acknowledged but the board repeats it
    board.reset()
    assert wait_for(board, lambda e: isinstance(e, Booted)) == Booted(1, 8, "sim-1.0")
    sim.faults.drop_next = 1  # the eject's answer is lost: asked again while the repeats come
    result = board.eject(5, "after-reset")
    assert result.outcome == EjectOutcome.PRESENTED and result.duplicate
    assert len(sim.ejects) == 1
    later: list[BoardEvent] = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if (event := board.next_event(timeout=0.05)) is not None:
            later.append(event)
    assert not any(isinstance(event, Booted) for event in later), later
    assert board.stats.duplicate_notifications >= 3


def test_a_restart_that_crosses_the_first_ask_is_not_a_forgotten_eject(
    sim: BoardSimulator, tmp_path: Path
) -> None:
    with SerialBoard(sim.path, timeout_s=1.5, retries=1, backoff_s=0.01) as board:
        settled_hello(board)
        board.reset()
        sim.faults.slow_notify_s = 0.3  # the restart's Booted is still on the line...
        sim.faults.slow_s = 0.7  # ...when the eject goes, and the answer comes after it
        first = board.eject(2, "across-boot")
        sim.faults.slow_s = sim.faults.slow_notify_s = 0.0
        assert not first.duplicate
        # the board that answered had restarted already: it knows the request
        again = board.eject(2, "across-boot")
        assert again.duplicate and len(sim.ejects) == 1
        assert board.stats.contradictions == 0


def test_corrupted_bytes_are_detected_and_retried(sim: BoardSimulator, board: SerialBoard) -> None:
    settled_hello(board)
    sim.faults.corrupt_next = 2
    assert board.hello().slots == 8
    assert board.stats.bad_frames >= 2 and board.stats.retries >= 2


@pytest.mark.parametrize(
    "sim", [{"return_after_s": 0.0, "take_after_s": 0.0, "notify_retry_s": 0.03}], indirect=True
)
def test_noisy_line_never_ejects_twice_or_the_wrong_slot(
    sim: BoardSimulator, board: SerialBoard
) -> None:
    board.retries, board.timeout_s = 8, 0.1
    board.hello()
    sim.faults.corrupt_rate = 0.01
    asked = {}
    for index in range(16):
        slot = index % 8 + 1
        request_id = f"noisy-{index}"
        asked[wire_request_id(request_id)] = slot
        try:
            board.eject(slot, request_id)
        except BoardRefusedError as exc:  # the previous eject's return may still be pending
            assert exc.code in (NackCode.SLOT_EMPTY, NackCode.SLOT_BUSY)
    damaged = board.stats.bad_frames + sim.stats["bad_frames_in"]
    assert damaged > 0, "the line was not noisy: the test proves nothing"
    records = sim.ejects
    assert len({r.request_id for r in records}) == len(records), "an eject happened twice"
    assert all(asked[r.request_id] == r.slot for r in records), "a wrong slot was ejected"
    assert len(records) >= 8


def test_jammed_slot_ends_in_a_fault_and_no_success(
    sim: BoardSimulator, board: SerialBoard, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "outbox.db", "kiosk-test")
    inventory = Inventory(tmp_path / "slots.db", 8, outbox=outbox)
    inventory.refresh(board)
    sim.act("jam", 4)
    with pytest.raises(SlotJammedError):
        eject_slot(board, inventory, 4, "rental-jam")
    assert inventory.slot(4).state == SlotState.FAULT
    types = [(event.type, getattr(event.payload, "code", None)) for event in outbox.events()]
    assert types == [("slot.fault", "latch_jammed")]
    assert [r.outcome for r in sim.ejects] == [EjectOutcome.JAMMED]
    with pytest.raises(BoardRefusedError) as refused:
        board.eject(4, "rental-jam-2")
    assert refused.value.code == NackCode.SLOT_FAULT
    assert inventory.choose() != 4


def test_port_vanishes_and_comes_back(sim: BoardSimulator, board: SerialBoard) -> None:
    board.hello()
    sim.unplug()
    assert isinstance(wait_for(board, lambda e: isinstance(e, BoardOffline)), BoardOffline)
    with pytest.raises((BoardConnectError, BoardTimeoutError)):
        board.status()
    sim.replug()
    wait_for(board, lambda e: isinstance(e, BoardOnline))
    assert len(board.status()) == 8
    assert board.stats.reconnects >= 1
    assert board.eject(2, "after-replug").outcome == EjectOutcome.PRESENTED


@pytest.mark.parametrize("sim", [{"notify_retry_s": 1.5}], indirect=True)
def test_a_notification_repeated_across_a_replugged_cable_is_delivered_once(
    sim: BoardSimulator, board: SerialBoard
) -> None:
    settled_hello(board)
    while board.next_event(timeout=0.3) is not None:
        pass
    sim.faults.lose_acks = 1  # the driver's acknowledgement never reaches the board
    sim.act("remove", 5)
    assert wait_for(board, lambda e: isinstance(e, Removed)).slot == 5  # type: ignore[union-attr]
    sim.unplug()  # the cable goes before the board repeats the notification
    wait_for(board, lambda e: isinstance(e, BoardOffline))
    sim.replug()
    wait_for(board, lambda e: isinstance(e, BoardOnline))
    later: list[BoardEvent] = []
    deadline = time.monotonic() + 2.5  # the repeat comes 1.5 s after the first copy
    while time.monotonic() < deadline:
        if (event := board.next_event(timeout=0.05)) is not None:
            later.append(event)
    assert not any(isinstance(event, Removed) for event in later), later
    assert board.stats.reconnects >= 1 and board.stats.duplicate_notifications >= 1


@pytest.mark.parametrize("sim", [{"eject_s": 0.3}], indirect=True)
def test_two_ejects_at_once_are_serialised(sim: BoardSimulator, board: SerialBoard) -> None:
    board.hello()
    results: dict[int, object] = {}

    def run(slot: int) -> None:
        try:
            results[slot] = board.eject(slot, f"both-{slot}").outcome
        except Exception as exc:
            results[slot] = exc

    threads = [threading.Thread(target=run, args=(slot,)) for slot in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {1: EjectOutcome.PRESENTED, 2: EjectOutcome.PRESENTED}
    first, second = sorted(sim.ejects, key=lambda r: r.started)
    assert second.started - first.started >= 0.3 - 0.01, "the second eject overlapped the first"


@pytest.mark.parametrize("sim", [{"take_after_s": 600.0}], indirect=True)  # slot 3 stays out
def test_reset_restarts_the_board_and_forgets_its_volatile_state(
    sim: BoardSimulator, board: SerialBoard, tmp_path: Path
) -> None:
    inventory = Inventory(tmp_path / "slots.db", 8)
    board.hello()
    board.set_enabled(2, False)
    inventory.set_disabled(2, True, on_board=True)
    assert not board.eject(3, "before-reset").duplicate
    assert board.eject(3, "before-reset").duplicate  # remembered: not ejected again
    while board.next_event(timeout=0.3) is not None:  # the power-up Booted, Ejected
        pass
    board.reset()
    # the restarted board numbers its notifications from 0 again: each Booted is delivered
    assert wait_for(board, lambda e: isinstance(e, Booted)) == Booted(1, 8, "sim-1.0")
    board.reset()
    wait_for(board, lambda e: isinstance(e, Booted))
    sim.act("remove", 5)
    assert wait_for(board, lambda e: isinstance(e, Removed)).slot == 5  # type: ignore[union-attr]
    inventory.refresh(board)
    slot = inventory.slot(2)
    assert not slot.board_disabled, "the board kept its disabled flag through a reset"
    assert slot.state == SlotState.DISABLED  # the technician's flag on the kiosk holds
    # the board has forgotten the request id: the driver never sends it again (the board
    # would take it for a new eject); what became of it is for the slot's status to say
    before = sim.stats["frames_in"]
    with pytest.raises(EjectForgottenError, match="restarted after request"):
        board.eject(3, "before-reset")
    assert sim.stats["frames_in"] == before and len(sim.ejects) == 1
    with pytest.raises(BoardRefusedError) as refused:  # as the board itself says
        board.request(Eject(3, wire_request_id("before-reset")), EjectReply)
    assert refused.value.code == NackCode.SLOT_BUSY  # still presented, not a duplicate
    assert len(sim.ejects) == 1


@pytest.mark.parametrize("sim", [{"take_after_s": 600.0}], indirect=True)
def test_a_status_answer_older_than_a_notification_never_undoes_it(
    sim: BoardSimulator, tmp_path: Path
) -> None:
    inventory = Inventory(tmp_path / "slots.db", 8)
    with SerialBoard(
        sim.path, timeout_s=1.5, retries=1, backoff_s=0.01, on_event=inventory.apply
    ) as board:
        board.hello()
        inventory.refresh(board)
        assert inventory.slot(5).state != SlotState.EMPTY
        sim.faults.slow_s = 0.6  # the answer, read when asked, is on its way meanwhile
        asking = threading.Thread(target=inventory.refresh, args=(board,))
        asking.start()
        time.sleep(0.15)
        sim.act("remove", 5)  # the powerbank goes: Removed reaches the kiosk first
        asking.join(timeout=10)
        assert inventory.slot(5).state == SlotState.EMPTY, "an older answer undid the removal"
        sim.faults.slow_s = 0.0
        inventory.refresh(board)  # asked after the removal: taken whole again
        assert inventory.slot(5).state == SlotState.EMPTY
        assert inventory.slot(4).state != SlotState.EMPTY


@pytest.mark.parametrize("sim", [{"filled": 7}], indirect=True)
def test_return_into_an_empty_slot_is_notified(sim: BoardSimulator, board: SerialBoard) -> None:
    board.hello()
    sim.act("return", 8, value=35, powerbank_id="PBRET0042")
    event = wait_for(board, lambda e: isinstance(e, Inserted))
    assert event == Inserted(slot=8, charge=35, powerbank_id="PBRET0042")
    assert board.status()[7].powerbank_id == "PBRET0042"


@pytest.mark.parametrize("sim", [{"take_after_s": 0.05}], indirect=True)
def test_taken_powerbank_is_notified(sim: BoardSimulator, board: SerialBoard) -> None:
    powerbank = docked(sim, 6)
    board.eject(6, "take-me")
    assert wait_for(board, lambda e: isinstance(e, Removed)) == Removed(6, powerbank)


# -- bad input -----------------------------------------------------------------------------


@pytest.fixture
def raw(sim: BoardSimulator) -> Iterator[Callable[..., list[Packet]]]:
    """Write raw bytes to the board and collect its replies: until ``replies`` came (within
    5 s, a loaded machine is slow), then 0.3 s more for any reply that should not come.
    The board reads in order, so a late answer to bytes meant to get none shows up in the
    next exchange's replies."""
    port = serial.serial_for_url(sim.path, timeout=0.05)
    decoder = StreamDecoder()

    def exchange(data: bytes, replies: int = 0) -> list[Packet]:
        port.write(data)
        got: list[Packet] = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and len(got) < replies:
            got += read()
        extra = time.monotonic() + 0.3
        while time.monotonic() < extra:
            got += read()
        return got

    def read() -> list[Packet]:
        packets = [item for item in decoder.feed(port.read(512)) if isinstance(item, Packet)]
        return [packet for packet in packets if not packet.message.TYPE & 0x80]  # replies only

    yield exchange
    port.close()


def _frame(body: bytes) -> bytes:
    from hardware.protocol import cobs_encode

    return b"\x00" + cobs_encode(body + crc16(body).to_bytes(2, "big")) + b"\x00"


def test_board_ignores_bad_crc_and_stays_alive(
    sim: BoardSimulator, raw: Callable[..., list[Packet]]
) -> None:
    frame = bytearray(encode(9, Eject(1, 42)))
    frame[-2] ^= 0x01  # the CRC's last byte
    assert raw(bytes(frame)) == []
    assert raw(encode(10, Hello()), 1) == [Packet(10, HelloReply(1, 8, "sim-1.0"))]
    assert sim.stats["bad_frames_in"] == 1 and sim.ejects == []  # read before the hello


def test_board_refuses_unknown_command(raw: Callable[..., list[Packet]]) -> None:
    unknown = _frame(bytes([11, 0x3E, 0]))
    assert raw(unknown, 1) == [Packet(11, Nack(NackCode.UNKNOWN_COMMAND, 0x3E))]


def test_board_drops_oversize_length_and_endless_runs(
    sim: BoardSimulator, raw: Callable[..., list[Packet]]
) -> None:
    assert raw(_frame(bytes([12, 0x03, 251]) + b"\x01" * 9)) == []
    assert raw(b"\x7f" * 5000) == []
    assert sim.ejects == []
    assert raw(encode(13, Hello()), 1) == [Packet(13, HelloReply(1, 8, "sim-1.0"))]


def test_slot_out_of_range(sim: BoardSimulator, board: SerialBoard) -> None:
    board.hello()
    before = sim.stats["frames_in"]
    with pytest.raises(SlotRangeError):
        board.eject(99, "too-far")
    assert sim.stats["frames_in"] == before, "an out-of-range eject reached the board"
    with pytest.raises(BoardRefusedError) as refused:
        board.request(Eject(99, 1), EjectReply)
    assert refused.value.code == NackCode.SLOT_OUT_OF_RANGE
    assert sim.ejects == []


@pytest.mark.parametrize("fault", ["garbage", "silent"])
def test_board_that_misbehaves_stops_rentals_until_it_answers(
    sim: BoardSimulator, board: SerialBoard, tmp_path: Path, fault: str
) -> None:
    inventory = Inventory(tmp_path / "slots.db", 8)
    inventory.refresh(board)
    assert inventory.choose() is not None
    sim.act(fault)  # type: ignore[arg-type]
    started = time.monotonic()
    expected = ProtocolError if fault == "garbage" else BoardTimeoutError
    with pytest.raises(expected):
        inventory.refresh(board)
    with pytest.raises(expected):
        board.eject(1, "while-broken")
    assert time.monotonic() - started < 10
    assert inventory.choose() is None and not board.online
    assert sim.ejects == []
    sim.act("normal")
    inventory.refresh(board)
    assert board.online and inventory.choose() is not None


def test_slow_replies_are_waited_for_without_double_ejects(
    sim: BoardSimulator, board: SerialBoard
) -> None:
    board.hello()
    sim.faults.slow_s = 0.25  # longer than the driver's 0.2 s timeout
    assert board.eject(7, "slow-1").outcome == EjectOutcome.PRESENTED
    assert board.stats.retries >= 1 and len(sim.ejects) == 1


def test_scenario_file_overheats_a_battery(tmp_path: Path) -> None:
    from hardware.sim_cli import _parser, config_from_args

    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        'slots = 4\n[faults]\ndrop_rate = 0.0\n[[events]]\nat = 0.2\naction = "overheat"\nslot = 2\nvalue = 68\n'
    )
    flags = ["--scenario", str(scenario), "--jam", "3", "--slow-notify-s", "0.3"]
    config = config_from_args(_parser().parse_args(flags))
    assert (config.slots, config.jammed, config.faults.slow_notify_s) == (4, [3], 0.3)
    outbox = Outbox(tmp_path / "outbox.db", "kiosk-test")
    inventory = Inventory(tmp_path / "slots.db", 4, outbox=outbox)
    with BoardSimulator(config) as simulator, SerialBoard(simulator.path, timeout_s=0.2) as driver:
        event = wait_for(driver, lambda e: isinstance(e, Fault))
        inventory.apply(event)
    assert event == Fault(2, FaultCode.OVERHEAT, 68)
    assert inventory.slot(2).state == SlotState.FAULT
    assert [(e.type, e.payload.code) for e in outbox.events()] == [("slot.fault", "overheat")]  # type: ignore[union-attr]
