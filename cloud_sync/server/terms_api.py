"""Changing a rider's terms without their templates: the operator's entitlements and the
rider's claim code set from the app (see ``rider_terms``).

``PATCH /v1/admin/riders/{id}`` changes any of ``may_rent``, ``max_open_rentals``,
``boarding_allowed`` and ``valid_until`` (``null`` clears it): an admin may change any, a
support operator only ``may_rent`` (block or unblock the rider).
``PUT /v1/riders/{id}/claim`` (app token) sets or changes the rider's claim code: the
cloud keeps only its salted hash, sealed, and never returns or logs it. Either way the
kiosks receive the new terms at their next roster pull, as a small sealed terms row.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import Field, field_validator

from cloud_sync.claim_code import CLAIM_MAX_DIGITS, CLAIM_MIN_DIGITS, ClaimFormatError, hash_claim
from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.deps import App, Support, caller_of, refuse_unless
from cloud_sync.server.models import PERSON_ID_PATTERN, RiderChange, RiderOut, _Body, iso_date
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses
from cloud_sync.server.rider_terms import TermsChange
from cloud_sync.server.roster import rider_out
from cloud_sync.server.roster_api import cloud_roster

_BODY_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(
    400, 401, 403, 404, 413, 415, 422, 503
)
PersonId = Annotated[str, Path(min_length=1, max_length=128, pattern=PERSON_ID_PATTERN)]

router = APIRouter(route_class=StrictJSONRoute)


class TermsIn(_Body):
    """The entitlements to change; a field left out stays as it is."""

    may_rent: bool | None = None
    max_open_rentals: int | None = Field(default=None, ge=0, le=100)
    boarding_allowed: bool | None = None
    valid_until: date | None = Field(default=None, description="YYYY-MM-DD; null clears it")

    @field_validator("valid_until", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        return iso_date(value)

    def change(self) -> TermsChange:
        if not self.model_fields_set:
            raise Problem(422, "nothing_to_change", "name at least one entitlement to change")
        for name in ("may_rent", "max_open_rentals", "boarding_allowed"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise Problem(422, "invalid_terms", f"{name} cannot be null")
        return TermsChange(
            may_rent=self.may_rent,
            max_open_rentals=self.max_open_rentals,
            boarding_allowed=self.boarding_allowed,
            valid_until=self.valid_until,
            clear_valid_until="valid_until" in self.model_fields_set and self.valid_until is None,
        )


class ClaimIn(_Body):
    """The claim code the rider chose in the app."""

    code: str = Field(
        min_length=CLAIM_MIN_DIGITS,
        max_length=CLAIM_MAX_DIGITS,
        description=f"{CLAIM_MIN_DIGITS} to {CLAIM_MAX_DIGITS} digits",
    )


@router.patch(
    "/v1/admin/riders/{person_id}",
    response_model=RiderOut,
    dependencies=[Support],
    responses=_BODY_ERRORS,
)
def set_terms(request: Request, person_id: PersonId, body: TermsIn) -> RiderOut:
    """Change a rider's entitlements without resending templates; kiosks receive them at
    their next roster pull. Support operators may change ``may_rent`` alone (block or
    unblock); the other entitlements need an admin."""
    change = body.change()
    caller = caller_of(request)
    if body.model_fields_set - {"may_rent"}:
        refuse_unless(caller, "admin", "changing entitlements other than may_rent")
    roster = cloud_roster(request)
    set_fields = body.model_dump(include=body.model_fields_set, mode="json")
    entry = caller.entry("rider.change", person_id, **set_fields)
    roster.set_terms(person_id, change, also=entry.write)
    found = roster.rider(person_id)
    if found is None:  # deleted a moment later
        raise Problem(404, "unknown_rider", f"no rider {person_id!r} in the roster")
    return rider_out(found)


@router.put(
    "/v1/riders/{person_id}/claim",
    response_model=RiderChange,
    dependencies=[App],
    responses=_BODY_ERRORS,
)
def set_claim(request: Request, person_id: PersonId, body: ClaimIn) -> RiderChange:
    """Set or change a rider's claim code (only its salted hash is kept, sealed)."""
    try:
        hashed = hash_claim(body.code)
    except ClaimFormatError as exc:
        raise Problem(422, "invalid_claim", str(exc)) from None
    entry = caller_of(request).entry("rider.claim", person_id)
    version, _ = cloud_roster(request).set_terms(
        person_id, TermsChange(claim_hash=hashed), also=entry.write
    )
    return RiderChange(person_id=person_id, roster_version=version)
