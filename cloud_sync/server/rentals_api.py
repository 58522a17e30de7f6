"""The kiosk's view of its own rentals: which of them the cloud has closed.

A powerbank rented at kiosk A and returned at kiosk B closes the rental in the cloud
(``cloud_sync.server.reconcile``); ``GET /v1/rentals:closed?since=N`` tells kiosk A, so
that its offline limit of open rentals per rider frees up. Signed by the kiosk like
``GET /v1/roster`` (signature, nonce, clock skew). Every rental the cloud closes gets the
next number of its kiosk's ``closed_seq``; the answer lists the kiosk's own rentals with a
number above ``since``, in that order, at most ``limit``, and the cursor to send next.
Sending the same cursor again gets the same rentals again: the kiosk's ledger closes each
once. A cursor beyond the kiosk's last number (a database restored from a backup) is
answered with that last number, so the kiosk's cursor comes back into range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request

from cloud_sync.events import MAX_SEQ
from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.deps import client_source, raw_target
from cloud_sync.server.models import ClosedRentalOut, ClosedRentals
from cloud_sync.server.ratelimit import limited_responses

if TYPE_CHECKING:
    from cloud_sync.server.app import Service

CLOSED_PATH = "/v1/rentals:closed"
MAX_PAGE = 1000
_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(401, 403, 422, 503)

router = APIRouter(route_class=StrictJSONRoute)


@router.get(CLOSED_PATH, response_model=ClosedRentals, responses=_ERRORS)
def closed_rentals(
    request: Request,
    since: Annotated[int, Query(ge=0, le=MAX_SEQ, description="the cursor last answered")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 500,
) -> ClosedRentals:
    """This kiosk's rentals closed in the cloud (e.g. returned at another kiosk) since a
    cursor."""
    svc: Service = request.app.state.service
    signed = svc.authenticate(
        request.method,
        raw_target(request),
        dict(request.headers),
        b"",
        client_source(request),
        "pull",
    )  # its nonce is spent there
    found = svc.store.closed_rentals(signed.kiosk_id, since, limit)
    cursor = found[-1].closed_seq if found else since
    if not found and since > 0:  # a cursor from beyond this database (restored from a backup)
        cursor = min(since, svc.store.last_closed_seq(signed.kiosk_id))
    state_log = getattr(request.state, "log", None)
    if isinstance(state_log, dict):
        state_log.update(kiosk_id=signed.kiosk_id, since=since, closed=len(found), cursor=cursor)
    return ClosedRentals(
        rentals=[
            ClosedRentalOut(
                rental_id=r.rental_id, returned_at=r.returned_at, return_kiosk_id=r.return_kiosk_id
            )
            for r in found
        ],
        cursor=cursor,
        more=len(found) == limit,
    )
