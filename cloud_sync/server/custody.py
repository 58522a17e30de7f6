"""Powerbank custody: where each powerbank is, learned from the events, in any order.

Every stored event that places a powerbank becomes a sighting in ``custody_events``:
``rented`` (``rental.started``: it was in that kiosk's cabinet and left with a rider),
``returned`` (``rental.returned``: docked at kiosk/slot), ``ejected`` (``slot.ejected``
taken or presented: out with a technician, so in maintenance) and ``seen`` (an eject that
failed, or a rental that failed: still docked there). ``slot.service`` and
``kiosk.maintenance`` events are kept beside them, without a powerbank, to tell whether a
docked powerbank sits out of service.

``settle`` replays a powerbank's sightings in time order (``occurred_at``, then the
kiosk's ``seq``) from scratch every time one of them arrives, so an event that arrives
late takes its place in the story and never overwrites a newer position; the result is
the same whatever order the events came in. The replay (``replay``, pure) decides:

- which rental each return closes (the rental out when it happened; a second return with
  nothing out in between is a ``duplicate`` of the one before);
- a rental still out when its powerbank is seen in a cabinet again (rented again, ejected,
  seen) closes as ``returned_unrecorded``, flagged for review;
- a powerbank docked at one kiosk and then reported in another kiosk's cabinet with no
  departure in between is flagged ``conflicting_custody``;
- where it is now: ``docked``, ``rented`` (or ``overdue``/``lost``, after its rental),
  ``maintenance``.

Flag ids are the kind and the sorted ids of the events behind the flag, so storing the
same events again never makes a second flag; a flag that later events disprove (the return
that was missing arrives after all) is removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from cloud_sync.events import (
    Event,
    KioskMaintenance,
    RentalFailed,
    RentalReturned,
    RentalStarted,
    SlotEjected,
    SlotService,
)
from cloud_sync.server.custody_replay import (
    Flag,
    Outcome,
    Position,
    Rental,
    Sighting,
    replay,
)
from cloud_sync.server.db import Tx
from cloud_sync.server.migrations import utc_text

_TAKEN = ("presented", "taken")  # a technician's eject that took the powerbank out
_COLUMNS = (
    ("event_id", "text"),
    ("powerbank_id", "text"),
    ("kind", "text"),
    ("kiosk_id", "text"),
    ("seq", "bigint"),
    ("slot", "integer"),
    ("occurred_at", "text"),
    ("rental_id", "text"),
    ("person_id", "text"),
    ("out_of_service", "integer"),
)


# -- from events to sightings ----------------------------------------------------------------


def _row(event: Event) -> list[Any] | None:
    """The ``custody_events`` row of an event, or None when it places nothing."""
    p = event.payload

    def row(
        powerbank: str | None,
        kind: str,
        slot: int | None,
        rental: tuple[str, str] | tuple[None, None] = (None, None),
        off: int | None = None,
    ) -> list[Any]:
        at = utc_text(event.occurred_at)
        return [event.id, powerbank, kind, event.kiosk_id, event.seq, slot, at, *rental, off]

    if isinstance(p, RentalStarted):
        return row(p.powerbank_id, "rented", p.slot, (p.rental_id, p.person_id))
    if isinstance(p, RentalReturned):
        return row(p.powerbank_id, "returned", p.slot)
    if isinstance(p, SlotEjected) and p.powerbank_id:
        return row(p.powerbank_id, "ejected" if p.outcome in _TAKEN else "seen", p.slot)
    if isinstance(p, SlotService):
        return row(None, "slot_service", p.slot, off=int(not p.enabled))
    if isinstance(p, KioskMaintenance):
        return row(None, "kiosk_maintenance", None, off=int(p.on))
    return None


def matters(events: Iterable[Event]) -> bool:
    """Whether any of these events matters to custody or rentals."""
    return any(_row(e) is not None or isinstance(e.payload, RentalFailed) for e in events)


def touched(tx: Tx, events: list[Event]) -> set[str]:
    """The powerbanks these events may move: those they name, the one a failed rental had,
    and those docked where a slot or a kiosk went out of (or back into) service."""
    found: set[str] = set()
    for event in events:
        p = event.payload
        if isinstance(p, (RentalStarted, RentalReturned)) or (
            isinstance(p, SlotEjected) and p.powerbank_id
        ):
            found.add(str(p.powerbank_id))
        elif isinstance(p, RentalFailed):
            rows = tx.rows(
                "SELECT powerbank_id FROM rentals WHERE kiosk_id = ? AND rental_id = ?",
                [event.kiosk_id, p.rental_id],
            )
            found.update(str(row[0]) for row in rows if row[0])
        elif isinstance(p, SlotService | KioskMaintenance):
            where: str = "kiosk_id = ?"
            args: list[Any] = [event.kiosk_id]
            if isinstance(p, SlotService):
                where, args = "kiosk_id = ? AND slot = ?", [event.kiosk_id, p.slot]
            rows = tx.rows(f"SELECT powerbank_id FROM powerbanks WHERE {where}", args)  # noqa: S608
            found.update(str(row[0]) for row in rows)
    return found


def record(tx: Tx, events: Iterable[Event]) -> None:
    """Keep the sightings and service events among ``events`` (once each)."""
    rows = [row for row in (_row(e) for e in events) if row is not None]
    tx.insert_many("custody_events", _COLUMNS, rows, on_conflict="ON CONFLICT DO NOTHING")


# -- settling powerbanks ---------------------------------------------------------------------


def settle(tx: Tx, powerbanks: Iterable[str], now: datetime) -> set[str]:
    """Replay each powerbank and store what changed (rentals, return links, flags, its
    position); the riders whose rentals changed. The caller holds the powerbanks' locks."""
    names = sorted(set(powerbanks))
    if not names:
        return set()
    where, args = tx.in_list("powerbank_id", names)
    sightings, rentals, services = _load(tx, where, args)
    changed: set[str] = set()
    flags: dict[str, list[Flag]] = {}
    positions: dict[str, Position] = {}
    outcomes: dict[tuple[str, str], Outcome] = {}
    links: dict[str, tuple[str | None, str | None, str | None]] = {}
    for name in names:
        own = {key: r for key, r in rentals.items() if r[1] == name}
        done = replay(sightings.get(name, []), {k: r[0] for k, r in own.items()}, services)
        for key, outcome in done.outcomes.items():
            if outcome != own[key][2]:
                outcomes[key] = outcome
                changed.add(own[key][0].person_id)
        links.update(done.links)
        flags[name] = done.flags
        if done.position is not None:
            positions[name] = done.position
    _store_rentals(tx, outcomes)
    _store_links(tx, where, args, links)
    _store_flags(tx, where, args, flags, now)
    _store_positions(tx, positions, now)
    return changed


