"""Custody and rentals over HTTP: where each powerbank is, and one rider's rentals out.

They only read: an operator with the support role (or admin) may (docs/fleet.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.custody_views import (
    PowerbankOut,
    PowerbankState,
    RiderRentals,
    powerbanks,
    rider_after,
    rider_rentals,
)
from cloud_sync.server.deps import ADMIN_ERRORS, Support
from cloud_sync.server.models import PERSON_ID_PATTERN, RiderOut
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses
from cloud_sync.server.roster import CloudRoster, rider_out

if TYPE_CHECKING:
    from cloud_sync.server.app import Service

router = APIRouter(route_class=StrictJSONRoute)
_ERRORS = limited_responses(401, 403, 404, 422, 503)


class RiderView(BaseModel):
    """A rider's entitlements (from the roster) and their rentals out across the fleet."""

    person_id: str
    rider: RiderOut | None = Field(description="null when the rider is not in the roster")
    rentals: RiderRentals


def _service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


@router.get(
    "/v1/admin/powerbanks",
    response_model=list[PowerbankOut],
    dependencies=[Support],
    responses=ADMIN_ERRORS,
)
def list_powerbanks(
    request: Request,
    state: PowerbankState = "all",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[PowerbankOut]:
    """Powerbanks in id order with where they are (docked, rented, overdue, lost,
    maintenance) and their custody flags; ``state=flagged`` lists those awaiting review."""
    return powerbanks(_service(request).store.db, state, limit)


@router.get(
    "/v1/admin/riders/{person_id}",
    response_model=RiderView,
    dependencies=[Support],
    responses=_ERRORS,
)
def rider_view(
    request: Request,
    person_id: Annotated[str, Path(min_length=1, max_length=128, pattern=PERSON_ID_PATTERN)],
) -> RiderView:
    """One rider: entitlements and rentals still out (open, overdue, lost) at any kiosk;
    404 when the cloud knows neither."""
    database = _service(request).store.db
    rentals = rider_rentals(database, person_id)
    rider = None
    roster: CloudRoster | None = request.app.state.roster
    after = rider_after(database, person_id) if roster is not None else None
    if roster is not None and after is not None:
        found = roster.riders(after, 1)
        if found and found[0].person_id == person_id:
            rider = rider_out(found[0])
    if rider is None and not rentals.rentals:
        raise Problem(404, "unknown_rider", f"no rider {person_id!r} and no rental of theirs")
    return RiderView(person_id=person_id, rider=rider, rentals=rentals)
