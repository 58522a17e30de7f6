"""The roster on the wire: rider records, and signed deltas from the cloud to one kiosk.

A rider record (display name, templates, entitlements) is serialised to bytes and sealed
with the roster's data key before it leaves the cloud; the kiosk stores the sealed blob as
it arrives. A delta names its recipient (kiosk id and the key id of the kiosk's X25519
key), the version range it covers, the encoder model, the data key wrapped for that kiosk,
the sealed upserts and the deletions. The cloud signs the canonical JSON of the delta with
its roster key (Ed25519), whose public half each kiosk pins at provisioning.

Every delta the cloud serves also carries the nonce of the kiosk's signed request, so an
old delta replayed later answers the wrong request. When the kiosk already holds the
current version the cloud answers with a statement instead of a delta, signed with the
same key: this kiosk, this version, this request's nonce. An answer without a valid
signature never counts as "up to date". A kiosk the cloud revoked gets a third kind of
answer, also signed and bound to its request: an order to wipe its roster (``WipeBody``).

The builder functions are the cloud side's; ``verify_answer`` is what a kiosk runs before
it considers applying anything, and ``RosterAnswer`` is how the kiosk's HTTP client hands
over an answer together with the nonce it signed the request with.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_sync.errors import IntegrityError
from cloud_sync.sealing import key_id, raw_public, row_aad, seal, wrap_key
from cloud_sync.wire_values import loads_strict

FORMAT = "kiosk-roster-delta/1"
CURRENT_FORMAT = "kiosk-roster-current/1"
WIPE_FORMAT = "kiosk-roster-wipe/1"
NONCE_PATTERN = r"^[0-9a-f]{32}$"  # the nonce of a kiosk's signed request (``signing``)
ENCODING_SIZE = 128


@dataclass(frozen=True)
class Entitlements:
    may_rent: bool = True
    max_open_rentals: int = 1
    boarding_allowed: bool = True
    valid_until: date | None = None


def entitlements_wire(rights: Entitlements) -> list[Any]:
    return [
        rights.may_rent,
        rights.max_open_rentals,
        rights.boarding_allowed,
        rights.valid_until.isoformat() if rights.valid_until else None,
    ]


def entitlements_from(values: Any) -> Entitlements:
    may_rent, max_open, boarding, valid_until = values
    return Entitlements(
        bool(may_rent),
        int(max_open),
        bool(boarding),
        date.fromisoformat(valid_until) if valid_until else None,
    )


@dataclass(frozen=True)
class FleetView:
    """A rider's rentals still out across the fleet when the roster was last pulled:
    ``(kiosk_id, rental_id)`` pairs, and how many of them are overdue and lost."""

    open_rentals: tuple[tuple[str, str], ...] = ()
    overdue: int = 0
    lost: int = 0

    def elsewhere(self, kiosk_id: str) -> int:
        """Rentals open at other kiosks (a kiosk counts its own from its ledger)."""
        return sum(1 for kiosk, _ in self.open_rentals if kiosk != kiosk_id)


@dataclass(frozen=True)
class Template:
    model: str
    vector: npt.NDArray[np.float32]

    def __repr__(self) -> str:  # never print a template
        return f"Template(model={self.model!r})"


@dataclass(frozen=True)
class RiderRecord:
    """Everything personal about one rider; only ever stored sealed.

    ``claim_hash`` is the salted hash of the rider's claim code (``edge.vision.claim``);
    ``lookalike`` marks a rider enrolled close to another rider, who always confirms a
    claim; ``learned`` counts the templates learned from verified visits (the last ones).
    All three are optional on the wire: a record without them reads as before.
    """

    display_name: str
    templates: tuple[Template, ...]
    entitlements: Entitlements = field(default_factory=Entitlements)
    claim_hash: str | None = None
    lookalike: bool = False
    #: how many of the last ``templates`` were learned from verified visits, oldest first
    #: (``cloud_sync.server.learning``); the ones before them are the enrolment's
    learned: int = 0

    def __repr__(self) -> str:
        return f"RiderRecord(templates={len(self.templates)})"

    @property
    def enrolled(self) -> tuple[Template, ...]:
        """The templates from enrolment (the learned ones excluded)."""
        return self.templates[: len(self.templates) - self.learned]

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "n": self.display_name,
            "t": [
                [t.model, base64.b64encode(np.asarray(t.vector, dtype="<f4").tobytes()).decode()]
                for t in self.templates
            ],
            "e": entitlements_wire(self.entitlements),
            "c": self.claim_hash,
        }
        if self.lookalike:
            data["l"] = True
        if self.learned:
            data["g"] = self.learned
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RiderRecord:
        try:
            data = json.loads(raw)
            templates = []
            for model, vector in data["t"]:
                array = np.frombuffer(base64.b64decode(vector, validate=True), dtype="<f4").astype(
                    np.float32
                )
                if array.shape != (ENCODING_SIZE,):
                    raise ValueError(f"template has {array.size} values")
                templates.append(Template(str(model), array))
            return cls(
                display_name=str(data["n"]),
                templates=tuple(templates),
                entitlements=entitlements_from(data["e"]),
                claim_hash=data.get("c"),
                lookalike=data.get("l", False) is True,
                learned=_learned(data.get("g", 0), len(templates)),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise IntegrityError(f"rider record is malformed: {exc}") from None


def _learned(value: Any, templates: int) -> int:
    if type(value) is not int or not 0 <= value <= templates:
        raise ValueError(f"learned count {value!r} does not fit {templates} templates")
    return value


@dataclass(frozen=True)
class RiderTerms:
    """What an operator or the rider's app changes without touching the templates: the
    entitlements and the claim hash. Only ever stored and sent sealed (``terms_aad``).

    A kiosk applies a rider's terms over the record when the terms are newer (a higher
    version) than the record, and drops them when a newer record arrives.
    """

    entitlements: Entitlements = field(default_factory=Entitlements)
    claim_hash: str | None = None

    def __repr__(self) -> str:
        return "RiderTerms()"

    def to_bytes(self) -> bytes:
        data = {"e": entitlements_wire(self.entitlements), "c": self.claim_hash}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RiderTerms:
        try:
            data = json.loads(raw)
            claim = data["c"]
            if claim is not None and not isinstance(claim, str):
                raise TypeError("claim hash is not text")
            return cls(entitlements_from(data["e"]), claim)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"rider terms are malformed: {exc}") from None


class SealedRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    person_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: int = Field(ge=1)
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    sealed: str  # base64

    def blob(self) -> bytes:
        try:
            return base64.b64decode(self.sealed, validate=True)
        except binascii.Error:
            raise IntegrityError(f"row {self.person_id}: sealed data is not base64") from None


class WrappedKeyWire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str
    recipient: str
    ephemeral: str
    sealed: str


KIOSK_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_FLEET_RENTALS = 256
MAX_AUTO_SET = 10_000
PersonId = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class FleetRow(BaseModel):
    """One rider's rentals still out across the fleet, as the cloud knows them: each
    ``[kiosk_id, rental_id]`` open (overdue and lost ones included), and how many of them
    are overdue and lost. Nothing personal beyond the person id; signed with the delta."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    person_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: int = Field(ge=1)
    open_rentals: tuple[
        tuple[
            Annotated[str, Field(min_length=1, max_length=64, pattern=KIOSK_ID)],
            Annotated[str, Field(min_length=1, max_length=64)],
        ],
        ...,
    ] = Field(default=(), max_length=MAX_FLEET_RENTALS)
    overdue: int = Field(default=0, ge=0, le=MAX_FLEET_RENTALS)
    lost: int = Field(default=0, ge=0, le=MAX_FLEET_RENTALS)


