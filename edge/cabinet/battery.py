"""Battery health: which docked powerbanks the cabinet stops renting, and why.

Two judgements, each about the powerbank (by id) the board reports in a slot:

- ``hot``: the board reports it at ``board.hot_battery_c`` or hotter (whether or not the
  board itself calls that an overheat fault);
- ``not_charging``: it stays docked below 100 % without gaining charge for
  ``board.charge_stall_s`` (0: never judged). A full powerbank, or one in a faulted slot,
  is not expected to gain.

A flag lasts while the powerbank stays in this cabinet, even if it cools down: the
inventory never chooses its slot for a rider (``edge.cabinet.slots.choose_slot``), each
``kiosk.status`` names it, and a new flag is recorded once as a ``slot.fault`` event
(``battery_hot``, ``battery_not_charging``). It ends when the powerbank leaves (a
technician took it out to look at it); put back still hot, it is flagged again at the next
status. Flags are kept in the slot database (table ``battery_flags``), so a restarted kiosk
does not rent a powerbank that cooled while it was down; how long a powerbank has gone
without gaining charge is kept in memory only, so a restart starts that count again.

``judge`` is pure; ``BatteryWatch`` keeps the flags and is called by the inventory after
each status of the board (the board's thread) and read by the flow's thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import sqlite_utils
import structlog

from hardware.config import BoardConfig

if TYPE_CHECKING:
    from edge.cabinet.slots import Slot

log = structlog.get_logger("edge.slots")

Reason = Literal["hot", "not_charging"]
FULL = 100
_DOCKED = ("charging", "ready")


@dataclass(frozen=True)
class BatteryLimits:
    """When a powerbank is flagged (the ``board`` settings of the same names)."""

    hot_battery_c: int = BoardConfig.model_fields["hot_battery_c"].default
    charge_stall_s: float = BoardConfig.model_fields["charge_stall_s"].default

    @classmethod
    def of(cls, board: BoardConfig) -> BatteryLimits:
        return cls(board.hot_battery_c, board.charge_stall_s)


@dataclass(frozen=True)
class Flag:
    """A powerbank the cabinet does not rent."""

    powerbank_id: str
    slot: int
    reason: Reason
    detail: str
    flagged_at: str  # RFC 3339, UTC


@dataclass(frozen=True)
class Progress:
    """The most charge a docked powerbank has shown, and since when (monotonic seconds)."""

    charge: int
    since: float


@dataclass(frozen=True)
class Judgement:
    progress: dict[str, Progress]
    new: list[Flag]
    gone: list[str]  # flagged powerbanks no longer in any slot


def judge(
    slots: Iterable[Slot],
    progress: Mapping[str, Progress],
    flagged: Mapping[str, Flag],
    limits: BatteryLimits,
    now: float,
    at: str,
) -> Judgement:
    """The flags the slots' latest status adds and ends; ``now`` for the charge clock,
    ``at`` the time written into a new flag."""
    seen: set[str] = set()
    follow: dict[str, Progress] = {}
    new: list[Flag] = []
    for slot in slots:
        bank = slot.powerbank_id
        if bank is None:
            continue
        seen.add(bank)
        reason, detail = _verdict(slot, progress.get(bank), limits, now)
        if slot.charge is not None:
            follow[bank] = _progress(slot, progress.get(bank), now)
        if reason is not None and bank not in flagged:
            new.append(Flag(bank, slot.number, reason, detail, at))
    gone = [bank for bank in flagged if bank not in seen]
    return Judgement(follow, new, gone)


def _progress(slot: Slot, before: Progress | None, now: float) -> Progress:
    charge = slot.charge or 0
    if before is None or charge > before.charge:
        return Progress(charge, now)
    if charge >= FULL or slot.state.value not in _DOCKED:
        return Progress(charge, now)  # not expected to gain: the count starts again
    return before


def _verdict(
    slot: Slot, before: Progress | None, limits: BatteryLimits, now: float
) -> tuple[Reason | None, str]:
    if slot.temperature is not None and slot.temperature >= limits.hot_battery_c:
        return "hot", f"{slot.temperature} C (limit {limits.hot_battery_c} C)"
    if (
        limits.charge_stall_s > 0
        and before is not None
        and slot.charge is not None
        and slot.charge <= before.charge
        and slot.charge < FULL
        and slot.state.value in _DOCKED
        and now - before.since >= limits.charge_stall_s
    ):
        return "not_charging", f"stuck at {slot.charge} % for {now - before.since:.0f} s"
    return None, ""


class BatteryWatch:
    """The cabinet's battery flags, kept in the slot database beside ``slots``."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        limits: BatteryLimits | None = None,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or BatteryLimits()
        self._db = db
        self._clock = clock
        self._progress: dict[str, Progress] = {}
        if not read_only:
            db.execute(
                "CREATE TABLE IF NOT EXISTS battery_flags (powerbank_id TEXT PRIMARY KEY, "
                "slot INTEGER NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, "
                "flagged_at TEXT NOT NULL)"
            )
        self._flags: dict[str, Flag] = {}
        if "battery_flags" in db.table_names():
            self._flags = {row["powerbank_id"]: Flag(**row) for row in db["battery_flags"].rows}

    def flags(self) -> dict[str, Flag]:
        """Every flagged powerbank by id (a snapshot, safe from any thread)."""
        return dict(self._flags)

    def flag_of(self, powerbank_id: str | None) -> Flag | None:
        return None if powerbank_id is None else self._flags.get(powerbank_id)

    def observe(self, slots: Iterable[Slot]) -> list[Flag]:
        """Judge the slots' latest status; store and return the new flags."""
        at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        verdict = judge(slots, self._progress, self._flags, self.limits, self._clock(), at)
        self._progress = verdict.progress
        if not verdict.new and not verdict.gone:
            return []
        flags = {k: v for k, v in self._flags.items() if k not in verdict.gone}
        flags.update((flag.powerbank_id, flag) for flag in verdict.new)
        self._flags = flags  # whatever the disk says next: the cabinet does not rent them
        self._save(verdict)
        for bank in verdict.gone:
            log.info("battery.flag_ended", powerbank_id=bank)
        for flag in verdict.new:
            log.warning(
                "battery.flagged",
                powerbank_id=flag.powerbank_id,
                slot=flag.slot,
                reason=flag.reason,
                detail=flag.detail,
            )
        return verdict.new

    def _save(self, verdict: Judgement) -> None:
        conn = self._db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "DELETE FROM battery_flags WHERE powerbank_id = ?", [[b] for b in verdict.gone]
            )
            conn.executemany(
                "INSERT OR REPLACE INTO battery_flags (powerbank_id, slot, reason, detail, "
                "flagged_at) VALUES (?, ?, ?, ?, ?)",
                [[f.powerbank_id, f.slot, f.reason, f.detail, f.flagged_at] for f in verdict.new],
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("battery.flags_unsaved", error=str(exc))
