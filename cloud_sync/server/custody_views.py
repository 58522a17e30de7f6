"""What an operator reads about the fleet: powerbanks and their custody flags, and one
rider's rentals still out. Read-only queries, shared by the admin API and ``kiosk-cloud``."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from cloud_sync.server.db import Database

PowerbankState = Literal["docked", "rented", "overdue", "lost", "maintenance", "flagged", "all"]
RentalState = Literal["open", "overdue", "lost", "closed", "returned_unrecorded", "failed", "all"]
RENTAL_STATES: tuple[str, ...] = RentalState.__args__  # type: ignore[attr-defined]
POWERBANK_STATES: tuple[str, ...] = PowerbankState.__args__  # type: ignore[attr-defined]


class CustodyFlag(BaseModel):
    flag_id: str = Field(description="the kind and the ids of the events behind it")
    kind: Literal["returned_unrecorded", "conflicting_custody"]
    event_ids: list[str] = Field(description="the events behind the flag")
    detail: str
    flagged_at: str


class PowerbankOut(BaseModel):
    """Where a powerbank is, as the events the cloud holds tell it."""

    powerbank_id: str
    state: Literal["docked", "rented", "overdue", "lost", "maintenance"]
    kiosk_id: str | None = Field(description="docked (or in maintenance) at this kiosk")
    slot: int | None
    rental_kiosk_id: str | None = Field(description="out on this rental (kiosk, id)")
    rental_id: str | None
    person_id: str | None = Field(description="the rider it is out with")
    seen_at: str = Field(description="the time of the latest event that placed it")
    event_id: str = Field(description="that event")
    health: str | None
    flags: list[CustodyFlag] = Field(description="custody flags awaiting review")


class RentalRef(BaseModel):
    kiosk_id: str
    rental_id: str
    powerbank_id: str
    status: Literal["open", "overdue", "lost"]
    started_at: str
    due_at: str | None


class RiderRentals(BaseModel):
    """A rider's rentals still out, across the fleet."""

    open: int = Field(description="out, not yet due")
    overdue: int
    lost: int
    rentals: list[RentalRef]


def powerbanks(database: Database, state: str = "all", limit: int = 1000) -> list[PowerbankOut]:
    """Powerbanks in id order; ``state`` one of ``POWERBANK_STATES`` (``flagged``: those
    with a custody flag awaiting review)."""
    where, args = "", []
    if state == "flagged":
        where = (
            "WHERE powerbank_id IN (SELECT powerbank_id FROM custody_flags "
            "WHERE resolved_at IS NULL)"
        )
    elif state != "all":
        where, args = "WHERE state = ?", [state]
    with database.transaction() as tx:
        rows = tx.rows(
            "SELECT powerbank_id, state, kiosk_id, slot, rental_kiosk_id, rental_id, "  # noqa: S608
            f"person_id, seen_at, event_id, health FROM powerbanks {where} "
            "ORDER BY powerbank_id LIMIT ?",
            [*args, limit],
        )
        flags: dict[str, list[CustodyFlag]] = {}
        if rows:
            in_list, in_args = tx.in_list("powerbank_id", [row[0] for row in rows])
            for pb, flag_id, kind, events, detail, at in tx.rows(
                "SELECT powerbank_id, flag_id, kind, event_ids, detail, flagged_at "  # noqa: S608
                f"FROM custody_flags WHERE resolved_at IS NULL AND {in_list} "
                "ORDER BY flagged_at, flag_id",
                in_args,
            ):
                flags.setdefault(pb, []).append(
                    CustodyFlag(
                        flag_id=flag_id,
                        kind=kind,
                        event_ids=json.loads(events),
                        detail=detail,
                        flagged_at=at,
                    )
                )
    keys = PowerbankOut.model_fields
    return [
        PowerbankOut(**dict(zip(keys, row, strict=False)), flags=flags.get(row[0], []))
        for row in rows
    ]


def rider_rentals(database: Database, person_id: str) -> RiderRentals:
    with database.transaction() as tx:
        rows = tx.rows(
            "SELECT kiosk_id, rental_id, powerbank_id, status, started_at, due_at FROM rentals "
            "WHERE person_id = ? AND status IN ('open', 'overdue', 'lost') "
            "ORDER BY started_at, kiosk_id, rental_id",
            [person_id],
        )
    refs = [RentalRef(**dict(zip(RentalRef.model_fields, row, strict=True))) for row in rows]
    count = {s: sum(1 for r in refs if r.status == s) for s in ("open", "overdue", "lost")}
    return RiderRentals(**count, rentals=refs)


def rider_after(database: Database, person_id: str) -> str | None:
    """The roster's rider id just before ``person_id`` in the database's own order ("" when
    none), so that a page of riders after it starts with ``person_id``; None when the
    rider is not in the roster."""
    with database.transaction() as tx:
        if not tx.rows("SELECT 1 FROM roster_riders WHERE person_id = ?", [person_id]):
            return None
        rows = tx.rows("SELECT MAX(person_id) FROM roster_riders WHERE person_id < ?", [person_id])
    return str(rows[0][0] or "")


def as_json(item: BaseModel) -> dict[str, Any]:
    return item.model_dump(mode="json")
