"""Events: the envelope every kiosk event travels in, and a typed payload per type.

An event has a ULID ``id``, the ``kiosk_id``, a per-kiosk increasing ``seq``, its
``type``, ``occurred_at`` in UTC, the envelope ``schema`` version and a ``payload`` whose
model is chosen by ``type``. Payloads never carry a face image or a template in clear
(``template.proposed`` carries one sealed).

Every type belongs to a class that decides what the outbox may drop when its disk budget
runs out (``CLASS_OF``): ``money`` events (rentals, returns, boardings, ejections) are
never dropped, ``ops`` events only after every ``telemetry`` event is gone.

The wire format of ``POST /v1/events:batch`` (``BatchRequest``, ``BatchResponse``) lives
here too; ``cloud_sync.event_schemas`` turns all of it into the JSON Schemas under
``cloud_sync/schemas/``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cloud_sync.errors import EventError
from cloud_sync.wire_values import EARLIEST, first_unstorable, parse_time, printable

SCHEMA_VERSION = 1
SUPPORTED_SCHEMAS = frozenset({1})

ULID_PATTERN = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"  # 128 bits: the first character is 0-7
KIOSK_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
MAX_SEQ = 2**63 - 1


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KioskStarted(_Payload):
    version: str = Field(min_length=1, max_length=64)
    mode: Literal["rental", "boarding", "demo"]


class FaceRecognised(_Payload):
    person_id: str = Field(min_length=1, max_length=128)
    distance: float = Field(ge=0)
    margin: float | None = None
    frames: int = Field(default=1, ge=1, le=10_000)
    model: str = Field(min_length=1, max_length=128)


class FaceUnrecognised(_Payload):
    count: int = Field(default=1, ge=1, le=1_000_000)
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


class RiderRefused(_Payload):
    """A rider the kiosk recognised and turned away, without a picture or a template.

    ``reason``: ``blocked`` (account on hold), ``expired`` (membership), ``lost`` or
    ``overdue`` (a powerbank of theirs, anywhere in the fleet), ``open_rental`` (too many
    powerbanks out, fleet-wide), ``not_allowed`` (may not board here), ``no_powerbank``
    (none charged). ``count``: how many refusals of this rider for this reason the event stands
    for; the kiosk records the first at once and the repeats of the next minute or so
    (``flow.refusal_window_s``) as one event.
    """

    person_id: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    count: int = Field(default=1, ge=1, le=1_000_000)


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


EjectAttempt = Literal["presented", "taken", "relocked", "jammed", "refused", "no_answer", "failed"]


class SlotEjected(_Payload):
    """An eject a technician asked for (not a rental), and how it ended.

    ``outcome``: ``presented``, ``taken`` or ``relocked`` when the powerbank came out;
    ``jammed`` (the latch), ``refused`` (the board said no; ``detail`` names its code),
    ``no_answer`` (no valid answer: the board was silent, unreachable or garbled, so the
    eject may or may not have happened) or ``failed`` (anything else, in ``detail``).
    Events from before this field were only written for ejects that succeeded, hence the
    default.
    """

    slot: int = Field(ge=1, le=64)
    powerbank_id: str | None = Field(default=None, max_length=64)
    operator: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=200)
    outcome: EjectAttempt = "presented"
    detail: str = Field(default="", max_length=200)


class SlotService(_Payload):
    """A technician took a slot out of service (``enabled`` false) or put it back.

    ``board_confirmed`` is false when the board did not acknowledge it: the kiosk keeps
    its own flag anyway and offers no rental from a disabled slot.
    """

    slot: int = Field(ge=1, le=64)
    enabled: bool
    operator: str = Field(min_length=1, max_length=64)
    board_confirmed: bool


class KioskMaintenance(_Payload):
    """A technician (or a remote command) took the kiosk out of service, or back in."""

    on: bool
    operator: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=200)
    via: Literal["cli", "remote"] = "cli"


class RosterApplied(_Payload):
    from_version: int = Field(ge=0, le=MAX_SEQ)
    to_version: int = Field(ge=0, le=MAX_SEQ)
    upserts: int = Field(ge=0, le=10_000_000)
    deletions: int = Field(ge=0, le=10_000_000)


class RosterPurged(_Payload):
    """The kiosk deleted its whole roster (every template, every data key) by itself:
    ``silent``, no roster pull for ``roster.purge_after_h`` (``silent_s`` since the last);
    ``revoked``, the cloud ordered it. It pulls a full roster when it may again."""

    reason: Literal["silent", "revoked"]
    from_version: int = Field(ge=0, le=MAX_SEQ)
    riders: int = Field(ge=0, le=10_000_000)
    silent_s: float | None = Field(default=None, ge=0, le=100 * 365 * 86400)


class RosterErased(_Payload):
    """A rider the cloud deleted is gone from this kiosk's roster, its bytes off the disk:
    the receipt ``kiosk-cloud riders erasure`` counts (``roster_version``: the version that
    deleted them)."""

    person_id: str = Field(min_length=1, max_length=128)
    roster_version: int = Field(ge=1, le=MAX_SEQ)


SlotStateName = Literal[
    "empty", "charging", "ready", "ejecting", "awaiting_removal", "fault", "disabled"
]
BatteryHealth = Literal["hot", "not_charging"]


class SlotStatus(_Payload):
    """One slot in a ``kiosk.status``: its state as the kiosk shows it (``ready``: charged
    enough to rent), what it holds, and ``health`` when the kiosk stopped renting that
    powerbank (``hot``: at or above the kiosk's temperature limit; ``not_charging``: docked
    below full without gaining charge for too long)."""

    number: int = Field(ge=1, le=64)
    state: SlotStateName
    powerbank_id: str | None = Field(default=None, min_length=1, max_length=64)
    charge: int | None = Field(default=None, ge=0, le=100)
    temperature: int | None = Field(default=None, ge=-127, le=127, description="degrees C")
    health: BatteryHealth | None = None


class KioskStatus(_Payload):
    """The kiosk's periodic report of itself (``sync.status_interval_s``); the report's
    time is the event's ``occurred_at``. ``backlog``: events waiting in its outbox;
    ``out_of_service``: why it does not rent now, or null."""

    version: str = Field(min_length=1, max_length=64)
    roster_version: int = Field(ge=0, le=MAX_SEQ)
    backlog: int = Field(ge=0, le=1_000_000_000)
    board_online: bool
    out_of_service: str | None = Field(default=None, max_length=64)
    slots: list[SlotStatus] = Field(default_factory=list, max_length=64)

    @field_validator("slots")
    @classmethod
    def _each_slot_once(cls, slots: list[SlotStatus]) -> list[SlotStatus]:
        numbers = [slot.number for slot in slots]
        if len(set(numbers)) != len(numbers):
            raise ValueError("each slot number may appear once")
        return slots


class RosterEdited(_Payload):
    """A technician changed the kiosk's roster by hand (``kiosk enroll``, ``kiosk roster
    delete | rotate-key``): who, what, and how many riders it touched; never a name or a
    template."""

    action: Literal["enrol", "delete", "rotate_key"]
    operator: str = Field(min_length=1, max_length=64)
    riders: int = Field(ge=0, le=10_000_000)
    roster_version: int = Field(ge=0, le=MAX_SEQ)


class TemplateProposed(_Payload):
    """The kiosk proposes the live encoding of a verified visit as an extra template for
    the rider (``docs/face-pipeline.md``, "Templates that learn"). The encoding travels
    sealed (``cloud_sync.template_seal``: AES-256-GCM under the roster data key named by
    ``key_id``, bound to the rider and the kiosk), never in clear and never an image.

    ``reason``: ``claim_verified`` (the rider confirmed their claim code and the claim
    step verified the face) or ``confident_match`` (decided automatically well inside the
    policy's limits); ``distance`` and ``margin`` are the decision's."""

    person_id: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=128)
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    sealed: str = Field(min_length=40, max_length=1024, pattern=r"^[A-Za-z0-9+/]+={0,2}$")
    reason: Literal["claim_verified", "confident_match"]
    distance: float = Field(ge=0, le=4)
    margin: float | None = Field(default=None, ge=-4, le=4)


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
    "slot.service": SlotService,
    "roster.applied": RosterApplied,
    "kiosk.maintenance": KioskMaintenance,
    "roster.edited": RosterEdited,
    "rider.refused": RiderRefused,
    "kiosk.status": KioskStatus,
    "roster.purged": RosterPurged,
    "roster.erased": RosterErased,
    "template.proposed": TemplateProposed,
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
    "slot.service",
    "roster.applied",
    "kiosk.maintenance",
    "roster.edited",
    "rider.refused",
    "kiosk.status",
    "roster.purged",
    "roster.erased",
    "template.proposed",
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
    | SlotService
    | RosterApplied
    | KioskMaintenance
    | RosterEdited
    | RiderRefused
    | KioskStatus
    | RosterPurged
    | RosterErased
    | TemplateProposed
)


EventClass = Literal["money", "ops", "telemetry"]

#: What the outbox may drop under disk pressure: money never, ops after all telemetry.
CLASS_OF: dict[str, EventClass] = {
    "rental.started": "money",
    "rental.failed": "money",
    "rental.returned": "money",
    "boarding.recorded": "money",
    "slot.ejected": "money",
    "kiosk.started": "ops",
    "slot.fault": "ops",
    "slot.service": "ops",
    "roster.applied": "ops",
    "kiosk.maintenance": "ops",
    "roster.edited": "ops",
    "rider.refused": "ops",
    "roster.purged": "ops",
    "roster.erased": "ops",
    "template.proposed": "telemetry",
    "face.recognised": "telemetry",
    "face.unrecognised": "telemetry",
    "kiosk.status": "telemetry",
}
EVENT_CLASSES: tuple[EventClass, ...] = ("money", "ops", "telemetry")


class Event(BaseModel):
    """One event, as stored in the outbox and sent to the cloud."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=ULID_PATTERN, description="ULID, unique across every kiosk")
    kiosk_id: str = Field(pattern=KIOSK_ID_PATTERN)
    seq: int = Field(ge=1, le=MAX_SEQ, description="Per-kiosk, increases by one per event")
    type: EventType
    occurred_at: datetime = Field(description="RFC 3339 with a time zone; stored in UTC")
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema", ge=1, le=SCHEMA_VERSION)
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

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _utc(cls, value: Any) -> datetime:
        return parse_time(value)  # RFC 3339 text (never a number) or an aware datetime

    @property
    def event_class(self) -> EventClass:
        return CLASS_OF[self.type]

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


def describe(error: ValidationError, prefix: str = "") -> str:
    """A validation error as one short line: ``field.path: reason; ...``."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:5]:
        where = prefix + ".".join(printable(str(part), 64) for part in item["loc"]) or "(event)"
        parts.append(f"{where}: {printable(item['msg'], 300)}")
    return "; ".join(parts)


def parse_event(data: Any) -> Event:
    """Validate one event as received from the wire; ``EventError`` with a short reason.

    Strict: each value must have the JSON type its schema names (``"3"`` is not a slot,
    ``true`` not a count, a number not a time), and no string anywhere may hold a
    character a store cannot keep (``cloud_sync.wire_values``).
    """
    if not isinstance(data, dict):
        raise EventError(f"an event must be a JSON object, not {type(data).__name__}")
    event_type = data.get("type")
    if not isinstance(event_type, str) or event_type not in PAYLOADS:
        shown = event_type if isinstance(event_type, str) else type(event_type).__name__
        raise EventError(f"type: unknown event type {printable(str(shown), 64)!r}")
    version = data.get("schema", SCHEMA_VERSION)
    if type(version) is not int or version not in SUPPORTED_SCHEMAS:
        raise EventError(
            f"schema: unsupported schema version {printable(str(version), 16)!r} "
            f"(supported: {', '.join(map(str, sorted(SUPPORTED_SCHEMAS)))})"
        )
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise EventError("payload: must be a JSON object")
    bad = first_unstorable(data)
    if bad is not None:
        raise EventError(f"{bad[0]}: {bad[1]}")
    try:  # the payload first, so that its own field is named when that is what failed
        body = PAYLOADS[event_type].model_validate(payload, strict=True)
    except ValidationError as exc:
        raise EventError(describe(exc, prefix="payload.")) from None
    try:
        return Event.model_validate({**data, "payload": body}, strict=True)
    except ValidationError as exc:
        raise EventError(describe(exc)) from None


def check_occurred_at(event: Event, now: datetime, max_future: timedelta) -> None:
    """Refuse an event stamped before 1970 (``EARLIEST``) or further in the future than
    ``max_future`` from ``now``."""
    if event.occurred_at < EARLIEST:
        raise EventError(
            f"occurred_at: {event.occurred_at.isoformat()} is before 1970-01-01T00:00:00Z"
        )
    if event.occurred_at > now + max_future:
        raise EventError(
            f"occurred_at: {event.occurred_at.isoformat()} is in the future "
            f"(more than {int(max_future.total_seconds())} s after the receiver's clock)"
        )


# -- the batch wire format -------------------------------------------------------------

MAX_BATCH_EVENTS = 5000


class BatchRequest(BaseModel):
    """The body of ``POST /v1/events:batch`` (optionally gzip-encoded).

    ``events`` are validated one by one, so that each bad event is named in the answer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kiosk_id: str = Field(pattern=KIOSK_ID_PATTERN)
    batch_id: str = Field(pattern=ULID_PATTERN)
    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH_EVENTS,
        description="Each item is an Event (see event.json); at most the server's batch limit",
    )


class Rejection(BaseModel):
    """One event the server refused, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0, description="Position of the event in the batch")
    id: str | None = Field(description="The event's id, when it had a readable one")
    reason: str


class BatchResponse(BaseModel):
    """The answer to a batch: every event is either accepted, a duplicate, or rejected.

    Status 200 means nothing was rejected and every accepted event is stored. When any
    event is rejected the status is 422, ``rejected`` names each bad event, and nothing of
    the batch is stored: the sender sets the rejected events aside and sends the rest again.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: str
    accepted: list[str] = Field(default_factory=list)
    duplicate: list[str] = Field(default_factory=list)
    rejected: list[Rejection] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the cloud API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: str = Field(description="A stable, machine-readable code, e.g. malformed_json")
    reason: str = Field(description="What was wrong, in plain words")
    request_id: str | None = None
    rejected: list[Rejection] = Field(default_factory=list)
