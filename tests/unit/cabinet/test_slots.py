"""The slot inventory: its state rules, the choice of slot, persistence and fault events."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_sync.outbox import Outbox
from edge.cabinet.slots import (
    EJECT_FAILURES,
    RULES,
    Inventory,
    Slot,
    SlotState,
    choose_slot,
    from_report,
    transition,
)
from hardware.board import BoardOffline, BoardOnline, EjectResult
from hardware.config import BoardConfig
from hardware.errors import (
    BoardConnectError,
    BoardRefusedError,
    BoardTimeoutError,
    ProtocolError,
    SlotJammedError,
    SlotRangeError,
)
from hardware.messages import (
    Door,
    DoorState,
    Ejected,
    EjectOutcome,
    Fault,
    FaultCleared,
    FaultCode,
    Inserted,
    Jammed,
    NackCode,
    Relocked,
    Removed,
    SlotCondition,
    SlotReport,
)

S = SlotState
MIN = 80


def ready(number: int, charge: int = 90, **kw: object) -> Slot:
    return Slot(number, S.READY, f"PB{number}", charge, **kw)  # type: ignore[arg-type]


def test_choice_is_the_fullest_ready_enabled_slot() -> None:
    slots = [
        ready(1, 85),
        ready(2, 95),
        ready(3, 95),
        ready(4, 100, disabled=True),
        Slot(5, S.CHARGING, "PB5", 79),
        Slot(6, S.FAULT, "PB6", 100, fault="overheat"),
        Slot(7, S.EJECTING, "PB7", 100),
        Slot(8, S.EMPTY),
    ]
    assert choose_slot(slots) == 2
    assert choose_slot(slots[3:]) is None


def test_the_least_charge_for_a_rental_is_a_parameter_of_the_choice() -> None:
    slots = [ready(1, 85), Slot(2, S.CHARGING, "PB2", 70), Slot(3, S.CHARGING, "PB3", None)]
    assert choose_slot(slots) == 1  # 80 % by default
    assert choose_slot(slots, min_charge=90) is None
    assert choose_slot(slots, min_charge=60) == 1
    assert choose_slot([slots[1], slots[2]], min_charge=60) == 2  # charging, but enough
    assert BoardConfig().min_charge_pct == 80
    with pytest.raises(ValueError, match="min_charge_pct"):
        BoardConfig(min_charge_pct=0)


@pytest.mark.parametrize(
    ("start", "event", "data", "end"),
    [
        (S.READY, "eject", {}, S.EJECTING),
        (S.CHARGING, "eject", {}, S.EJECTING),
        (S.EMPTY, "eject", {}, S.EMPTY),
        (S.FAULT, "eject", {}, S.FAULT),
        (S.EJECTING, "presented", {}, S.AWAITING_REMOVAL),
        (S.AWAITING_REMOVAL, "removed", {}, S.EMPTY),
        (S.AWAITING_REMOVAL, "relocked", {}, S.READY),
        (S.EJECTING, "eject_refused", {}, S.READY),
        (S.EJECTING, "eject_refused_empty", {}, S.EMPTY),
        (S.READY, "eject_refused_empty", {}, S.READY),
        (S.EMPTY, "inserted", {"charge": 30}, S.CHARGING),
        (S.EMPTY, "inserted", {"charge": 80}, S.READY),
        (S.FAULT, "inserted", {"charge": 90}, S.FAULT),
        (S.READY, "fault", {"fault": "overheat"}, S.FAULT),
        (S.FAULT, "fault_cleared", {"fault": None}, S.READY),
    ],
)
def test_rules(start: SlotState, event: str, data: dict[str, object], end: SlotState) -> None:
    slot = Slot(3, start, "PB3", 90)
    assert transition(slot, event, MIN, **data).condition == end


def test_every_rule_is_exercised_above() -> None:
    assert set(RULES) == {
        "eject",
        "eject_refused",
        "eject_refused_empty",
        "presented",
        "relocked",
        "removed",
        "inserted",
        "fault",
        "fault_cleared",
    }


def test_removal_forgets_the_powerbank() -> None:
    slot = transition(Slot(2, S.AWAITING_REMOVAL, "PB2", 90, request_id="r"), "removed", MIN)
    assert (slot.powerbank_id, slot.charge, slot.request_id) == (None, None, None)


def test_status_report_is_the_truth_but_keeps_the_technicians_flag() -> None:
    previous = Slot(4, S.EMPTY, disabled=True)
    report = SlotReport(4, SlotCondition.DOCKED, charge=55, temperature=30, powerbank_id="PB9")
    slot = from_report(report, MIN, previous)
    assert (slot.condition, slot.state, slot.powerbank_id) == (S.CHARGING, S.DISABLED, "PB9")
    faulty = SlotReport(4, SlotCondition.FAULT, fault=FaultCode.OVERHEAT, powerbank_id="PB9")
    assert from_report(faulty, MIN, previous).fault == "overheat"


def test_a_slot_disabled_on_the_board_is_not_rentable() -> None:
    docked = SlotReport(5, SlotCondition.DOCKED, disabled=True, charge=100, powerbank_id="PB5")
    slot = from_report(docked, MIN, Slot(5))
    assert (slot.condition, slot.state) == (S.READY, S.DISABLED)
    assert choose_slot([slot]) is None
    # the board's flag is the board's: enabled there again, the slot is back on offer...
    again = from_report(replace(docked, disabled=False), MIN, slot)
    assert again.state == S.READY and choose_slot([again]) == 5
    # ...but the technician's own flag on the kiosk still holds
    mine = from_report(replace(docked, disabled=False), MIN, replace(slot, disabled=True))
    assert mine.state == S.DISABLED


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.db", "kiosk-test")


@pytest.fixture
def inventory(tmp_path: Path, outbox: Outbox) -> Inventory:
    inv = Inventory(tmp_path / "slots.db", 4, outbox=outbox)
    inv.sync(
        [
            SlotReport(1, SlotCondition.DOCKED, charge=90, powerbank_id="PB1"),
            SlotReport(2, SlotCondition.DOCKED, charge=95, powerbank_id="PB2"),
            SlotReport(3, SlotCondition.DOCKED, charge=20, powerbank_id="PB3"),
            SlotReport(4, SlotCondition.EMPTY),
        ]
    )
    inv.apply(BoardOnline())
    return inv


def faults(outbox: Outbox) -> list[tuple[int | None, str]]:
    return [(e.payload.slot, e.payload.code) for e in outbox.events() if e.type == "slot.fault"]  # type: ignore[union-attr]


def test_rental_cycle_through_notifications(inventory: Inventory, outbox: Outbox) -> None:
    assert inventory.choose() == 2
    inventory.begin_eject(2, "r-1")
    assert inventory.slot(2).state == S.EJECTING and inventory.choose() == 1
    inventory.apply(Ejected(2, 1, "PB2"))
    assert inventory.slot(2).state == S.AWAITING_REMOVAL
    inventory.apply(Removed(2, "PB2"))
    assert inventory.slot(2).state == S.EMPTY
    inventory.apply(Inserted(4, 85, "PB7"))
    assert (inventory.slot(4).state, inventory.slot(4).powerbank_id) == (S.READY, "PB7")
    assert faults(outbox) == []


def test_not_taken_powerbank_relocks(inventory: Inventory) -> None:
    inventory.begin_eject(1, "r-2")
    inventory.ejected(EjectResult(1, "r-2", "PB1", EjectOutcome.PRESENTED, False))
    inventory.apply(Relocked(1, 5, "PB1"))
    assert inventory.slot(1).state == S.READY


def test_faults_are_recorded_once_each(inventory: Inventory, outbox: Outbox) -> None:
    inventory.apply(Fault(3, FaultCode.OVERHEAT, 71))
    inventory.apply(Fault(3, FaultCode.OVERHEAT, 72))
    assert inventory.slot(3).state == S.FAULT and inventory.slot(3).temperature == 72
    inventory.apply(FaultCleared(3, FaultCode.OVERHEAT))
    assert inventory.slot(3).state == S.CHARGING
    inventory.apply(Jammed(1, 9))
    inventory.apply(Removed(2, "PB2"))  # pulled out without an eject
    inventory.apply(Fault(0, FaultCode.POWER, 0))
    assert faults(outbox) == [
        (3, "overheat"),
        (1, "latch_jammed"),
        (2, "unexpected_removal"),
        (None, "power"),
    ]


def test_failed_ejects(inventory: Inventory, outbox: Outbox) -> None:
    inventory.begin_eject(2, "r-3")
    inventory.eject_failed(2, BoardRefusedError("busy", code=NackCode.BOARD_BUSY))
    assert inventory.slot(2).state == S.READY
    inventory.begin_eject(2, "r-4")
    inventory.eject_failed(2, BoardTimeoutError("no reply"))
    assert inventory.slot(2).state == S.EJECTING  # unknown until the board says more
    inventory.begin_eject(1, "r-5")
    inventory.eject_failed(1, SlotJammedError("jammed"))
    assert inventory.slot(1).state == S.FAULT
    assert faults(outbox) == [(1, "latch_jammed")]


def test_every_refusal_code_is_mapped_deliberately() -> None:
    assert set(EJECT_FAILURES) == set(NackCode)
    for rule in EJECT_FAILURES.values():
        assert rule is None or rule[0] in RULES


@pytest.mark.parametrize(
    ("error", "state", "fault"),
    [
        (BoardRefusedError("empty", code=NackCode.SLOT_EMPTY), S.EMPTY, None),
        (BoardRefusedError("fault", code=NackCode.SLOT_FAULT), S.FAULT, "slot_fault"),
        (BoardRefusedError("disabled", code=NackCode.SLOT_DISABLED), S.DISABLED, None),
        (BoardRefusedError("range", code=NackCode.SLOT_OUT_OF_RANGE), S.FAULT, "not_on_board"),
        (SlotRangeError("slot 2 does not exist"), S.FAULT, "not_on_board"),
        (BoardRefusedError("busy", code=NackCode.SLOT_BUSY), S.EJECTING, None),
        (BoardConnectError("unplugged"), S.EJECTING, None),
        (ProtocolError("only damaged replies"), S.EJECTING, None),
    ],
)
def test_a_refusal_about_the_slot_takes_it_off_offer(
    inventory: Inventory, outbox: Outbox, error: Exception, state: SlotState, fault: str | None
) -> None:
    assert inventory.choose() == 2
    inventory.begin_eject(2, "r-6")
    inventory.eject_failed(2, error)  # type: ignore[arg-type]
    slot = inventory.slot(2)
    assert (slot.state, slot.fault) == (state, fault)
    assert inventory.choose() == 1, "the same bad slot would be chosen again"
    assert faults(outbox) == ([(2, fault)] if fault else [])
    if state == S.EMPTY:
        assert (slot.powerbank_id, slot.charge) == (None, None)


@pytest.mark.parametrize(
    "code",
    [NackCode.BOARD_BUSY, NackCode.INTERNAL, NackCode.UNKNOWN_COMMAND, NackCode.BAD_PAYLOAD, 0],
)
def test_a_refusal_not_about_the_slot_keeps_it_on_offer(inventory: Inventory, code: int) -> None:
    inventory.begin_eject(2, "r-7")
    inventory.eject_failed(2, BoardRefusedError("no", code=code))
    assert inventory.slot(2).state == S.READY and inventory.choose() == 2


def test_a_disabled_refusal_is_the_boards_flag_and_its_status_lifts_it(
    inventory: Inventory,
) -> None:
    inventory.begin_eject(2, "r-8")
    inventory.eject_failed(2, BoardRefusedError("disabled", code=NackCode.SLOT_DISABLED))
    assert inventory.slot(2).state == S.DISABLED and not inventory.slot(2).disabled
    inventory.sync([SlotReport(2, SlotCondition.DOCKED, charge=95, powerbank_id="PB2")])
    assert inventory.slot(2).state == S.READY and inventory.choose() == 2


def test_no_rentals_while_offline_or_open(inventory: Inventory, outbox: Outbox) -> None:
    inventory.apply(BoardOffline("silent"))
    assert inventory.choose() is None
    inventory.apply(BoardOnline())
    inventory.apply(Door(DoorState.OPEN))
    assert inventory.choose() is None
    inventory.apply(Door(DoorState.CLOSED))
    assert inventory.choose() == 2
    assert faults(outbox) == [(None, "board_offline")]


def test_state_survives_a_restart(tmp_path: Path, inventory: Inventory) -> None:
    inventory.set_disabled(2, True)
    inventory.apply(Fault(3, FaultCode.CHARGER, 0))
    inventory.close()
    again = Inventory(tmp_path / "slots.db", 4)
    states = [(s.number, s.state, s.powerbank_id) for s in again.slots()]
    assert states == [
        (1, S.READY, "PB1"),
        (2, S.DISABLED, "PB2"),
        (3, S.FAULT, "PB3"),
        (4, S.EMPTY, None),
    ]
    assert again.choose() is None  # known, but not offered before the board answers
    again.apply(BoardOnline())
    assert again.choose() == 1


def test_the_boards_flag_survives_a_restart_and_an_old_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "slots.db"
    with sqlite3.connect(path) as old:  # slots.db as the first version wrote it
        old.execute(
            """CREATE TABLE slots (number INTEGER PRIMARY KEY, condition TEXT NOT NULL,
            powerbank_id TEXT, charge INTEGER, temperature INTEGER, fault TEXT,
            disabled INTEGER NOT NULL DEFAULT 0, request_id TEXT, updated_at TEXT)"""
        )
        old.execute("INSERT INTO slots VALUES (1, 'ready', 'PB1', 90, 25, NULL, 0, NULL, NULL)")
    old.close()
    inventory = Inventory(path, 2)
    assert inventory.slot(1).state == S.READY
    inventory.sync(
        [SlotReport(1, SlotCondition.DOCKED, disabled=True, charge=90, powerbank_id="PB1")]
    )
    inventory.close()
    again = Inventory(path, 2)
    assert (again.slot(1).state, again.slot(1).board_disabled) == (S.DISABLED, True)
    again.apply(BoardOnline())
    assert again.choose() is None


def test_the_inventorys_least_charge_decides_ready_and_the_choice(tmp_path: Path) -> None:
    inventory = Inventory(tmp_path / "slots.db", 2, min_charge=95)
    inventory.sync(
        [
            SlotReport(1, SlotCondition.DOCKED, charge=90, powerbank_id="PB1"),
            SlotReport(2, SlotCondition.DOCKED, charge=96, powerbank_id="PB2"),
        ]
    )
    inventory.apply(BoardOnline())
    assert [slot.state for slot in inventory.slots()] == [S.CHARGING, S.READY]
    assert inventory.choose() == 2
    assert inventory.choose(min_charge=97) is None
    assert inventory.choose(min_charge=50) == 2  # still the fullest


def test_threads_that_change_slots_at_once_never_break_the_store(
    tmp_path: Path, inventory: Inventory, outbox: Outbox
) -> None:
    """``kiosk run`` changes slots from the board's events, the eject worker and the status
    refresh at once, over one SQLite connection; a jam reaches the worker (its eject fails)
    and the event thread (``Jammed``) together and is recorded once."""
    import threading

    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def guarded(work: Callable[[int], None]) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            try:
                for turn in range(150):
                    work(turn)
            except BaseException as exc:
                errors.append(exc)

        return run

    def events(turn: int) -> None:
        inventory.apply(Removed(4, f"PB{turn}") if turn % 2 else Inserted(4, 90, f"PB{turn}"))

    def worker(turn: int) -> None:
        inventory.begin_eject(1, f"r-{turn}")
        inventory.ejected(EjectResult(1, f"r-{turn}", "PB1", EjectOutcome.RELOCKED, False))

    def refresh(turn: int) -> None:
        inventory.sync(
            [SlotReport(2, SlotCondition.DOCKED, charge=90 + turn % 5, powerbank_id="PB2")]
        )

    threads = [threading.Thread(target=guarded(w)) for w in (events, worker, refresh)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [], errors

    def jam_from(side: str) -> None:
        start.wait()
        if side == "worker":
            inventory.eject_failed(3, SlotJammedError("jammed"))
        else:
            inventory.apply(Jammed(3, 9))

    start = threading.Barrier(2)
    inventory.begin_eject(3, "r-jam")
    jams = [threading.Thread(target=jam_from, args=(side,)) for side in ("worker", "events")]
    for thread in jams:
        thread.start()
    for thread in jams:
        thread.join(timeout=10)
    assert [fault for fault in faults(outbox) if fault[0] == 3] == [(3, "latch_jammed")]
    reopened = Inventory(tmp_path / "slots.db", 4)
    assert [s.state for s in reopened.slots()] == [s.state for s in inventory.slots()]
    reopened.close()
