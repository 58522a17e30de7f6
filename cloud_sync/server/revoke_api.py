"""The route that revokes a kiosk, and the wipe order a revoked kiosk's roster pull gets.

``POST /v1/admin/kiosks/{kiosk_id}:revoke`` needs an admin (``deps``) and is in the audit
log (``kiosk.revoke``). What revoking does is ``revocation``'s; the route only maps it to
an answer: 200 with what changed, or with ``already_revoked`` and nothing changed; 404
``unknown_kiosk`` for a kiosk that is not registered, nothing changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cloud_sync.events import KIOSK_ID_PATTERN
from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.deps import Admin, caller_of
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses
from cloud_sync.server.revocation import revoke, wipe_answer

if TYPE_CHECKING:
    from cloud_sync.server.app import Service

_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(401, 403, 404, 503)

router = APIRouter(route_class=StrictJSONRoute)


class RevocationOut(BaseModel):
    """What ``POST /v1/admin/kiosks/{kiosk_id}:revoke`` did."""

    kiosk_id: str
    revoked: bool = Field(True, description="always true: the kiosk is revoked now")
    already_revoked: bool = Field(
        description="it was revoked before: nothing changed, no key was rotated"
    )
    data_key_id: str | None = Field(
        description="the roster's new data key (null: already revoked, or no roster here)"
    )
    roster_version: int | None = Field(description="the roster version of the rotation")
    riders: int = Field(description="rider rows re-sealed under the new data key")


@router.post(
    "/v1/admin/kiosks/{kiosk_id}:revoke",
    response_model=RevocationOut,
    dependencies=[Admin],
    responses=_ERRORS,
)
def revoke_kiosk(
    request: Request,
    kiosk_id: Annotated[str, Path(min_length=1, max_length=64, pattern=KIOSK_ID_PATTERN)],
) -> RevocationOut:
    """Revoke a kiosk (stolen, or its SD card copied): the cloud refuses its requests from
    now on, re-seals the roster under a new data key for every other kiosk, and answers
    its next roster pull with a signed order to wipe its roster. Revoking it again
    changes nothing and says so."""
    svc: Service = request.app.state.service
    entry = caller_of(request).entry("kiosk.revoke", kiosk_id)
    done = revoke(svc.store, request.app.state.roster, kiosk_id, audit=entry.write)
    svc.forget_keys()  # this process refuses it at once; other replicas within seconds
    return RevocationOut(
        kiosk_id=kiosk_id,
        already_revoked=done.already,
        data_key_id=done.data_key_id,
        roster_version=done.roster_version,
        riders=done.riders,
    )


def wipe_response(request: Request, kiosk_id: str, nonce: str) -> Response:
    """``GET /v1/roster``'s answer to a revoked kiosk (its signature checked, its nonce
    spent): 200 with the wipe order signed by the roster key for this request."""
    roster = request.app.state.roster
    if roster is None:
        raise Problem(403, "kiosk_revoked", f"kiosk {kiosk_id!r} was revoked")
    state_log = getattr(request.state, "log", None)
    if isinstance(state_log, dict):
        state_log.update(kiosk_id=kiosk_id, revoked=True, wipe=True)
    return Response(wipe_answer(roster, kiosk_id, nonce), media_type="application/json")