class DeltaBody(BaseModel):
    """What the cloud signs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = FORMAT
    kiosk_id: str = Field(min_length=1, max_length=64)
    recipient: str = Field(pattern=r"^[0-9a-f]{16}$")
    from_version: int = Field(ge=0)
    to_version: int = Field(ge=1)
    full: bool = False
    model: str = Field(min_length=1, max_length=64)
    data_key: WrappedKeyWire | None = None
    upserts: tuple[SealedRow, ...] = ()
    deletions: tuple[str, ...] = ()
    # Riders' terms changed without their records (sealed, ``terms_aad``) and riders' fleet
    # state; both left out of the signed JSON when empty, so a delta without them reads and
    # signs as before.
    terms: tuple[SealedRow, ...] = ()
    fleet: tuple[FleetRow, ...] = ()
    # This kiosk's automatic set (person ids), when it changed: the riders the kiosk may
    # recognise without a claim once its roster is past the policy's calibrated size. Left
    # out of the signed JSON when None (no change, or sets are off).
    auto_set: tuple[PersonId, ...] | None = Field(default=None, max_length=MAX_AUTO_SET)
    issued_at: datetime
    # The nonce of the request this delta answers. None only in deltas made outside a
    # request (files, tests); the field is then left out of the signed JSON altogether.
    nonce: str | None = Field(default=None, pattern=NONCE_PATTERN)


class CurrentBody(BaseModel):
    """What the cloud signs to tell one kiosk, in answer to one request, that the version
    it holds is the current one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = CURRENT_FORMAT
    kiosk_id: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=0)
    nonce: str = Field(pattern=NONCE_PATTERN)
    issued_at: datetime


