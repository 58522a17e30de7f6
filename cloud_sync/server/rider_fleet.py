"""Each rider's fleet state, as the cloud sees it, for kiosks to apply offline.

A kiosk decides alone whether a rider may rent, so it must know what the rest of the fleet
knows: the rider's rentals still open at other kiosks, and how many of them are overdue or
lost. ``refresh`` recomputes that from the ``rentals`` table for the riders an event or the
rentals sweep touched, inside the same transaction. Only when a rider's state changed does
it take the next roster version and store the row under it, so every kiosk's next roster
pull carries the new state as a small fleet row (no templates, nothing sealed: person ids,
rental ids and counts, signed with the delta). Rows are kept when a rider's state empties,
so the kiosks hear that too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cloud_sync.events import Event, RentalFailed, RentalReturned, RentalStarted
from cloud_sync.server.db import Tx
from cloud_sync.server.migrations import utc_text

OPEN_STATES = ("open", "overdue", "lost")


@dataclass(frozen=True)
class FleetState:
    """One rider's rentals still out across the fleet: ``(kiosk_id, rental_id)`` pairs."""

    open_rentals: tuple[tuple[str, str], ...] = ()
    overdue: int = 0
    lost: int = 0

    def text(self) -> str:
        return json.dumps([list(pair) for pair in self.open_rentals], separators=(",", ":"))


def bump_roster(tx: Tx, now: datetime) -> int:
    """The next roster version, holding the roster's write lock until commit."""
    tx.run(
        "INSERT INTO roster_state (id, version, key_id, key_version, tombstone_floor, "
        "updated_at) VALUES (1, 0, NULL, 0, 0, ?) ON CONFLICT (id) DO NOTHING",
        [utc_text(now)],
    )
    rows = tx.rows(
        "UPDATE roster_state SET version = version + 1, updated_at = ? WHERE id = 1 "
        "RETURNING version",
        [utc_text(now)],
    )
    return int(rows[0][0])


def hold_roster(tx: Tx) -> None:
    """The roster's write lock until commit, without a new version: what a change that
    reads the roster first takes, so that a rider deleted meanwhile is seen deleted."""
    tx.run("UPDATE roster_state SET version = version WHERE id = 1")


def current(tx: Tx, person_id: str) -> FleetState:
    """The rider's fleet state from the rentals as they stand in this transaction."""
    marks = ", ".join("?" for _ in OPEN_STATES)
    rows = tx.rows(
        "SELECT kiosk_id, rental_id, status FROM rentals "  # noqa: S608 (placeholders only)
        f"WHERE person_id = ? AND status IN ({marks}) ORDER BY kiosk_id, rental_id",
        [person_id, *OPEN_STATES],
    )
    return FleetState(
        tuple((str(kiosk), str(rental)) for kiosk, rental, _ in rows),
        sum(1 for *_, status in rows if status == "overdue"),
        sum(1 for *_, status in rows if status == "lost"),
    )


def refresh(tx: Tx, person_ids: Iterable[str], now: datetime) -> int:
    """Store the fleet state of each rider whose state changed under a new roster version;
    how many changed. Call it in the transaction that changed their rentals."""
    changed = 0
    version: int | None = None
    for person_id in sorted(set(person_ids)):
        state = current(tx, person_id)
        stored = tx.rows(
            "SELECT open_rentals, overdue, lost FROM rider_fleet WHERE person_id = ?",
            [person_id],
        )
        if stored and tuple(stored[0]) == (state.text(), state.overdue, state.lost):
            continue
        if not stored and not state.open_rentals:
            continue  # nothing out, and never was: the kiosks need no row
        if version is None:  # one new roster version for everything this call changes
            version = bump_roster(tx, now)
        tx.run(
            "INSERT INTO rider_fleet (person_id, version, open_rentals, overdue, lost, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (person_id) DO UPDATE SET "
            "version = excluded.version, open_rentals = excluded.open_rentals, "
            "overdue = excluded.overdue, lost = excluded.lost, updated_at = excluded.updated_at",
            [person_id, version, state.text(), state.overdue, state.lost, utc_text(now)],
        )
        changed += 1
    return changed


def touched_riders(tx: Tx, events: Iterable[Event]) -> set[str]:
    """The riders whose rentals these stored events may have changed: the riders they name
    and every rider who ever rented a powerbank they name."""
    riders: set[str] = set()
    powerbanks: set[str] = set()
    for event in events:
        payload = event.payload
        if isinstance(payload, (RentalStarted, RentalFailed)):
            riders.add(payload.person_id)
        if isinstance(payload, (RentalStarted, RentalReturned)):
            powerbanks.add(payload.powerbank_id)
    if powerbanks:
        where, args = tx.in_list("powerbank_id", sorted(powerbanks))
        rows = tx.rows(f"SELECT DISTINCT person_id FROM rentals WHERE {where}", args)  # noqa: S608
        riders.update(str(row[0]) for row in rows)
    return riders


def rows_since(tx: Tx, since: int) -> list[tuple[str, int, FleetState]]:
    """Fleet rows stored after roster version ``since`` (0: every rider with something
    out), in person id order."""
    found = tx.rows(
        "SELECT person_id, version, open_rentals, overdue, lost FROM rider_fleet "
        "WHERE version > ? ORDER BY person_id",
        [since],
    )
    rows = []
    for person_id, version, text, overdue, lost in found:
        pairs = tuple((str(k), str(r)) for k, r in json.loads(text))
        if since == 0 and not pairs:
            continue
        rows.append((str(person_id), int(version), FleetState(pairs, int(overdue), int(lost))))
    return rows