_Loaded = tuple[
    dict[str, list[Sighting]],
    dict[tuple[str, str], tuple[Rental, str, Outcome]],
    dict[tuple[str, int | None], bool],
]


def _load(tx: Tx, where: str, args: list[Any]) -> _Loaded:
    seen_rows, rental_rows = tx.rows_each(
        [
            (
                "SELECT powerbank_id, event_id, kind, kiosk_id, seq, slot, occurred_at, "  # noqa: S608
                f"rental_id FROM custody_events WHERE {where} "
                "ORDER BY occurred_at, seq, kiosk_id, event_id",
                args,
            ),
            (
                "SELECT kiosk_id, rental_id, person_id, status, start_event_id, powerbank_id, "  # noqa: S608
                f"returned_at, return_event_id, return_kiosk_id, review FROM rentals WHERE {where}",
                args,
            ),
        ]
    )
    sightings: dict[str, list[Sighting]] = {}
    kiosks: set[str] = set()
    for pb, *rest in seen_rows:
        sighting = Sighting(*rest)
        sightings.setdefault(str(pb), []).append(sighting)
        kiosks.add(sighting.kiosk_id)
    rentals = {
        (k, r): (Rental(k, r, person, status, start), pb, Outcome(status, *closing))
        for k, r, person, status, start, pb, *closing in rental_rows
    }
    services: dict[tuple[str, int | None], bool] = {}
    if kiosks:
        in_kiosks, kiosk_args = tx.in_list("kiosk_id", sorted(kiosks))
        for kiosk, kind, slot, off in tx.rows(
            "SELECT kiosk_id, kind, slot, out_of_service FROM custody_events "  # noqa: S608
            f"WHERE kind IN ('slot_service', 'kiosk_maintenance') AND {in_kiosks} "
            "ORDER BY occurred_at, seq, event_id",
            kiosk_args,
        ):
            services[(kiosk, slot if kind == "slot_service" else None)] = bool(off)
    return sightings, rentals, services


