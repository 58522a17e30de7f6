"""Events: the envelope every kiosk event travels in, and a typed payload per type.

An event has a ULID ``id``, the ``kiosk_id``, a per-kiosk increasing ``seq``, its
``type``, ``occurred_at`` in UTC, the envelope ``schema`` version and a ``payload`` whose
model is chosen by ``type``. Payloads never carry a face image or template.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloud_sync.errors import EventError

SCHEMA_VERSION = 1


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KioskStarted(_Payload):
    version: str
    mode: Literal["rental", "boarding", "demo"]


class FaceRecognised(_Payload):
    person_id: str = Field(min_length=1, max_length=128)
    distance: float = Field(ge=0)
    margin: float | None = None
    frames: int = Field(default=1, ge=1)
    model: str


class FaceUnrecognised(_Payload):
    count: int = Field(default=1, ge=1)
    reason: str = Field(min_length=1, max_length=200)


class RentalStarted(_Payload):
    rental_id: str = Field(min_length=1, max_length=64)
    person_id: str = Field(min_length=1, max_length=128)
    slot: int = Field(ge=1, le=64)
    powerbank_id: str = Field(min_length=1, max_length=64)
    request_id: str = Field(min_length=1, max_length=64)


class RentalFailed(_Payload):
    rental_id: str = Field(min_length=1, max_length=64)
    person_id: str = Field(min_length=1, max_length=128)
    slot: int | None = Field(default=None, ge=1, le=64)
    reason: str = Field(min_length=1, max_length=200)


class RentalReturned(_Payload):
    slot: int = Field(ge=1, le=64)
    powerbank_id: str = Field(min_length=1, max_length=64)
    charge: int | None = Field(default=None, ge=0, le=100)


class BoardingRecorded(_Payload):
    person_id: str = Field(min_length=1, max_length=128)
    route: str = Field(max_length=64)
    vehicle: str = Field(max_length=64)


class SlotFault(_Payload):
    slot: int | None = Field(default=None, ge=1, le=64)
    code: str = Field(min_length=1, max_length=64)
    detail: str = Field(default="", max_length=500)


class SlotEjected(_Payload):
    """A powerbank ejected at a technician's request (not a rental)."""

    slot: int = Field(ge=1, le=64)
    powerbank_id: str | None = Field(default=None, max_length=64)
    operator: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=200)


class RosterApplied(_Payload):
    from_version: int = Field(ge=0)
    to_version: int = Field(ge=0)
    upserts: int = Field(ge=0)
    deletions: int = Field(ge=0)


PAYLOADS: dict[str, type[_Payload]] = {
    "kiosk.started": KioskStarted,
    "face.recognised": FaceRecognised,
    "face.unrecognised": FaceUnrecognised,
    "rental.started": RentalStarted,
    "rental.failed": RentalFailed,
    "rental.returned": RentalReturned,
    "boarding.recorded": BoardingRecorded,
    "slot.fault": SlotFault,
    "slot.ejected": SlotEjected,
    "roster.applied": RosterApplied,
}

EventType = Literal[
    "kiosk.started",
    "face.recognised",
    "face.unrecognised",
    "rental.started",
    "rental.failed",
    "rental.returned",
    "boarding.recorded",
    "slot.fault",
    "slot.ejected",
    "roster.applied",
]

Payload = (
    KioskStarted
    | FaceRecognised
    | FaceUnrecognised
    | RentalStarted
    | RentalFailed
    | RentalReturned
    | BoardingRecorded
    | SlotFault
    | SlotEjected
    | RosterApplied
)


class Event(BaseModel):
    """One event, as stored in the outbox and sent to the cloud."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$")
    kiosk_id: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=1)
    type: EventType
    occurred_at: datetime
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema", ge=1)
    payload: Payload

    @model_validator(mode="before")
    @classmethod
    def _payload_by_type(cls, data: Any) -> Any:
        if isinstance(data, dict):
            model = PAYLOADS.get(str(data.get("type")))
            payload = data.get("payload")
            if model is not None and isinstance(payload, dict):
                data = {**data, "payload": model.model_validate(payload)}
        return data

    @model_validator(mode="after")
    def _payload_matches_type(self) -> Event:
        if not isinstance(self.payload, PAYLOADS[self.type]):
            raise ValueError(f"payload does not match type {self.type}")
        return self

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must carry a time zone")
        return value.astimezone(UTC)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def payload_for(event_type: str, **fields: Any) -> _Payload:
    """Validate ``fields`` as the payload of ``event_type``."""
    model = PAYLOADS.get(event_type)
    if model is None:
        raise EventError(f"unknown event type {event_type!r}")
    try:
        return model(**fields)
    except ValueError as exc:
        raise EventError(f"invalid {event_type} payload: {exc}") from None
