"""The roster routes: a kiosk's signed delta, and the operator's rider administration.

``GET /v1/roster?since=N`` is signed by the kiosk like an event batch. It always answers
200 with a body signed by the roster key: the delta from N to the current version (a full
snapshot when N is 0, older than the tombstones kept, or older than the last data-key
rotation), or, when N is the current version, a statement that the kiosk is up to date.
Both name the kiosk and carry the nonce of its request, so an answer cannot be replayed
to a later request, and both carry ``X-Roster-Version``. There is no unsigned "nothing
changed" answer: a kiosk refuses one. A revoked kiosk gets a signed order to wipe its
roster instead, bound to its request the same way (``revocation``). The rider routes need an operator's token: reading
needs the support role, changing needs admin (``deps``); each change is in the audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cloud_sync.events import MAX_SEQ
from cloud_sync.roster_wire import CurrentBody
from cloud_sync.server import consent
from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.deps import (
    ADMIN_ERRORS,
    Admin,
    Support,
    caller_of,
    client_source,
    raw_target,
)
from cloud_sync.server.models import (
    PERSON_ID_PATTERN,
    RiderChange,
    RiderIn,
    RiderOut,
    RosterStatus,
    RotationOut,
    SignedDelta,
)
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses
from cloud_sync.server.revocation import KioskRevoked
from cloud_sync.server.revoke_api import wipe_response
from cloud_sync.server.roster import CloudRoster, rider_out, roster_status

if TYPE_CHECKING:
    from cloud_sync.server.app import Service

VERSION_HEADER = "X-Roster-Version"
_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(401, 403, 404, 409, 422, 503)
#: A route with a body may also answer 400 (not strict JSON), 413 (too large) and 415 (not
#: JSON, or an encoding other than gzip): see ``bodies``.
_BODY_ERRORS = limited_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)

router = APIRouter(route_class=StrictJSONRoute)


class SignedCurrent(BaseModel):
    """``GET /v1/roster`` for a kiosk that is up to date (see docs/roster.md)."""

    current: CurrentBody
    signature: str = Field(description="base64 Ed25519 over the canonical JSON of current")


def cloud_roster(request: Request) -> CloudRoster:
    roster: CloudRoster | None = request.app.state.roster
    if roster is None:
        raise Problem(
            503,
            "roster_not_configured",
            "this cloud serves no roster: its roster key files are not configured "
            "(KIOSK_CLOUD_ROSTER_KEY_FILE, KIOSK_CLOUD_ROSTER_DATA_KEY_FILE)",
        )
    return roster


def _service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


@router.get(
    "/v1/roster",
    responses={
        200: {
            "model": SignedDelta | SignedCurrent,
            "description": "The signed delta (or full snapshot), or, when nothing changed "
            "since that version, the signed statement that the kiosk is up to date; both "
            "carry the nonce of the request.",
        },
        **_ERRORS,
    },
    response_class=Response,
)
def roster_delta(request: Request, since: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0) -> Response:
    """This kiosk's roster delta since a version, or the statement that it is current;
    signed by the roster key and bound to the request's nonce."""
    svc = _service(request)
    try:
        signed = svc.authenticate(
            request.method,
            raw_target(request),
            dict(request.headers),
            b"",
            client_source(request),
            "pull",
        )
    except KioskRevoked as revoked:  # its signature checked: it gets the order to wipe
        signed = revoked.signed
        svc.store.use_nonce(signed.kiosk_id, signed.nonce)  # admitted requests spent theirs
    kiosk = svc.store.kiosk(signed.kiosk_id)  # fresh: a box key may have just been set
    if kiosk is not None and kiosk.disabled:  # revoked, maybe since its key was cached
        return wipe_response(request, signed.kiosk_id, signed.nonce)
    if kiosk is None or not kiosk.box_public_key:
        raise Problem(
            409,
            "no_box_key",
            f"kiosk {signed.kiosk_id!r} has no box public key registered; register it "
            "(box_public_key) to receive the roster",
        )
    delta = cloud_roster(request).delta(kiosk.kiosk_id, kiosk.box_public_key, since, signed.nonce)
    state_log = getattr(request.state, "log", None)
    if isinstance(state_log, dict):
        state_log.update(
            kiosk_id=kiosk.kiosk_id,
            since=since,
            roster_version=delta.version,
            up_to_date=delta.up_to_date,
            full=delta.full,
            upserts=delta.upserts,
            deletions=delta.deletions,
            terms=delta.terms,
            fleet=delta.fleet,
        )
    headers = {VERSION_HEADER: str(delta.version)}
    return Response(delta.body, media_type="application/json", headers=headers)


@router.get(
    "/v1/admin/roster", response_model=RosterStatus, dependencies=[Support], responses=ADMIN_ERRORS
)
def roster_info(request: Request) -> RosterStatus:
    """The roster's version, counts, data-key id and public key."""
    return roster_status(cloud_roster(request))


@router.get(
    "/v1/admin/riders",
    response_model=list[RiderOut],
    dependencies=[Support],
    responses=ADMIN_ERRORS,
)
def list_riders(
    request: Request,
    after: Annotated[
        str,
        Query(
            max_length=128,
            pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$",
            description="the last id of the page before",
        ),
    ] = "",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[RiderOut]:
    """Riders in id order, with names and entitlements; never a template."""
    return [rider_out(rider) for rider in cloud_roster(request).riders(after, limit)]


@router.post(
    "/v1/admin/riders",
    status_code=201,
    response_model=RiderChange,
    dependencies=[Admin],
    responses=_BODY_ERRORS,
)
def add_rider(request: Request, body: RiderIn) -> RiderChange:
    """Add a rider with their templates (sealed before storing) and their consent record
    (422 when its text version is unknown: nothing is stored); 409 if they exist unless
    ``replace``."""
    action = "rider.replace" if body.replace else "rider.add"
    entry = caller_of(request).entry(action, body.person_id, consent=body.consent.version)
    record = consent.recorder(body.person_id, body.consent, entry)
    version = cloud_roster(request).add(body.person_id, body.to_record(), body.replace, record)
    return RiderChange(person_id=body.person_id, roster_version=version)


@router.delete(
    "/v1/admin/riders/{person_id}",
    response_model=RiderChange,
    dependencies=[Admin],
    responses=_ERRORS,
)
def delete_rider(
    request: Request,
    person_id: Annotated[str, Path(min_length=1, max_length=128, pattern=PERSON_ID_PATTERN)],
) -> RiderChange:
    """Delete a rider; every kiosk drops them at its next roster pull."""
    entry = caller_of(request).entry("rider.delete", person_id)
    version = cloud_roster(request).delete(person_id, also=entry.write)
    return RiderChange(person_id=person_id, roster_version=version)


@router.post(
    "/v1/admin/roster:rotate-key",
    response_model=RotationOut,
    dependencies=[Admin],
    responses=_ERRORS,
)
def rotate_key(request: Request) -> RotationOut:
    """Re-seal every rider under a new data key; kiosks get full snapshots under it."""
    done = cloud_roster(request).rotate_key()
    entry = caller_of(request).entry("roster.rotate_key", done.key_id, version=done.version)
    entry.save(_service(request).store.db)
    return RotationOut(data_key_id=done.key_id, roster_version=done.version, riders=done.riders)
