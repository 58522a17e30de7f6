"""``GET /v1/admin/riders/{id}/erasure``: a deleted rider's erasure across the fleet (see
``cloud_sync.server.erasure``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.deps import Admin
from cloud_sync.server.erasure import erasure_status
from cloud_sync.server.models import PERSON_ID_PATTERN
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses

_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(401, 403, 404, 422, 503)

router = APIRouter(route_class=StrictJSONRoute)


class KioskErasureOut(BaseModel):
    kiosk_id: str
    state: str  # confirmed, up_to_date, never_held, pending, disabled
    erased_at: str | None
    last_seen: str | None


class ErasureOut(BaseModel):
    person_id: str
    pseudonym: str
    roster_version: int
    deleted_at: str
    reason: str
    kept_for_open_rentals: bool
    kiosks: list[KioskErasureOut]
    erased: int
    waiting: list[str]


@router.get(
    "/v1/admin/riders/{person_id}/erasure",
    response_model=ErasureOut,
    dependencies=[Admin],
    responses=_ERRORS,
)
def rider_erasure(
    request: Request,
    person_id: Annotated[str, Path(min_length=1, max_length=128, pattern=PERSON_ID_PATTERN)],
) -> ErasureOut:
    """A deleted rider's erasure: when and why, their pseudonym, and each kiosk's receipt
    (or that it holds a roster past the deletion, never held them, or has not yet)."""
    with request.app.state.service.store.db.transaction() as tx:
        found = erasure_status(tx, person_id)
    if found is None:
        raise Problem(404, "no_erasure", f"no deletion of rider {person_id!r} is on record")
    return ErasureOut.model_validate(found)
