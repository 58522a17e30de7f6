"""The rental ledger: which rentals are open, kept in the outbox database.

Every change of a rental's state is written in the same transaction as the event that
reports it (``rental.started``, ``rental.failed``, ``rental.returned``), so the ledger and
the outbox never disagree. Before an eject is sent to the board, the rental is written as
``ejecting`` (an intent, without an event): a kiosk killed between the eject and its
outcome finds the intent at start and settles it from the board's slot status, so there is
never an eject without its event nor an event without its eject.

Eligibility is a pure function of the rider's entitlements and their open rentals here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from cloud_sync.outbox import Outbox
from cloud_sync.roster_wire import Entitlements

SCHEMA = """
CREATE TABLE IF NOT EXISTS rentals (
    rental_id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    powerbank_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('ejecting', 'open', 'failed', 'closed')),
    reason TEXT
)
"""


def refusal(entitlements: Entitlements, open_rentals: int, today: date) -> str | None:
    """Why this rider may not rent now, or None when they may."""
    if not entitlements.may_rent:
        return "blocked"
    if entitlements.valid_until is not None and entitlements.valid_until < today:
        return "expired"
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
            tx.execute("CREATE INDEX IF NOT EXISTS rentals_person ON rentals (person_id, state)")

    def open_count(self, person_id: str) -> int:
        row = self._outbox.connection.execute(
            "SELECT COUNT(*) FROM rentals WHERE person_id = ? AND state IN ('ejecting', 'open')",
            (person_id,),
        ).fetchone()
        return int(row[0])

    def begin(self, rental_id: str, person_id: str, slot: int, powerbank_id: str | None) -> None:
        """Write the intent to eject (and which powerbank the slot holds), before the board is asked."""
        with self._outbox.transaction() as tx:
            tx.execute(
                "INSERT INTO rentals (rental_id, person_id, slot, powerbank_id, state) VALUES (?, ?, ?, ?, 'ejecting')",
                (rental_id, person_id, slot, powerbank_id),
            )

    def unsettled(self) -> list[Intent]:
        rows = self._outbox.connection.execute(
            "SELECT rental_id, person_id, slot, powerbank_id FROM rentals WHERE state = 'ejecting' ORDER BY rowid"
        ).fetchall()
        return [
            Intent(str(r[0]), str(r[1]), int(r[2]), None if r[3] is None else str(r[3]))
            for r in rows
        ]

    def started(self, rental_id: str, powerbank_id: str) -> bool:
        """The rider took the powerbank: open the rental and record ``rental.started``."""
        with self._outbox.transaction() as tx:
            row = tx.execute(
                "SELECT person_id, slot FROM rentals WHERE rental_id = ? AND state = 'ejecting'",
                (rental_id,),
            ).fetchone()
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
            row = tx.execute(
                "SELECT person_id, slot FROM rentals WHERE rental_id = ? AND state = 'ejecting'",
                (rental_id,),
            ).fetchone()
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
