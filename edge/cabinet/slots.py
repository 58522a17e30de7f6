"""The slot inventory: what each slot of the cabinet holds, and which one to eject.

The state of a slot moves only by the rules in ``RULES`` (one table): commands the kiosk
gives (eject started, eject failed) and what the board tells (notifications, status). What
a failed eject says about its slot is the other table, ``EJECT_FAILURES`` (one row per
refusal code of the board). Two flags sit beside the state and win when a slot is shown or
chosen: the technician's ``disabled`` (kept by the kiosk, even offline) and
``board_disabled`` (what the board last reported). ``transition`` and ``choose_slot`` are
pure; ``Inventory`` keeps the last known state in SQLite (``slots.db`` in the kiosk's state
folder), so a restarted kiosk knows its slots before the board answers, and records every
new fault as a ``slot.fault`` event.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils
import structlog

from cloud_sync.errors import InputError
from cloud_sync.events import EjectAttempt
from cloud_sync.outbox import Outbox
from cloud_sync.private_files import (
    connect_read_only,
    foreign_table,
    not_holding,
    open_private_db,
)
from edge.cabinet.battery import BatteryLimits, BatteryWatch
from edge.errors import EdgeError, SlotStateError
from hardware.board import BoardEvent, BoardOffline, BoardOnline, EjectResult, SlotBoard
from hardware.config import BoardConfig
from hardware.errors import (
    BoardConnectError,
    BoardError,
    BoardRefusedError,
    BoardTimeoutError,
    ProtocolError,
    SlotJammedError,
    SlotRangeError,
)
from hardware.messages import (
    Booted,
    Door,
    DoorState,
    Ejected,
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

log = structlog.get_logger("edge.slots")
Clock = Callable[[], datetime]
DEFAULT_MIN_CHARGE: int = BoardConfig.model_fields["min_charge_pct"].default  # percent


class SlotState(enum.StrEnum):
    EMPTY = "empty"
    CHARGING = "charging"
    READY = "ready"
    EJECTING = "ejecting"
    AWAITING_REMOVAL = "awaiting_removal"
    FAULT = "fault"
    DISABLED = "disabled"


S = SlotState
DOCKED = "docked"  # a rule target: CHARGING or READY, by the charge
ANY = frozenset(S) - {S.DISABLED}
# event -> (states it may come from, state it leads to); an event from any other state
# changes the slot's data but not its state.
RULES: dict[str, tuple[frozenset[SlotState], SlotState | str]] = {
    "eject": (frozenset({S.CHARGING, S.READY}), S.EJECTING),
    "eject_refused": (frozenset({S.EJECTING}), DOCKED),
    "eject_refused_empty": (frozenset({S.EJECTING}), S.EMPTY),
    "presented": (frozenset({S.EJECTING, S.CHARGING, S.READY}), S.AWAITING_REMOVAL),
    "relocked": (frozenset({S.EJECTING, S.AWAITING_REMOVAL}), DOCKED),
    "removed": (frozenset({S.AWAITING_REMOVAL, S.EJECTING, S.CHARGING, S.READY}), S.EMPTY),
    "inserted": (frozenset({S.EMPTY, S.AWAITING_REMOVAL}), DOCKED),
    "fault": (ANY, S.FAULT),
    "fault_cleared": (frozenset({S.FAULT}), DOCKED),
}

# What a refused eject says about its slot, by the board's Nack code: the rule to apply and
# the slot data it sets. None: the board is moving or presenting that slot for another
# request, so it stays EJECTING until the board's notifications or status say more.
# Refusals that are not about the slot (the board busy, or at odds with the kiosk) dock it
# again, so that a later rental may choose it.
EJECT_FAILURES: dict[NackCode, tuple[str, dict[str, Any]] | None] = {
    NackCode.UNKNOWN_COMMAND: ("eject_refused", {}),
    NackCode.BAD_PAYLOAD: ("eject_refused", {}),
    NackCode.SLOT_OUT_OF_RANGE: ("fault", {"fault": "not_on_board"}),
    NackCode.SLOT_DISABLED: ("eject_refused", {"board_disabled": True}),
    NackCode.SLOT_EMPTY: ("eject_refused_empty", {}),
    NackCode.SLOT_BUSY: None,
    NackCode.SLOT_FAULT: ("fault", {"fault": "slot_fault"}),
    NackCode.BOARD_BUSY: ("eject_refused", {}),
    NackCode.INTERNAL: ("eject_refused", {}),
}


def failure_rule(error: BoardError) -> tuple[str, dict[str, Any]] | None:
    """The rule (and its data) that a failed eject applies to its slot; None: it stays
    ejecting, unknown, until the board's notifications or status say more (no answer, or
    only damaged ones: the eject may have happened)."""
    if isinstance(error, SlotJammedError):
        return "fault", {"fault": "latch_jammed"}
    if isinstance(error, SlotRangeError):  # the driver refused it: the board has no such slot
        return EJECT_FAILURES[NackCode.SLOT_OUT_OF_RANGE]
    if isinstance(error, BoardRefusedError):
        try:
            return EJECT_FAILURES[NackCode(error.code)]
        except ValueError:  # a code this kiosk does not know: nothing said about the slot
            return "eject_refused", {}
    return None


@dataclass(frozen=True)
class Slot:
    number: int
    condition: SlotState = SlotState.EMPTY  # never DISABLED: that is the flag below
    powerbank_id: str | None = None
    charge: int | None = None
    temperature: int | None = None
    fault: str | None = None
    disabled: bool = False  # the technician's choice, kept by the kiosk
    request_id: str | None = None
    updated_at: datetime | None = None
    board_disabled: bool = False  # the board's own flag, as it last reported it

    @property
    def state(self) -> SlotState:
        return SlotState.DISABLED if self.disabled or self.board_disabled else self.condition


@dataclass(frozen=True)
class FaultNote:
    """A fault to record as a ``slot.fault`` event (slot None: the whole board)."""

    slot: int | None
    code: str
    detail: str = ""


def _docked(slot: Slot, min_charge: int) -> SlotState:
    if slot.powerbank_id is None and slot.charge is None:
        return SlotState.EMPTY
    ready = slot.charge is not None and slot.charge >= min_charge
    return SlotState.READY if ready else SlotState.CHARGING


def transition(slot: Slot, event: str, min_charge: int, **data: Any) -> Slot:
    """Apply ``event`` (a key of ``RULES``) with its ``data`` fields to ``slot``."""
    updated = replace(slot, **data)
    sources, target = RULES[event]
    if slot.condition not in sources:
        log.debug("slot event ignored", slot=slot.number, state=slot.condition, trigger=event)
        return updated
    if target == DOCKED:
        return replace(updated, condition=_docked(updated, min_charge), fault=None, request_id=None)
    state = SlotState(target)
    if state == SlotState.EMPTY:
        updated = replace(updated, powerbank_id=None, charge=None, request_id=None)
    return replace(updated, condition=state)


def from_report(report: SlotReport, min_charge: int, previous: Slot) -> Slot:
    """A slot as the board's status describes it (the board is the truth, but the
    technician's ``disabled`` flag is kept)."""
    slot = replace(
        previous,
        powerbank_id=report.powerbank_id or None,
        charge=report.charge,
        temperature=report.temperature,
        fault=None,
        board_disabled=report.disabled,
    )
    if report.condition == SlotCondition.FAULT:
        return replace(slot, condition=SlotState.FAULT, fault=report.fault.name.lower())
    if report.condition == SlotCondition.EMPTY:
        return replace(slot, condition=SlotState.EMPTY, request_id=None)
    if report.condition == SlotCondition.EJECTING:
        return replace(slot, condition=SlotState.EJECTING)
    if report.condition == SlotCondition.PRESENTED:
        return replace(slot, condition=SlotState.AWAITING_REMOVAL)
    return replace(slot, condition=_docked(slot, min_charge), request_id=None)


