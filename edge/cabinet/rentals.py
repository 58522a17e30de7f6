"""The rental ledger: which rentals are open, kept in the outbox database.

Every change of a rental's state is written in the same transaction as the event that
reports it (``rental.started``, ``rental.failed``, ``rental.returned``), so the ledger and
the outbox never disagree. Before an eject is sent to the board, the rental is written as
``ejecting`` together with its intent in the eject journal (``edge.cabinet.ejects``, the one
journal of every eject, which also reserves room for the event that will settle it): a
kiosk killed between the eject and its outcome finds the intent at start and settles it
from the board's slot status (``edge.cabinet.settle``), so there is never an eject without
its event nor an event without its eject. When even that room cannot be made, ``begin``
raises ``OutboxFullError`` and the eject is never sent, so a full outbox stops rentals
instead of ejecting a powerbank without a record. ``has_room`` answers the same question
without reserving, for the service check, and ``disk_room`` whether the file system under
the outbox can take the intent at all (``edge.cabinet.disk``).

Eligibility (``refusal``) is a pure function of the rider's entitlements, the kiosk's mode
and the rider's open rentals. The rider's open rentals are counted here, offline, until the
cloud confirms otherwise: a rental returned at another kiosk is closed in the cloud, and
the sync daemon closes it here with ``close_confirmed``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal

from cloud_sync.outbox import Outbox, OutboxTransaction
from cloud_sync.outbox_budget import could_hold
from cloud_sync.roster_wire import Entitlements, FleetView
from edge.cabinet import disk
from edge.cabinet.ejects import SETTLE_RESERVE, EjectJournal
from edge.cabinet.ejects import Intent as EjectIntent

__all__ = ["SETTLE_RESERVE", "Intent", "Ledger", "refusal"]

# Intents of rentals written before the eject journal: moved into it (with their
# reservation), so that one settlement covers them.
_MIGRATE = """
INSERT OR IGNORE INTO ejects (request_id, kind, slot, powerbank_id, reserved)
SELECT rental_id, 'rental', slot, powerbank_id, reserved FROM rentals
WHERE state = 'ejecting' AND rental_id NOT IN (SELECT request_id FROM ejects)
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS rentals (
    rental_id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    powerbank_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('ejecting', 'open', 'failed', 'closed')),
    reason TEXT,
    reserved INTEGER NOT NULL DEFAULT 0
)
"""


def refusal(
    entitlements: Entitlements,
    open_rentals: int,
    today: date,
    mode: Literal["rental", "boarding"] = "rental",
    fleet: FleetView | None = None,
) -> str | None:
    """Why this rider may not rent (or board, in boarding mode) now; None when they may.

    Renting needs ``may_rent``, a membership still valid today, no powerbank lost or
    overdue anywhere in the fleet (``fleet``, as of the last roster pull), and fewer open
    rentals than ``max_open_rentals``: ``open_rentals`` counts this kiosk's own and those
    open at other kiosks. Boarding needs ``boarding_allowed`` and a valid membership; open
    rentals and ``may_rent`` are rental matters and do not stop a boarding.
    """
    expired = entitlements.valid_until is not None and entitlements.valid_until < today
    if mode == "boarding":
        if not entitlements.boarding_allowed:
            return "not_allowed"
        return "expired" if expired else None
    if not entitlements.may_rent:
        return "blocked"
    if expired:
        return "expired"
    if fleet is not None and fleet.lost:
        return "lost"
    if fleet is not None and fleet.overdue:
        return "overdue"
    if open_rentals >= entitlements.max_open_rentals:
        return "open_rental"
    return None


@dataclass(frozen=True)
class Intent:
    rental_id: str
    person_id: str
    slot: int
    powerbank_id: str | None


class Ledger:
    """Rentals in the outbox's database; every write goes through an outbox transaction."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        with outbox.transaction() as tx:
            tx.execute(SCHEMA)
            columns = {row[1] for row in tx.execute("PRAGMA table_info(rentals)").fetchall()}
            if "reserved" not in columns:  # a ledger written before reservations
                tx.execute("ALTER TABLE rentals ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0")
            tx.execute("CREATE INDEX IF NOT EXISTS rentals_person ON rentals (person_id, state)")
        self.journal = EjectJournal(outbox)
        with outbox.transaction() as tx:
            if tx.execute(_MIGRATE).rowcount:
                tx.execute("UPDATE rentals SET reserved = 0 WHERE state = 'ejecting'")

    def has_room(self) -> bool:
        """Whether the outbox could hold the event of one more rental: one read, no lock
        and no change (``begin`` decides for certain)."""
        return could_hold(self._outbox.connection, SETTLE_RESERVE, "money", self._outbox.max_bytes)

    def disk_room(self) -> bool:
        """Whether the disk under the outbox can take an eject intent now (free space above
        ``edge.cabinet.disk.DISK_RESERVE``, and a probe after a write refused for lack of
        space); ``begin`` would otherwise fail, or the event that settles it."""
        return disk.has_room(self._outbox.path.parent, self._outbox.disk_full)

    def open_count(self, person_id: str) -> int:
        row = self._outbox.connection.execute(
            "SELECT COUNT(*) FROM rentals WHERE person_id = ? AND state IN ('ejecting', 'open')",
            (person_id,),
        ).fetchone()
        return int(row[0])

    def begin(self, rental_id: str, person_id: str, slot: int, powerbank_id: str | None) -> None:
        """Write the rental and its eject intent (and which powerbank the slot holds), before
        the board is asked.

        Reserves the room of the event that will settle it; ``OutboxFullError`` (and nothing
        written) when the outbox cannot make that room.
        """
        with self._outbox.transaction() as tx:
            self.journal.begin(EjectIntent(rental_id, "rental", slot, powerbank_id), tx)
            tx.execute(
                "INSERT INTO rentals (rental_id, person_id, slot, powerbank_id, state) "
                "VALUES (?, ?, ?, ?, 'ejecting')",
                (rental_id, person_id, slot, powerbank_id),
            )

    def _settle(
        self, tx: OutboxTransaction, rental_id: str, outcome: str
    ) -> tuple[str, int] | None:
        """Inside ``tx``: settle the eject intent; the rental's person and slot, or None when
        it was settled already."""
        row = tx.execute(
            "SELECT person_id, slot FROM rentals WHERE rental_id = ? AND state = 'ejecting'",
            (rental_id,),
        ).fetchone()
        if row is None:
            return None
        self.journal.close(tx, rental_id, outcome)
        return str(row[0]), int(row[1])

    def unsettled(self) -> list[Intent]:
        """Rentals whose eject has no outcome yet, oldest first."""
        rows = self._outbox.connection.execute(
            "SELECT rental_id, person_id, slot, powerbank_id FROM rentals "
            "WHERE state = 'ejecting' ORDER BY rowid"
        ).fetchall()
        return [
            Intent(str(r[0]), str(r[1]), int(r[2]), None if r[3] is None else str(r[3]))
            for r in rows
        ]

    def started(self, rental_id: str, powerbank_id: str) -> bool:
        """The rider took the powerbank: open the rental and record ``rental.started``."""
        with self._outbox.transaction() as tx:
            row = self._settle(tx, rental_id, "started")
            if row is None:
                return False
            tx.execute(
                "UPDATE rentals SET state = 'open', powerbank_id = ? WHERE rental_id = ?",
                (powerbank_id, rental_id),
            )
            tx.append(
                "rental.started",
                rental_id=rental_id,
                person_id=row[0],
                slot=row[1],
                powerbank_id=powerbank_id,
                request_id=rental_id,
            )
        return True

    def failed(self, rental_id: str, reason: str) -> bool:
        """No powerbank went out: close the intent and record ``rental.failed``."""
        with self._outbox.transaction() as tx:
            row = self._settle(tx, rental_id, "failed")
            if row is None:
                return False
            tx.execute(
                "UPDATE rentals SET state = 'failed', reason = ? WHERE rental_id = ?",
                (reason, rental_id),
            )
            tx.append(
                "rental.failed", rental_id=rental_id, person_id=row[0], slot=row[1], reason=reason
            )
        return True

    def returned(self, slot: int, powerbank_id: str, charge: int | None) -> str | None:
        """A powerbank came back: close the open rental that has it (if this kiosk knows it)."""
        with self._outbox.transaction() as tx:
            row = tx.execute(
                "SELECT rental_id FROM rentals WHERE powerbank_id = ? AND state = 'open' ORDER BY rowid DESC",
                (powerbank_id,),
            ).fetchone()
            if row is not None:
                tx.execute("UPDATE rentals SET state = 'closed' WHERE rental_id = ?", (row[0],))
            tx.append("rental.returned", slot=slot, powerbank_id=powerbank_id, charge=charge)
        return None if row is None else str(row[0])

    def close_confirmed(self, rental_ids: Iterable[str]) -> int:
        """The cloud closed these rentals (returned elsewhere): close those still ``open``
        here; unknown or already settled ids are ignored, and no event is recorded (the
        cloud already knows). The number closed."""
        ids = sorted(set(rental_ids))
        if not ids:
            return 0
        closed = 0
        with self._outbox.transaction() as tx:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                closed += tx.execute(
                    f"UPDATE rentals SET state = 'closed' WHERE state = 'open' "  # noqa: S608
                    f"AND rental_id IN ({marks})",
                    chunk,
                ).rowcount
        return closed