class WipeBody(BaseModel):
    """What the cloud signs to order one kiosk, in answer to one request, to delete its
    whole roster: the kiosk was revoked (``kiosk-cloud kiosks revoke``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = WIPE_FORMAT
    kiosk_id: str = Field(min_length=1, max_length=64)
    nonce: str = Field(pattern=NONCE_PATTERN)
    issued_at: datetime


Answer = DeltaBody | CurrentBody | WipeBody


@dataclass(frozen=True)
class ApplyResult:
    """What a checked delta (or up-to-date statement) changed on the kiosk: versions and
    counts, nothing personal (the kiosk's roster store returns it; the roster pull logs it)."""

    from_version: int
    to_version: int
    upserts: int
    deletions: int
    full: bool = False
    terms: int = 0
    fleet: int = 0
    #: the riders this answer removed from the kiosk (the cloud deleted them): each gets a
    #: ``roster.erased`` receipt once the removal is on the disk
    erased: tuple[str, ...] = ()
    #: the kiosk's automatic set arrived with this answer (its size), None when not
    auto_set: int | None = None
    #: a wipe order was obeyed (the kiosk was revoked): ``deletions`` riders were purged
    wiped: bool = False


@dataclass(frozen=True)
class RosterAnswer:
    """One ``GET /v1/roster`` answer as received: the body, the nonce the kiosk signed that
    request with, and the HTTP status. The roster store (``apply_answer``) checks that the
    body is signed and carries that very nonce."""

    content: bytes = field(repr=False)
    nonce: str
    status: int


def _wire(body: Answer) -> dict[str, Any]:
    data = body.model_dump(mode="json")
    if data.get("nonce", "") is None:  # an unbound delta reads as it did before nonces
        del data["nonce"]
    for optional in ("terms", "fleet"):  # as it did before a fleet
        if data.get(optional) == []:
            del data[optional]
    if "auto_set" in data and data["auto_set"] is None:
        del data["auto_set"]
    return data


def canonical(body: Answer) -> bytes:
    """The bytes the roster key signs: the body's JSON with sorted keys and no spaces."""
    return json.dumps(_wire(body), sort_keys=True, separators=(",", ":")).encode()


def _envelope(kind: str, body: Answer, roster_key: Ed25519PrivateKey) -> bytes:
    signature = roster_key.sign(canonical(body))
    envelope = {kind: _wire(body), "signature": base64.b64encode(signature).decode()}
    return json.dumps(envelope, separators=(",", ":")).encode()


def sign_delta(body: DeltaBody, roster_key: Ed25519PrivateKey) -> bytes:
    """The signed delta, as the bytes the cloud serves: ``{"delta": ..., "signature": ...}``."""
    return _envelope("delta", body, roster_key)


def sign_current(body: CurrentBody, roster_key: Ed25519PrivateKey) -> bytes:
    """The signed up-to-date statement: ``{"current": ..., "signature": ...}``."""
    return _envelope("current", body, roster_key)


def sign_wipe(body: WipeBody, roster_key: Ed25519PrivateKey) -> bytes:
    """The signed order to wipe the roster: ``{"wipe": ..., "signature": ...}``."""
    return _envelope("wipe", body, roster_key)


def build_wipe(kiosk_id: str, nonce: str, issued_at: datetime | None = None) -> WipeBody:
    return WipeBody(kiosk_id=kiosk_id, nonce=nonce, issued_at=issued_at or datetime.now(UTC))


def build_current(
    kiosk_id: str, version: int, nonce: str, issued_at: datetime | None = None
) -> CurrentBody:
    return CurrentBody(
        kiosk_id=kiosk_id, version=version, nonce=nonce, issued_at=issued_at or datetime.now(UTC)
    )


def verify_answer(raw: bytes, roster_public: Ed25519PublicKey) -> Answer:
    """Parse a signed answer (a delta, an up-to-date statement or a wipe order) and check
    its format and signature; ``IntegrityError`` when anything is off. The caller checks
    what it says."""
    kind = "roster answer"
    try:
        envelope = loads_strict(raw)  # unsigned yet: a bad nesting is a WireError
        if not isinstance(envelope, dict):
            raise TypeError("not a JSON object")
        signature = base64.b64decode(envelope["signature"], validate=True)
        body: Answer
        if "current" in envelope:
            kind = "roster up-to-date statement"
            body = CurrentBody.model_validate(envelope["current"])
        elif "wipe" in envelope:
            kind = "roster wipe order"
            body = WipeBody.model_validate(envelope["wipe"])
        else:
            kind = "roster delta"
            body = DeltaBody.model_validate(envelope["delta"])
    except (ValueError, KeyError, TypeError, binascii.Error, ValidationError) as exc:
        reason = (
            exc.errors()[0]["msg"]
            if isinstance(exc, ValidationError)
            else str(exc) or type(exc).__name__
        )
        raise IntegrityError(f"{kind} is malformed or truncated: {reason}") from None
    expected = {CurrentBody: CURRENT_FORMAT, WipeBody: WIPE_FORMAT}.get(type(body), FORMAT)
    if body.format != expected:
        raise IntegrityError(f"{kind} format {body.format!r} is not {expected!r}")
    try:
        roster_public.verify(signature, canonical(body))
    except InvalidSignature:
        raise IntegrityError(
            f"{kind} signature does not verify: tampered, or not from this cloud"
        ) from None
    return body


@dataclass(frozen=True)
class Upsert:
    person_id: str
    version: int
    record: RiderRecord


def build_delta(
    *,
    kiosk_id: str,
    recipient: X25519PublicKey,
    data_key: bytes,
    model: str,
    from_version: int,
    to_version: int,
    upserts: list[Upsert] | tuple[Upsert, ...] = (),
    deletions: list[str] | tuple[str, ...] = (),
    full: bool = False,
    include_key: bool = True,
    issued_at: datetime | None = None,
    nonce: str | None = None,
) -> DeltaBody:
    """Seal each upsert under ``data_key`` and describe the change for one kiosk (in answer
    to the request whose ``nonce`` is given, when there is one)."""
    data_key_id = key_id(data_key)
    rows = tuple(
        SealedRow(
            person_id=item.person_id,
            version=item.version,
            key_id=data_key_id,
            sealed=base64.b64encode(
                seal(
                    data_key,
                    item.record.to_bytes(),
                    row_aad(item.person_id, item.version, data_key_id),
                )
            ).decode(),
        )
        for item in upserts
    )
    wrapped = WrappedKeyWire(**wrap_key(data_key, recipient).to_dict()) if include_key else None
    return DeltaBody(
        kiosk_id=kiosk_id,
        recipient=key_id(raw_public(recipient)),
        from_version=from_version,
        to_version=to_version,
        full=full,
        model=model,
        data_key=wrapped,
        upserts=rows,
        deletions=tuple(deletions),
        issued_at=issued_at or datetime.now(UTC),
        nonce=nonce,
    )


def describe(body: DeltaBody) -> dict[str, Any]:
    """A log-safe summary of a delta (no sealed data)."""
    return {
        "kiosk_id": body.kiosk_id,
        "from_version": body.from_version,
        "to_version": body.to_version,
        "full": body.full,
        "upserts": len(body.upserts),
        "deletions": len(body.deletions),
        "terms": len(body.terms),
        "fleet": len(body.fleet),
        "model": body.model,
    }
