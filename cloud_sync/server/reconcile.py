"""Reconciling rentals across kiosks: whichever event arrives first, the rental closes.

A powerbank rented at kiosk A (``rental.started``) and returned at kiosk B
(``rental.returned``) may reach the cloud in either order, hours apart. A return belongs
to the latest rental of that powerbank that started at or before it:

- rental first, then return: the return closes the open rental;
- return first: it waits, unmatched, and the rental closes the moment it arrives;
- a second return for an already closed rental is kept and flagged ``duplicate``
  (if it happened earlier than the one that closed the rental, the two swap places).

``rental.failed`` marks the rental failed (it never left the cabinet). Everything runs in
the ingest transaction; on PostgreSQL an advisory lock per powerbank keeps two API
processes from matching the same powerbank at once.
"""

from __future__ import annotations

from cloud_sync.events import Event, RentalFailed, RentalReturned, RentalStarted
from cloud_sync.server.db import Tx
from cloud_sync.server.migrations import utc_text

RENTAL_TYPES = frozenset({"rental.started", "rental.returned", "rental.failed"})
RENTAL_COLUMNS = (
    ("kiosk_id", "text"),
    ("rental_id", "text"),
    ("powerbank_id", "text"),
    ("person_id", "text"),
    ("slot", "integer"),
    ("started_at", "text"),
    ("start_event_id", "text"),
    ("status", "text"),
)


def reconcile(tx: Tx, events: list[Event]) -> None:
    """Apply the rental events just stored (any order) to rentals and returns."""
    relevant = [event for event in events if event.type in RENTAL_TYPES]
    if not relevant:
        return
    powerbanks = sorted({pb for pb in (_powerbank(e) for e in relevant) if pb is not None})
    tx.lock_many([f"powerbank:{pb}" for pb in powerbanks])  # one sorted order: no deadlocks
    ordered = sorted(relevant, key=lambda e: (e.occurred_at, e.seq))
    started = [(e, e.payload) for e in ordered if isinstance(e.payload, RentalStarted)]
    if started:
        tx.insert_many(
            "rentals",
            RENTAL_COLUMNS,
            [
                [
                    e.kiosk_id,
                    p.rental_id,
                    p.powerbank_id,
                    p.person_id,
                    p.slot,
                    utc_text(e.occurred_at),
                    e.id,
                    "open",
                ]
                for e, p in started
            ],
            on_conflict="ON CONFLICT (kiosk_id, rental_id) DO UPDATE SET "
            "powerbank_id = excluded.powerbank_id, slot = excluded.slot, "
            "started_at = excluded.started_at, start_event_id = excluded.start_event_id",
        )
        where, args = tx.in_list("powerbank_id", sorted({p.powerbank_id for _, p in started}))
        waiting = {
            row[0]
            for row in tx.rows(
                f"SELECT DISTINCT powerbank_id FROM returns WHERE rental_id IS NULL AND {where}",  # noqa: S608
                args,
            )
        }
        for event, payload in started:
            if payload.powerbank_id in waiting:
                _match_waiting(tx, event, payload)
    for event in ordered:
        if isinstance(event.payload, RentalFailed):
            _failed(tx, event, event.payload)
        elif isinstance(event.payload, RentalReturned):
            _returned(tx, event, event.payload)


def _powerbank(event: Event) -> str | None:
    payload = event.payload
    if isinstance(payload, (RentalStarted, RentalReturned)):
        return payload.powerbank_id
    return None


def _match_waiting(tx: Tx, event: Event, payload: RentalStarted) -> None:
    """Close a new rental with a return that arrived before it, if one is waiting."""
    started = utc_text(event.occurred_at)
    later = tx.rows(
        "SELECT MIN(started_at) FROM rentals WHERE powerbank_id = ? AND started_at > ?",
        [payload.powerbank_id, started],
    )[0][0]
    window, args = "returned_at >= ?", [payload.powerbank_id, started]
    if later is not None:
        window, args = "returned_at >= ? AND returned_at < ?", [*args, later]
    waiting = tx.rows(
        f"SELECT event_id, kiosk_id, returned_at FROM returns WHERE powerbank_id = ? "  # noqa: S608
        f"AND rental_id IS NULL AND {window} ORDER BY returned_at, event_id",
        args,
    )
    for index, (event_id, kiosk_id, returned_at) in enumerate(waiting):
        if index == 0:
            _close(tx, event.kiosk_id, payload.rental_id, event_id, kiosk_id, returned_at)
        else:
            _link_return(tx, event_id, event.kiosk_id, payload.rental_id, flag="duplicate")


def _returned(tx: Tx, event: Event, payload: RentalReturned) -> None:
    returned = utc_text(event.occurred_at)
    tx.run(
        "INSERT INTO returns (event_id, powerbank_id, kiosk_id, slot, returned_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        [event.id, payload.powerbank_id, event.kiosk_id, payload.slot, returned],
    )
    rows = tx.rows(
        "SELECT kiosk_id, rental_id, status, returned_at, return_event_id FROM rentals "
        "WHERE powerbank_id = ? AND started_at <= ? ORDER BY started_at DESC LIMIT 1",
        [payload.powerbank_id, returned],
    )
    if not rows:
        return  # waits, unmatched, for its rental.started
    kiosk_id, rental_id, status, closed_at, closing_event = rows[0]
    if status != "closed":
        _close(tx, kiosk_id, rental_id, event.id, event.kiosk_id, returned)
    elif closed_at is not None and returned < closed_at:
        _close(tx, kiosk_id, rental_id, event.id, event.kiosk_id, returned)
        _link_return(tx, closing_event, kiosk_id, rental_id, flag="duplicate")
    else:
        _link_return(tx, event.id, kiosk_id, rental_id, flag="duplicate")


def _failed(tx: Tx, event: Event, payload: RentalFailed) -> None:
    tx.run(
        "INSERT INTO rentals (kiosk_id, rental_id, powerbank_id, person_id, slot, started_at, "
        "start_event_id, status) VALUES (?, ?, '', ?, ?, ?, ?, 'failed') "
        "ON CONFLICT (kiosk_id, rental_id) DO UPDATE SET status = 'failed'",
        [
            event.kiosk_id,
            payload.rental_id,
            payload.person_id,
            payload.slot,
            utc_text(event.occurred_at),
            event.id,
        ],
    )


def _close(
    tx: Tx,
    kiosk_id: str,
    rental_id: str,
    return_event: str,
    return_kiosk: str,
    returned_at: str,
) -> None:
    tx.run(
        "UPDATE rentals SET status = 'closed', returned_at = ?, return_event_id = ?, "
        "return_kiosk_id = ? WHERE kiosk_id = ? AND rental_id = ? AND status <> 'failed'",
        [returned_at, return_event, return_kiosk, kiosk_id, rental_id],
    )
    _link_return(tx, return_event, kiosk_id, rental_id, flag=None)


def _link_return(
    tx: Tx, event_id: str, rental_kiosk: str, rental_id: str, flag: str | None
) -> None:
    tx.run(
        "UPDATE returns SET rental_kiosk_id = ?, rental_id = ?, flag = ? WHERE event_id = ?",
        [rental_kiosk, rental_id, flag, event_id],
    )
