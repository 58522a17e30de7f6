"""Reconciling rentals across kiosks: whichever event arrives first, the rental closes.

A powerbank rented at kiosk A (``rental.started``) and returned at kiosk B
(``rental.returned``) may reach the cloud in either order, hours apart. Each stored event
that places a powerbank is kept as a sighting, and the powerbank's sightings are replayed
in time order every time one arrives (``cloud_sync.server.custody``), so the outcome does
not depend on the arrival order:

- a return closes the rental the powerbank was out on when it happened;
- a return with nothing out waits, unmatched, until a rental before it arrives;
- a second return with no rental between is kept and flagged ``duplicate``;
- a rental still out when its powerbank is rented again (or ejected, or seen docked)
  closes as ``returned_unrecorded`` and is flagged for review.

A new rental is due ``due`` after it started (``rentals.due_at``; the rentals sweep turns
it ``overdue`` and ``lost``, ``cloud_sync.server.sweep``). ``rental.failed`` marks the
rental failed (it never left the cabinet); when it arrives before its rental's start, the
start fills in the row it made. A rental is started once: the ingest refuses a second
``rental.started`` of a rental (``Store.ingest``), and a start never overwrites another.
Everything runs in the ingest transaction; on
PostgreSQL an advisory lock per powerbank keeps two API processes from replaying the same
powerbank at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloud_sync.events import Event, RentalFailed, RentalReturned, RentalStarted
from cloud_sync.server import custody, rider_fleet
from cloud_sync.server.db import Tx
from cloud_sync.server.migrations import utc_text

DEFAULT_DUE = timedelta(days=1)
RENTAL_COLUMNS = (
    ("kiosk_id", "text"),
    ("rental_id", "text"),
    ("powerbank_id", "text"),
    ("person_id", "text"),
    ("slot", "integer"),
    ("started_at", "text"),
    ("start_event_id", "text"),
    ("status", "text"),
    ("due_at", "text"),
)
RETURN_COLUMNS = (
    ("event_id", "text"),
    ("powerbank_id", "text"),
    ("kiosk_id", "text"),
    ("slot", "integer"),
    ("returned_at", "text"),
)


def reconcile(
    tx: Tx, events: list[Event], due: timedelta = DEFAULT_DUE, now: datetime | None = None
) -> set[str]:
    """Apply the events just stored (any order) to rentals, returns and custody; refresh
    the fleet state of the riders whose rentals changed, and return them."""
    if not custody.matters(events):
        return set()
    now = now or datetime.now(UTC)
    powerbanks = custody.touched(tx, events)
    tx.lock_many([f"powerbank:{pb}" for pb in sorted(powerbanks)])  # one order: no deadlocks
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.seq))
    started = [(e, e.payload) for e in ordered if isinstance(e.payload, RentalStarted)]
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
                utc_text(e.occurred_at + due),
            ]
            for e, p in started
        ],
        # a start only fills the row its rental.failed made first (no powerbank yet); it
        # never overwrites another start (the ingest refuses a second start before this)
        on_conflict="ON CONFLICT (kiosk_id, rental_id) DO UPDATE SET "
        "powerbank_id = excluded.powerbank_id, slot = excluded.slot, "
        "started_at = excluded.started_at, start_event_id = excluded.start_event_id, "
        "due_at = excluded.due_at WHERE rentals.powerbank_id = ''",
    )
    tx.insert_many(
        "returns",
        RETURN_COLUMNS,
        [
            [e.id, e.payload.powerbank_id, e.kiosk_id, e.payload.slot, utc_text(e.occurred_at)]
            for e in ordered
            if isinstance(e.payload, RentalReturned)
        ],
        on_conflict="ON CONFLICT (event_id) DO NOTHING",
    )
    for event in ordered:
        if isinstance(event.payload, RentalFailed):
            _failed(tx, event, event.payload)
    custody.record(tx, ordered)
    riders = custody.settle(tx, powerbanks, now)
    riders.update(p.person_id for _, p in started)
    rider_fleet.refresh(tx, riders, now)
    return riders


def _failed(tx: Tx, event: Event, payload: RentalFailed) -> None:
    tx.run(
        "INSERT INTO rentals (kiosk_id, rental_id, powerbank_id, person_id, slot, started_at, "
        "start_event_id, status) VALUES (?, ?, '', ?, ?, ?, ?, 'failed') "
        "ON CONFLICT (kiosk_id, rental_id) DO UPDATE SET status = 'failed', "
        "returned_at = NULL, return_event_id = NULL, return_kiosk_id = NULL, review = NULL",
        [
            event.kiosk_id,
            payload.rental_id,
            payload.person_id,
            payload.slot,
            utc_text(event.occurred_at),
            event.id,
        ],
    )
