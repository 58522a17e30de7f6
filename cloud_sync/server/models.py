"""Bodies of the cloud API's administration, provisioning and health routes.

Every body a client sends (``_Body``) is read strictly: each value must have the JSON type
the schema names (``"5"`` is not a number, ``1`` not a boolean), dates are ``YYYY-MM-DD``
text, and no string may hold a character a store cannot keep (``wire_values``); a body
that breaks any of it is a 422 naming the field.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud_sync.claim_code import ClaimHashError, check_claim_hash
from cloud_sync.events import KIOSK_ID_PATTERN
from cloud_sync.roster_wire import (
    ENCODING_SIZE,
    DeltaBody,
    Entitlements,
    RiderRecord,
    Template,
)
from cloud_sync.wire_values import unstorable

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class _Body(BaseModel):
    """A request body: strict types, no unknown fields, only storable text."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if isinstance(value, str):
            why = unstorable(value)
            if why is not None:
                raise ValueError(why)
        return value


def _box_key_field() -> Any:
    return Field(
        default=None,
        min_length=40,
        max_length=64,
        description="base64 X25519 key (32 raw bytes) that roster data keys are wrapped for; "
        "a kiosk registered without one cannot pull the roster",
    )


PERSON_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class KioskIn(_Body):
    kiosk_id: str = Field(pattern=KIOSK_ID_PATTERN)
    public_key: str = Field(min_length=40, max_length=64, description="base64 Ed25519 key")
    box_public_key: str | None = _box_key_field()
    site: str = Field(default="", max_length=200)


class KioskOut(BaseModel):
    kiosk_id: str
    public_key: str
    site: str
    disabled: bool
    created_at: str
    box_public_key: str | None = None


class ProvisionOut(KioskOut):
    roster_public_key: str | None = Field(
        description="base64 Ed25519 key that signs roster deltas: pin it on the kiosk "
        "(null when this cloud serves no roster)"
    )
    roster_model: str = Field(description="the encoder model the roster's deltas name")


class TokenIn(_Body):
    kiosk_id: str | None = Field(default=None, pattern=KIOSK_ID_PATTERN)
    site: str = Field(default="", max_length=200)
    ttl_s: float | None = Field(default=None, ge=60, le=30 * 86400)