def choose_slot(
    slots: Iterable[Slot], min_charge: int = DEFAULT_MIN_CHARGE, skip: Set[str] = frozenset()
) -> int | None:
    """The slot to eject for a rental: docked, enabled, charged to at least ``min_charge``
    percent and not holding a powerbank in ``skip`` (flagged by ``edge.cabinet.battery``);
    fullest first, then lowest number."""
    ready = [
        slot
        for slot in slots
        if slot.state in (SlotState.READY, SlotState.CHARGING)
        and slot.charge is not None
        and slot.charge >= min_charge
        and slot.powerbank_id not in skip
    ]
    if not ready:
        return None
    return min(ready, key=lambda slot: (-(slot.charge or 0), slot.number)).number


class SlotStateMissingError(InputError, FileNotFoundError):
    """A command that only reads the slot database found none; nothing was created."""


SLOT_STATE_FIX = "move it aside, then `kiosk slots` asks the board and records a new one"


def _refuse_foreign(connection: sqlite3.Connection, path: Path) -> None:
    """``SlotStateError`` (closing it) when the database holds tables but no ``slots``: an
    outbox or a roster in the slot database's place is never written into."""
    other = foreign_table(connection, "slots")
    if other is not None:
        connection.close()
        raise SlotStateError(
            f"{path}: not a slot database (another kind of database, with a {other} "
            f"table); nothing was written: {SLOT_STATE_FIX}"
        )


