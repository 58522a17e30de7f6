"""Numbering the rentals the cloud closes, per owning kiosk, for ``GET /v1/rentals:closed``.

A rental rented at kiosk A closes when its return reaches the cloud, from any kiosk and in
either order, or as ``returned_unrecorded`` when its powerbank turns up in a cabinet
without a return (``cloud_sync.server.reconcile``). Each closed rental gets the next number of
its own kiosk's ``closed_seq`` in the ingest transaction that closed it; kiosk A reads its
closed rentals by that number, so a cursor sees each exactly once and in commit order.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud_sync.events import Event, RentalReturned, RentalStarted, SlotEjected
from cloud_sync.server.db import Tx


@dataclass(frozen=True)
class ClosedRental:
    closed_seq: int
    rental_id: str
    returned_at: str | None
    return_kiosk_id: str | None


def number_closed(tx: Tx, events: list[Event]) -> None:
    """Give each rental this transaction closed its kiosk's next ``closed_seq``.

    The rentals are those of the batch's powerbanks (whose advisory locks ``reconcile``
    holds). The per-kiosk lock, taken after the powerbank locks and in sorted order, is
    held until commit, so a kiosk's numbers commit in increasing order and a cursor over
    them never skips one (PostgreSQL; SQLite has one writer).
    """
    powerbanks = sorted(
        {
            e.payload.powerbank_id
            for e in events
            if isinstance(e.payload, RentalStarted | RentalReturned | SlotEjected)
            and e.payload.powerbank_id
        }
    )
    if not powerbanks:
        return
    where, args = tx.in_list("powerbank_id", powerbanks)
    found = tx.rows(
        "SELECT kiosk_id, rental_id FROM rentals "  # noqa: S608
        "WHERE status IN ('closed', 'returned_unrecorded') "
        f"AND closed_seq IS NULL AND {where} ORDER BY kiosk_id, returned_at, rental_id",
        args,
    )
    if not found:
        return
    kiosks = sorted({row[0] for row in found})
    tx.lock_many([f"closed:{kiosk}" for kiosk in kiosks])
    for kiosk in kiosks:
        last = tx.rows("SELECT MAX(closed_seq) FROM rentals WHERE kiosk_id = ?", [kiosk])[0][0]
        seq = int(last or 0)
        for owner, rental_id in found:
            if owner == kiosk:
                seq += 1
                tx.run(
                    "UPDATE rentals SET closed_seq = ? WHERE kiosk_id = ? AND rental_id = ?",
                    [seq, kiosk, rental_id],
                )
