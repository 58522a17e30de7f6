"""Consent over HTTP: the consent texts the cloud accepts, a rider's consent record, and
withdrawing it (which deletes the rider everywhere). See ``consent`` and docs/privacy.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field

from cloud_sync.server import consent
from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.consent import ConsentOut, ConsentTextIn, ConsentTextOut
from cloud_sync.server.deps import ADMIN_ERRORS, Admin, Support, caller_of
from cloud_sync.server.models import PERSON_ID_PATTERN, RiderChange
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses
from cloud_sync.server.roster_api import cloud_roster

if TYPE_CHECKING:
    from cloud_sync.server.app import Service

router = APIRouter(route_class=StrictJSONRoute)
_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(401, 403, 404, 422, 503)
_WITHDRAW_ERRORS = limited_responses(401, 403, 404, 409, 422, 503)
_BODY_ERRORS = limited_responses(400, 401, 403, 409, 413, 415, 422, 503)
PersonId = Annotated[str, Path(min_length=1, max_length=128, pattern=PERSON_ID_PATTERN)]


class Withdrawal(RiderChange):
    consent: ConsentOut | None = Field(
        description="null for a rider enrolled before consent records"
    )
    already_deleted: bool = Field(
        False,
        description="the rider was deleted before (by an operator, retention or an earlier "
        "withdrawal): the withdrawal is marked on their consent record, once; "
        "roster_version is the deletion's",
    )


def _service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


@router.get(
    "/v1/admin/consent-texts",
    response_model=list[ConsentTextOut],
    dependencies=[Support],
    responses=ADMIN_ERRORS,
)
def list_texts(request: Request) -> list[ConsentTextOut]:
    """The consent texts riders may consent to: version, SHA-256, length, when added."""
    return consent.texts(_service(request).store.db)


@router.post(
    "/v1/admin/consent-texts",
    response_model=ConsentTextOut,
    status_code=201,
    dependencies=[Admin],
    responses={200: {"model": ConsentTextOut}, **_BODY_ERRORS},
)
def add_text(request: Request, body: ConsentTextIn, response: Response) -> ConsentTextOut:
    """Accept a consent text under a version (201); the same text again is 200 and no
    change; another text under a version that exists is 409: texts never change."""
    database = _service(request).store.db
    entry = caller_of(request).entry("consent_text.add", body.version)
    added, _ = consent.add_text(database, body.version, body.text, entry)
    if not added:
        response.status_code = 200
    return next(item for item in consent.texts(database) if item.version == body.version)


@router.get(
    "/v1/admin/riders/{person_id}/consent",
    response_model=ConsentOut,
    dependencies=[Support],
    responses=_ERRORS,
)
def show_consent(request: Request, person_id: PersonId) -> ConsentOut:
    """The rider's consent record (the newest); withdrawn ones say when and by whom."""
    found = consent.current(_service(request).store.db, person_id)
    if found is None:
        raise Problem(404, "no_consent", f"no consent record for rider {person_id!r}")
    return found


@router.post(
    "/v1/admin/riders/{person_id}/consent:withdraw",
    response_model=Withdrawal,
    dependencies=[Admin],
    responses=_WITHDRAW_ERRORS,
)
def withdraw_consent(request: Request, person_id: PersonId) -> Withdrawal:
    """The rider withdrew their consent: delete them everywhere (every kiosk drops them at
    its next pull) and keep the withdrawal (when, by whom) on their consent record. For a
    rider deleted before, the withdrawal is still marked on the record (once); 404 only
    for a rider the cloud never deleted."""
    entry = caller_of(request).entry("rider.consent_withdraw", person_id)
    version, before = consent.withdraw(cloud_roster(request), person_id, entry)
    found = consent.current(_service(request).store.db, person_id)
    return Withdrawal(
        person_id=person_id, roster_version=version, consent=found, already_deleted=before
    )