class Inventory:
    """The slots of one cabinet, kept in SQLite and driven by the board's events."""

    def __init__(
        self,
        path: Path,
        slots: int,
        *,
        outbox: Outbox | None = None,
        min_charge: int = DEFAULT_MIN_CHARGE,
        clock: Clock = lambda: datetime.now(UTC),
        read_only: bool = False,
        battery: BatteryLimits | None = None,
    ) -> None:
        """Open (creating it, 0600) the slot database at ``path``. ``read_only``, for commands
        that only look: it must exist (``SlotStateMissingError``) and nothing is written.
        ``battery``: when a powerbank is flagged and not rented (``edge.cabinet.battery``)."""
        self.path, self.outbox, self.min_charge, self._clock = path, outbox, min_charge, clock
        self.read_only = read_only
        # the board's events, the eject worker and the status refresh change slots from
        # their own threads: one at a time, each read-change-store whole (one connection)
        self._lock = threading.RLock()
        # per slot, how many changes came from anything but a status report: a report asked
        # for before the latest of them is older than it and never overwrites that slot
        self._news: dict[int, int] = {}
        self.board_online = False
        self.door = DoorState.CLOSED
        try:
            if read_only:
                why = not_holding(path, ("slots",))
                if why is not None:
                    raise SlotStateError(f"{path}: not a slot database ({why}); {SLOT_STATE_FIX}")
                connection = connect_read_only(path)
                connection.isolation_level = None
            else:
                connection = open_private_db(path, isolation_level=None, check_same_thread=False)
                _refuse_foreign(connection, path)
                connection.execute("PRAGMA journal_mode=WAL")
                # the technician's disabled slots and the flagged powerbanks are answers
                # given to someone: durable at commit, whatever this SQLite build's default
                connection.execute("PRAGMA synchronous=FULL")
            self._db = sqlite_utils.Database(connection)
            self._slots = self._load(slots)
            self.battery = BatteryWatch(self._db, battery, read_only=read_only)
        except FileNotFoundError:
            raise SlotStateMissingError(
                f"{path}: no slot state recorded yet (`kiosk slots` asks the board and records "
                "it; `kiosk run` keeps it up to date)"
            ) from None
        except (sqlite3.Error, OSError) as exc:
            raise SlotStateError(
                f"{path}: not a slot database, cannot open it ({exc}); {SLOT_STATE_FIX}"
            ) from None

    def _load(self, count: int) -> dict[int, Slot]:
        if self.read_only:
            if "slots" not in self._db.table_names():
                raise sqlite3.DatabaseError("no slots table: not a slot database")
            return self._read(count)
        if "slots" not in self._db.table_names():
            self._db.execute(
                """CREATE TABLE slots (number INTEGER PRIMARY KEY, condition TEXT NOT NULL,
                powerbank_id TEXT, charge INTEGER, temperature INTEGER, fault TEXT,
                disabled INTEGER NOT NULL DEFAULT 0, request_id TEXT, updated_at TEXT)"""
            )
        if "board_disabled" not in self._db["slots"].columns_dict:  # slots.db before it
            self._db.execute(
                "ALTER TABLE slots ADD COLUMN board_disabled INTEGER NOT NULL DEFAULT 0"
            )
        return self._read(count)

    def _read(self, count: int) -> dict[int, Slot]:
        slots = {number: Slot(number) for number in range(1, count + 1)}
        for row in self._db["slots"].rows_where(order_by="number"):
            if row["number"] in slots:
                at = row["updated_at"]
                slots[row["number"]] = Slot(
                    number=row["number"],
                    condition=SlotState(row["condition"]),
                    powerbank_id=row["powerbank_id"],
                    charge=row["charge"],
                    temperature=row["temperature"],
                    fault=row["fault"],
                    disabled=bool(row["disabled"]),
                    request_id=row["request_id"],
                    updated_at=datetime.fromisoformat(at) if at else None,
                    board_disabled=bool(row.get("board_disabled", 0)),
                )
        return slots

    def close(self) -> None:
        self._db.conn.close()

    # -- reading -------------------------------------------------------------------------

    def slots(self) -> list[Slot]:
        with self._lock:
            self._reread_disabled()
            return [self._slots[number] for number in sorted(self._slots)]

    def slot(self, number: int) -> Slot:
        return self._slots[number]

    def choose(self, min_charge: int | None = None) -> int | None:
        """The slot to eject (charged to ``min_charge``, by default the inventory's), or
        None: none is, or the board is offline or open."""
        with self._lock:
            if not self.board_online or self.door != DoorState.CLOSED:
                return None
            self._reread_disabled()
            return choose_slot(
                list(self._slots.values()),
                self.min_charge if min_charge is None else min_charge,
                skip=self.battery.flags().keys(),
            )

    def _reread_disabled(self) -> None:
        """The technician's flags as ``slots.db`` has them now: ``kiosk slots disable`` runs
        in another process while ``kiosk run`` holds this inventory (the caller holds
        ``_lock``)."""
        try:
            rows = self._db.execute("SELECT number, disabled FROM slots").fetchall()
        except sqlite3.Error as exc:  # keep the flags last read
            log.warning("slot flags unreadable", error=str(exc))
            return
        for number, disabled in rows:
            slot = self._slots.get(number)
            if slot is not None and slot.disabled != bool(disabled):
                self._slots[number] = replace(slot, disabled=bool(disabled))

    # -- changing ------------------------------------------------------------------------

    def _save(self, slot: Slot, note: FaultNote | None = None, *, flag: bool = False) -> None:
        """Store ``slot`` (the caller holds ``_lock`` since it read the slot it changed);
        its technician's flag only with ``flag`` (``set_disabled``): another process may
        have changed it since this one read it."""
        previous = self._slots[slot.number]
        if note is not None or (slot.condition == S.FAULT and previous.condition != S.FAULT):
            self._record(note or FaultNote(slot.number, slot.fault or "fault"))
        slot = replace(slot, updated_at=self._clock())
        self._slots[slot.number] = slot
        row = dict(vars(slot))
        if not flag:
            del row["disabled"]
        row["condition"] = slot.condition.value
        row["updated_at"] = slot.updated_at.isoformat() if slot.updated_at else None
        try:
            self._db.table("slots").upsert(row, pk="number")
        except sqlite3.Error as exc:
            raise EdgeError(f"{self.path}: cannot store slot {slot.number} ({exc})") from None

    def _record(self, note: FaultNote) -> None:
        log.warning("slot fault", slot=note.slot, code=note.code, detail=note.detail)
        if self.outbox is not None:
            self.outbox.append("slot.fault", slot=note.slot, code=note.code, detail=note.detail)

    def _move(self, number: int, event: str, **data: Any) -> None:
        with self._lock:
            self._news[number] = self._news.get(number, 0) + 1
            if number in self._slots:
                self._save(transition(self._slots[number], event, self.min_charge, **data))

    def news(self) -> dict[int, int]:
        """Where the slots' other changes stand: give it to ``sync`` with the reports asked
        for after it."""
        with self._lock:
            return dict(self._news)

    def sync(self, reports: Sequence[SlotReport], asked: Mapping[int, int] | None = None) -> None:
        """Take the board's status of every slot as the truth; with ``asked`` (``news()``
        taken before the status was asked for), except for a slot a notification or an
        eject changed since: its report is older than that change (the next one is not)."""
        with self._lock:
            for report in reports:
                if report.slot not in self._slots:
                    continue
                if asked is not None and self._news.get(report.slot, 0) != asked.get(
                    report.slot, 0
                ):
                    log.debug("slot report older than its news", slot=report.slot)
                    continue
                self._save(from_report(report, self.min_charge, self._slots[report.slot]))
            for flag in self.battery.observe(self.slots()):
                self._record(FaultNote(flag.slot, f"battery_{flag.reason}", flag.detail))

    def set_disabled(self, number: int, disabled: bool, *, on_board: bool = False) -> None:
        """The technician's flag; ``on_board``: the board confirmed it, so its flag is too."""
        with self._lock:
            slot = replace(self._slots[number], disabled=disabled)
            if on_board:
                slot = replace(slot, board_disabled=disabled)
            self._save(slot, flag=True)

    def begin_eject(self, number: int, request_id: str) -> None:
        self._move(number, "eject", request_id=request_id)

    def ejected(self, result: EjectResult) -> None:
        event = {"presented": "presented", "taken": "removed", "relocked": "relocked"}
        self._move(result.slot, event[result.outcome.name.lower()])

    def eject_failed(self, number: int, error: BoardError) -> None:
        """Follow an eject of ``number`` that raised ``error`` (see ``failure_rule``)."""
        rule = failure_rule(error)
        if rule is not None:
            event, data = rule
            self._move(number, event, **data)

    def apply(self, event: BoardEvent) -> None:
        """Follow one event from the driver."""
        with self._lock:
            self._apply(event)

    def _apply(self, event: BoardEvent) -> None:
        if isinstance(event, BoardOnline | BoardOffline):
            online = isinstance(event, BoardOnline)
            if self.board_online and not online:
                self._record(FaultNote(None, "board_offline", getattr(event, "reason", "")))
            self.board_online = online
        elif isinstance(event, Booted):
            self.board_online = True
        elif isinstance(event, Inserted):
            self._move(
                event.slot, "inserted", powerbank_id=event.powerbank_id or None, charge=event.charge
            )
        elif isinstance(event, Removed):
            slot = self._slots.get(event.slot)
            if slot is not None and slot.condition in (S.CHARGING, S.READY):
                self._record(FaultNote(event.slot, "unexpected_removal", event.powerbank_id))
            self._move(event.slot, "removed")
        elif isinstance(event, Ejected):
            self._move(event.slot, "presented")
        elif isinstance(event, Relocked):
            self._move(event.slot, "relocked")
        elif isinstance(event, Jammed):
            self._move(event.slot, "fault", fault="latch_jammed")
        elif isinstance(event, Fault):
            self._fault(event)
        elif isinstance(event, FaultCleared):
            self._move(event.slot, "fault_cleared", fault=None)
        elif isinstance(event, Door):
            self.door = event.state
            if event.state == DoorState.TAMPER:
                self._record(FaultNote(None, "tamper", "the cabinet reports tampering"))

    def _fault(self, event: Fault) -> None:
        code = event.code.name.lower()
        detail = f"{event.value} °C" if event.code == FaultCode.OVERHEAT else ""
        self._news[event.slot] = self._news.get(event.slot, 0) + 1
        if event.slot in self._slots:
            temperature = event.value if event.code == FaultCode.OVERHEAT else None
            slot = self._slots[event.slot]
            moved = transition(slot, "fault", self.min_charge, fault=code)
            if temperature is not None:
                moved = replace(moved, temperature=temperature)
            note = FaultNote(event.slot, code, detail) if slot.condition != S.FAULT else None
            self._save(moved, note)
        else:
            self._record(FaultNote(None, code, detail))

    def refresh(self, board: SlotBoard) -> None:
        """Ask the board for every slot; on failure the board counts as offline. A slot
        whose notification came while the answer was on its way keeps what it said."""
        asked = self.news()
        try:
            reports = board.status()
        except BoardError as exc:
            self.apply(BoardOffline(str(exc)))
            raise
        self.apply(BoardOnline())
        self.sync(reports, asked)


def eject_slot(board: SlotBoard, inventory: Inventory, number: int, request_id: str) -> EjectResult:
    """Eject through ``board`` and keep ``inventory`` in step, whatever happens."""
    inventory.begin_eject(number, request_id)
    try:
        result = board.eject(number, request_id)
    except BoardError as exc:
        inventory.eject_failed(number, exc)
        raise
    inventory.ejected(result)
    return result


def one_line(error: BaseException) -> str:
    """An error's message on one line (its type's name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def failed_eject(error: BoardError) -> tuple[EjectAttempt, str]:
    """How a failed operator or remote eject is recorded: the outcome and its detail."""
    if isinstance(error, SlotJammedError):
        return "jammed", ""
    if isinstance(error, BoardRefusedError):
        try:
            return "refused", NackCode(error.code).name.lower()
        except ValueError:
            return "refused", f"code {error.code}"
    if isinstance(error, BoardTimeoutError | BoardConnectError | ProtocolError):
        return "no_answer", one_line(error)[:200]  # no valid answer: it may have ejected
    return "failed", one_line(error)[:200]