class TokenOut(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored")
    expires_at: str
    kiosk_id: str | None


class ProvisionIn(_Body):
    #: Its largest body (``bodies.body_limit``): its fields fit in well under 1 KiB.
    max_body_bytes: ClassVar[int] = 4 * 1024

    token: str = Field(min_length=8, max_length=100)
    kiosk_id: str = Field(pattern=KIOSK_ID_PATTERN)
    public_key: str = Field(min_length=40, max_length=64)
    box_public_key: str | None = _box_key_field()
    site: str | None = Field(default=None, max_length=200)


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    schema_version: int


class TemplateIn(_Body):
    model: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    vector: list[float] = Field(
        min_length=ENCODING_SIZE, max_length=ENCODING_SIZE, description="128 float32 values"
    )

    @field_validator("vector")
    @classmethod
    def _finite(cls, value: list[float]) -> list[float]:
        if not all(math.isfinite(item) and abs(item) < 1e6 for item in value):
            raise ValueError("every value must be a finite number")
        return value


def iso_date(value: Any) -> Any:
    """A ``YYYY-MM-DD`` text as a date (a strict body's date fields read through this)."""
    if isinstance(value, str):
        if not _DATE.fullmatch(value):
            raise ValueError("must be a date as YYYY-MM-DD")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("is not a valid date") from None
    if value is not None and (not isinstance(value, date) or isinstance(value, datetime)):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


CONSENT_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ConsentChannel = Literal["app", "kiosk", "desk"]


def rfc3339(value: Any) -> Any:
    """An RFC 3339 text with its offset as an aware datetime in UTC (strict bodies' times,
    the audit log's ``since``); ``ValueError`` for a time that is not one, or that falls
    outside the years 1 to 9999 once in UTC (``0001-01-01T00:00:00+14:00``)."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be a time as RFC 3339, e.g. 2026-01-02T03:04:05Z") from None
        if moment.tzinfo is None:
            raise ValueError("must name its offset (Z or +HH:MM)")
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise ValueError("is outside the years 1 to 9999 once converted to UTC") from None
    return value


class ConsentIn(_Body):
    """The rider's consent to the processing of their face templates (docs/privacy.md)."""

    version: str = Field(
        min_length=1,
        max_length=64,
        pattern=CONSENT_VERSION_PATTERN,
        description="the consent text's version, as added with `kiosk-cloud consent-texts add`",
    )
    given_at: datetime = Field(description="when the rider consented (RFC 3339, with offset)")
    channel: ConsentChannel = Field(description="where: the app, a kiosk, a service desk")
    taken_by: str = Field(
        min_length=1, max_length=200, description="the operator who took it, or 'app'"
    )

    @field_validator("given_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        return rfc3339(value)


class RiderIn(_Body):
    """A rider to add: stored sealed; the cloud keeps no name or template in clear. The
    consent record is required and must name a consent text the cloud knows."""

    #: Its largest body (``bodies.body_limit``): 64 templates of 128 numbers, and room.
    max_body_bytes: ClassVar[int] = 1024 * 1024

    person_id: str = Field(min_length=1, max_length=128, pattern=PERSON_ID_PATTERN)
    display_name: str = Field(default="", max_length=200)
    templates: list[TemplateIn] = Field(min_length=1, max_length=64)
    may_rent: bool = True
    max_open_rentals: int = Field(default=1, ge=0, le=100)
    boarding_allowed: bool = True
    valid_until: date | None = None
    claim_hash: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the claim code's salted scrypt hash (cloud_sync.claim_code.hash_claim); "
        "one the kiosks cannot check is refused",
    )
    replace: bool = Field(default=False, description="replace a rider who exists")
    consent: ConsentIn

    @field_validator("valid_until", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        return iso_date(value)

    @field_validator("claim_hash")
    @classmethod
    def _checkable(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_claim_hash(value)
            except ClaimHashError as exc:  # its reason names no part of the hash
                raise ValueError(f"{exc} (make it with cloud_sync.claim_code.hash_claim)") from None
        return value

    def to_record(self) -> RiderRecord:
        return RiderRecord(
            display_name=self.display_name,
            templates=tuple(
                Template(item.model, np.asarray(item.vector, dtype=np.float32))
                for item in self.templates
            ),
            entitlements=Entitlements(
                may_rent=self.may_rent,
                max_open_rentals=self.max_open_rentals,
                boarding_allowed=self.boarding_allowed,
                valid_until=self.valid_until,
            ),
            claim_hash=self.claim_hash,
        )


class RiderOut(BaseModel):
    """A rider as listed: never a template."""

    person_id: str
    version: int
    display_name: str
    may_rent: bool
    max_open_rentals: int
    boarding_allowed: bool
    valid_until: date | None
    templates: dict[str, int] = Field(description="template count per encoder model")
    has_claim: bool
    updated_at: str


class RiderChange(BaseModel):
    person_id: str
    roster_version: int


class RosterStatus(BaseModel):
    version: int
    riders: int
    tombstones: int
    data_key_id: str | None
    key_version: int = Field(description="the roster version the data key was introduced at")
    tombstone_floor: int = Field(description="kiosks older than this get a full snapshot")
    roster_public_key: str
    model: str


class RotationOut(BaseModel):
    data_key_id: str
    roster_version: int
    riders: int


class SignedDelta(BaseModel):
    """``GET /v1/roster``: a delta signed by the roster key (see docs/roster.md)."""

    delta: DeltaBody
    signature: str = Field(description="base64 Ed25519 over the canonical JSON of delta")


class ClosedRentalOut(BaseModel):
    rental_id: str
    returned_at: str | None = Field(description="when the powerbank came back (kiosk clock)")
    return_kiosk_id: str | None = Field(description="the kiosk it was returned to")


class ClosedRentals(BaseModel):
    rentals: list[ClosedRentalOut] = Field(
        description="this kiosk's rentals closed in the cloud after the cursor, in the order "
        "the cloud closed them"
    )
    cursor: int = Field(ge=0, description="send as ``since`` next time")
    more: bool = Field(description="true when a full page was sent: ask again at once")