def _store_rentals(tx: Tx, outcomes: Mapping[tuple[str, str], Outcome]) -> None:
    tx.many(
        "UPDATE rentals SET status = ?, returned_at = ?, return_event_id = ?, "
        "return_kiosk_id = ?, review = ? WHERE kiosk_id = ? AND rental_id = ?",
        [
            [o.status, o.returned_at, o.return_event_id, o.return_kiosk_id, o.review, *key]
            for key, o in sorted(outcomes.items())
        ],
    )


def _store_links(
    tx: Tx,
    where: str,
    args: list[Any],
    links: Mapping[str, tuple[str | None, str | None, str | None]],
) -> None:
    stored = {
        row[0]: tuple(row[1:])
        for row in tx.rows(
            f"SELECT event_id, rental_kiosk_id, rental_id, flag FROM returns WHERE {where}",  # noqa: S608
            args,
        )
    }
    tx.many(
        "UPDATE returns SET rental_kiosk_id = ?, rental_id = ?, flag = ? WHERE event_id = ?",
        [
            [*link, event_id]
            for event_id, link in sorted(links.items())
            if event_id in stored and stored[event_id] != link
        ],
    )


def _store_flags(
    tx: Tx, where: str, args: list[Any], flags: Mapping[str, list[Flag]], now: datetime
) -> None:
    held = {
        str(row[0])
        for row in tx.rows(
            f"SELECT flag_id FROM custody_flags WHERE resolved_at IS NULL AND {where}",  # noqa: S608
            args,
        )
    }
    wanted = {flag.flag_id: (pb, flag) for pb, found in flags.items() for flag in found}
    tx.many(
        "DELETE FROM custody_flags WHERE flag_id = ?",
        [[flag_id] for flag_id in sorted(held - set(wanted))],
    )
    tx.insert_many(
        "custody_flags",
        (
            ("flag_id", "text"),
            ("powerbank_id", "text"),
            ("kind", "text"),
            ("event_ids", "text"),
            ("detail", "text"),
            ("flagged_at", "text"),
        ),
        [
            [flag_id, pb, f.kind, json.dumps(sorted(f.event_ids)), f.detail, utc_text(now)]
            for flag_id, (pb, f) in sorted(wanted.items())
            if flag_id not in held
        ],
        on_conflict="ON CONFLICT (flag_id) DO NOTHING",
    )


def _store_positions(tx: Tx, positions: Mapping[str, Position], now: datetime) -> None:
    rows = []
    for pb, at in sorted(positions.items()):
        rental = at.rental
        rows.append(
            [
                pb,
                at.state,
                at.kiosk_id,
                at.slot,
                rental.kiosk_id if rental else None,
                rental.rental_id if rental else None,
                rental.person_id if rental else None,
                at.seen_at,
                at.event_id,
                utc_text(now),
            ]
        )
    tx.insert_many(
        "powerbanks",
        (
            ("powerbank_id", "text"),
            ("state", "text"),
            ("kiosk_id", "text"),
            ("slot", "integer"),
            ("rental_kiosk_id", "text"),
            ("rental_id", "text"),
            ("person_id", "text"),
            ("seen_at", "text"),
            ("event_id", "text"),
            ("updated_at", "text"),
        ),
        rows,
        on_conflict="ON CONFLICT (powerbank_id) DO UPDATE SET state = excluded.state, "
        "kiosk_id = excluded.kiosk_id, slot = excluded.slot, "
        "rental_kiosk_id = excluded.rental_kiosk_id, rental_id = excluded.rental_id, "
        "person_id = excluded.person_id, seen_at = excluded.seen_at, "
        "event_id = excluded.event_id, updated_at = excluded.updated_at",
    )
