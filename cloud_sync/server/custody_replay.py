"""One powerbank's story, replayed from its sightings: pure code behind ``custody.settle``.

``replay`` takes a powerbank's sightings in time order (``occurred_at``, then the kiosk's
``seq``), the rentals they name and which slots were out of service, and decides which
rental each return closes, which rentals close as ``returned_unrecorded``, which custody
conflicts to flag and where the powerbank is now (``cloud_sync.server.custody`` has the
rules in words and stores the result). Whatever order the events arrived in, the same
sightings give the same story.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

OUT_STATES = ("open", "overdue", "lost")
#: A rented powerbank's state follows its rental's status.
RENTED_STATE = {"open": "rented", "overdue": "overdue", "lost": "lost"}


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
