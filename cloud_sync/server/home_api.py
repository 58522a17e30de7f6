"""A rider's home kiosk: the kiosk whose automatic set they are in first (``auto_sets``).

``PUT /v1/admin/riders/{id}/home`` (support or admin) and ``PUT /v1/riders/{id}/home``
(the riders' app) set it, ``{"kiosk_id": null}`` clears it; a kiosk that is not
registered is a 422 ``unknown_kiosk``, a revoked one a 409 ``kiosk_revoked``. The kiosks'
sets are recomputed in the same transaction, so the home kiosk hears of the rider at its
next pull. Deleting the rider deletes their home too (``erasure``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from cloud_sync.events import KIOSK_ID_PATTERN
from cloud_sync.server import auto_sets
from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.deps import App, Support, caller_of
from cloud_sync.server.models import PERSON_ID_PATTERN, _Body
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses
from cloud_sync.server.rider_fleet import hold_roster

_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(
    400, 401, 403, 404, 409, 413, 415, 422, 503
)
PersonId = Annotated[str, Path(min_length=1, max_length=128, pattern=PERSON_ID_PATTERN)]

router = APIRouter(route_class=StrictJSONRoute)


class HomeIn(_Body):
    kiosk_id: str | None = Field(
        max_length=64, pattern=KIOSK_ID_PATTERN, description="a registered kiosk; null: none"
    )


class HomeOut(BaseModel):
    person_id: str
    kiosk_id: str | None
    kiosks_changed: int = Field(description="kiosks whose automatic set changed with this")


def set_home(request: Request, person_id: str, kiosk_id: str | None) -> HomeOut:
    """The change itself, for the operator's route, the app's and the CLI's."""
    service = request.app.state.service
    now = datetime.now(UTC)
    with service.store.db.transaction() as tx:
        hold_roster(tx)  # a deletion racing this one either comes first or sees the home
        if not tx.rows("SELECT 1 FROM roster_riders WHERE person_id = ?", [person_id]):
            raise Problem(404, "unknown_rider", f"no rider {person_id!r} in the roster")
        kiosk = tx.rows("SELECT disabled FROM kiosks WHERE kiosk_id = ?", [kiosk_id])
        if kiosk_id is not None and not kiosk:
            raise Problem(422, "unknown_kiosk", f"no kiosk {kiosk_id!r} is registered")
        if kiosk and kiosk[0][0]:
            raise Problem(
                409,
                "kiosk_revoked",
                f"kiosk {kiosk_id!r} was revoked: it recognises no one; choose another",
            )
        auto_sets.set_home(tx, person_id, kiosk_id, now)
        settings = service.settings
        changed = auto_sets.refresh(tx, settings.auto_set_size, settings.auto_set_days, now)
        caller_of(request).entry("rider.home", person_id, kiosk_id=kiosk_id).write(tx)
    return HomeOut(person_id=person_id, kiosk_id=kiosk_id, kiosks_changed=changed)


@router.put(
    "/v1/admin/riders/{person_id}/home",
    response_model=HomeOut,
    dependencies=[Support],
    responses=_ERRORS,
)
def operator_home(request: Request, person_id: PersonId, body: HomeIn) -> HomeOut:
    """Set or clear a rider's home kiosk; its automatic set holds them from the next pull."""
    return set_home(request, person_id, body.kiosk_id)


@router.put(
    "/v1/riders/{person_id}/home",
    response_model=HomeOut,
    dependencies=[App],
    responses=_ERRORS,
)
def app_home(request: Request, person_id: PersonId, body: HomeIn) -> HomeOut:
    """The riders' app sets or clears the rider's home kiosk."""
    return set_home(request, person_id, body.kiosk_id)
