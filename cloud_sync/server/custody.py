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
from dataclasses import dataclass, field
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
from cloud_sync.server.db import Tx
from cloud_sync.server.migrations import utc_text

OUT_STATES = ("open", "overdue", "lost")
#: A rented powerbank's state follows its rental's status.
RENTED_STATE = {"open": "rented", "overdue": "overdue", "lost": "lost"}
POWERBANK_STATES = ("docked", "rented", "overdue", "lost", "maintenance")
FLAG_KINDS = ("returned_unrecorded", "conflicting_custody")
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


@dataclass(frozen=True)
class Sighting:
    event_id: str
    kind: str  # rented, returned, ejected, seen
    kiosk_id: str
    seq: int
    slot: int | None
    occurred_at: str
    rental_id: str | None = None


@dataclass(frozen=True)
class Rental:
    kiosk_id: str
    rental_id: str
    person_id: str
    status: str
    start_event_id: str


@dataclass(frozen=True)
class Outcome:
    """How a rental stands after the replay."""

    status: str
    returned_at: str | None = None
    return_event_id: str | None = None
    return_kiosk_id: str | None = None
    review: str | None = None


@dataclass(frozen=True)
class Flag:
    kind: str
    event_ids: tuple[str, ...]
    detail: str

    @property
    def flag_id(self) -> str:
        return f"{self.kind}:{'+'.join(sorted(self.event_ids))}"


@dataclass(frozen=True)
class Position:
    state: str
    kiosk_id: str | None
    slot: int | None
    rental: Rental | None
    seen_at: str
    event_id: str


@dataclass
class Replayed:
    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    links: dict[str, tuple[str | None, str | None, str | None]] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    position: Position | None = None


def replay(
    sightings: Iterable[Sighting],
    rentals: Mapping[tuple[str, str], Rental],
    out_of_service: Mapping[tuple[str, int | None], bool],
) -> Replayed:
    """One powerbank's story from its sightings (in time order); pure.

    ``rentals`` are its rentals by ``(kiosk_id, rental_id)``; ``out_of_service`` says, by
    ``(kiosk, slot)`` and by ``(kiosk, None)``, whether the latest service event there
    took the slot or the kiosk out of service.
    """
    done = Replayed()
    out: Rental | None = None  # the rental the powerbank is out on
    last: Rental | None = None  # the latest rental, for a duplicate return
    docked: Sighting | None = None  # the sighting that put it in a cabinet, while it is there
    where: Sighting | None = None
    state = ""
    for seen in sightings:
        rental = rentals.get((seen.kiosk_id, seen.rental_id or ""))
        kind = seen.kind
        if kind == "rented" and (rental is None or rental.status == "failed"):
            kind = "seen"  # it never left the cabinet
        if kind == "returned" and out is not None:
            done.outcomes[_key(out)] = Outcome(
                "closed", seen.occurred_at, seen.event_id, seen.kiosk_id
            )
            done.links[seen.event_id] = (out.kiosk_id, out.rental_id, None)
            out = None
        elif out is not None:  # seen in a cabinet while out: its return went unrecorded
            done.outcomes[_key(out)] = Outcome(
                "returned_unrecorded", None, seen.event_id, seen.kiosk_id, "returned_unrecorded"
            )
            how = "rented again" if kind == "rented" else f"{kind} in a cabinet"
            done.flags.append(
                Flag(
                    "returned_unrecorded",
                    (out.start_event_id, seen.event_id),
                    f"rental {out.kiosk_id}/{out.rental_id} of {out.person_id} was still out "
                    f"when the powerbank was {how} at {seen.kiosk_id} ({seen.occurred_at}); "
                    "closed as returned_unrecorded",
                )
            )
            out = None
        else:
            if docked is not None and docked.kiosk_id != seen.kiosk_id:
                done.flags.append(
                    Flag(
                        "conflicting_custody",
                        (docked.event_id, seen.event_id),
                        f"docked at {docked.kiosk_id} slot {docked.slot} "
                        f"({docked.occurred_at}), then reported at {seen.kiosk_id} slot "
                        f"{seen.slot} ({seen.occurred_at}) with no rental or eject between",
                    )
                )
            if kind == "returned":
                twice = docked is not None and docked.kind == "returned" and last is not None
                link = (last.kiosk_id, last.rental_id, "duplicate") if twice and last else None
                done.links[seen.event_id] = link or (None, None, None)
        if kind == "rented" and rental is not None:
            out = last = rental
            docked, state = None, "rented"
        elif kind == "ejected":
            docked, state = None, "maintenance"
        else:  # returned or seen: in that cabinet
            docked, state = seen, "docked"
        where = seen
    for key, rental in rentals.items():
        if rental is out:
            status = rental.status if rental.status in OUT_STATES else "open"
            done.outcomes[key] = Outcome(status)
    if where is not None:
        done.position = _position(state, where, out, out_of_service)
    return done


def _position(
    state: str,
    where: Sighting,
    out: Rental | None,
    out_of_service: Mapping[tuple[str, int | None], bool],
) -> Position:
    if out is not None:
        status = out.status if out.status in OUT_STATES else "open"
        return Position(RENTED_STATE[status], None, None, out, where.occurred_at, where.event_id)
    if state == "docked" and (
        out_of_service.get((where.kiosk_id, where.slot), False)
        or out_of_service.get((where.kiosk_id, None), False)
    ):
        state = "maintenance"
    return Position(state, where.kiosk_id, where.slot, None, where.occurred_at, where.event_id)


def _key(rental: Rental) -> tuple[str, str]:
    return rental.kiosk_id, rental.rental_id


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
