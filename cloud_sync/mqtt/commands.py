"""Remote commands: the signed wire format, and the checks a kiosk runs before obeying one.

A command is one JSON object, published on ``kiosk/<id>/cmd``::

    {"v": 1, "id": "01JH...", "kiosk_id": "kiosk-0042", "name": "eject",
     "args": {"slot": 3, "reason": "stuck powerbank"}, "issuer": "ops:asha",
     "issued_at": 1767225600, "expires_at": 1767225660, "signature": "base64..."}

``signature`` is Ed25519, by the cloud's command key, over ``kiosk-cmd-v1`` and a newline
followed by the canonical JSON of every other field (keys sorted, no spaces, UTF-8). Times
are Unix seconds. ``args`` values are strings, integers or booleans (never floats, so that
the canonical form is the same in every language).

``verify_command`` is pure: it takes the received bytes, the pinned public key, this
kiosk's id and slot count and ``now``, and returns a ``Command`` or raises
``CommandRejected`` with a stable reason code. Whether an id already ran (replay) is the
ledger's business (``cloud_sync.mqtt.ledger``), not this module's.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from ulid import ULID

from cloud_sync.events import KIOSK_ID_PATTERN, describe
from cloud_sync.mqtt.errors import CommandRejected

PROTOCOL = "kiosk-cmd-v1"
VERSION = 1
COMMAND_ID_PATTERN = r"^[0-9A-Za-z_-]{8,64}$"

ArgValue = StrictStr | StrictInt | StrictBool
ResultValue = StrictStr | StrictInt | StrictBool | float | None


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(_Args):
    """Commands without arguments."""


class EjectArgs(_Args):
    slot: StrictInt = Field(ge=1, le=64)
    reason: StrictStr = Field(default="remote command", min_length=1, max_length=200)


class MaintenanceArgs(_Args):
    reason: StrictStr = Field(default="remote command", min_length=1, max_length=200)


class PingArgs(_Args):
    echo: StrictStr = Field(default="", max_length=64)


#: Every command a kiosk knows, and the arguments it takes.
ARGS: dict[str, type[_Args]] = {
    "eject": EjectArgs,
    "sync-now": NoArgs,
    "maintenance-on": MaintenanceArgs,
    "maintenance-off": NoArgs,
    "reload-roster": NoArgs,
    "ping": PingArgs,
}
CommandName = Literal[
    "eject", "sync-now", "maintenance-on", "maintenance-off", "reload-roster", "ping"
]


class Command(BaseModel):
    """A command whose fields have the right shapes (its signature is checked apart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    id: str = Field(pattern=COMMAND_ID_PATTERN)
    kiosk_id: str = Field(pattern=KIOSK_ID_PATTERN)
    name: CommandName
    args: dict[str, ArgValue] = Field(default_factory=dict, max_length=16)
    issuer: StrictStr = Field(default="cloud", min_length=1, max_length=64)
    issued_at: StrictInt = Field(ge=0, le=2**40)
    expires_at: StrictInt = Field(ge=0, le=2**40)

    def typed_args(self) -> _Args:
        """The arguments, validated by the command's own model (``ValueError`` if wrong)."""
        return ARGS[self.name].model_validate(self.args)


Status = Literal["ok", "error", "rejected"]


class CommandResult(BaseModel):
    """The kiosk's answer, published on ``kiosk/<id>/cmd/result``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    id: str
    kiosk_id: str
    name: str
    status: Status
    reason: str | None = Field(default=None, description="a rejection's reason code")
    detail: str = Field(default="", max_length=500)
    data: dict[str, ResultValue] = Field(default_factory=dict)
    at: int
    signature: str | None = Field(
        default=None, max_length=200, description="the kiosk's Ed25519 signature (base64)"
    )


@dataclass(frozen=True)
class Limits:
    """What a kiosk accepts: payload size, validity window, clock skew."""

    max_bytes: int = 4096
    max_ttl_s: float = 3600.0
    max_skew_s: float = 300.0


# -- signing (the cloud's side) ---------------------------------------------------------


def canonical(fields: dict[str, Any]) -> bytes:
    """The signed text of a command's fields (``signature`` itself left out)."""
    body = {key: value for key, value in fields.items() if key != "signature"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{PROTOCOL}\n{text}".encode()


def new_command(
    kiosk_id: str,
    name: str,
    args: dict[str, Any],
    ttl_s: int,
    now: float,
    issuer: str = "cloud",
) -> Command:
    """A fresh command with a ULID id, valid from ``now`` for ``ttl_s`` seconds."""
    issued = int(now)
    return Command.model_validate(
        {
            "id": str(ULID()),
            "kiosk_id": kiosk_id,
            "name": name,
            "args": args,
            "issuer": issuer,
            "issued_at": issued,
            "expires_at": issued + int(ttl_s),
        }
    )


def sign_command(key: Ed25519PrivateKey, command: Command) -> bytes:
    """The command as sent: its JSON with the signature added."""
    fields = command.model_dump(mode="json")
    signature = base64.b64encode(key.sign(canonical(fields))).decode("ascii")
    return json.dumps({**fields, "signature": signature}, separators=(",", ":")).encode()


# -- results: signed by the kiosk, checked by the sender ---------------------------------

RESULT_PROTOCOL = "kiosk-result-v1"  # never the commands' text: no signature fits both


def result_text(result: CommandResult) -> bytes:
    """The signed text of a result's fields (``signature`` left out)."""
    body = result.model_dump(mode="json", exclude={"signature"})
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{RESULT_PROTOCOL}\n{text}".encode()


def sign_result(key: Ed25519PrivateKey, result: CommandResult) -> CommandResult:
    """``result`` with the kiosk's signature over its fields."""
    signature = base64.b64encode(key.sign(result_text(result))).decode("ascii")
    return result.model_copy(update={"signature": signature})


def result_signed_by(result: CommandResult, public: Ed25519PublicKey) -> bool:
    """Whether ``public`` (the kiosk's key in the cloud's registry) signed ``result``."""
    if result.signature is None:
        return False
    try:
        public.verify(base64.b64decode(result.signature, validate=True), result_text(result))
    except (InvalidSignature, ValueError):
        return False
    return True


# -- verification (the kiosk's side) ----------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key[:32]!r}")
        found[key] = value
    return found


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_fields(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """The JSON object of a command, refusing oversize, non-UTF-8 and non-object payloads."""
    if len(raw) > max_bytes:
        raise CommandRejected("oversize", f"{len(raw)} bytes (at most {max_bytes})")
    try:
        data = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandRejected("malformed", f"not JSON: {str(exc)[:100]}") from None
    if not isinstance(data, dict):
        raise CommandRejected("malformed", f"a JSON object is expected, not {type(data).__name__}")
    return data


def _readable(fields: dict[str, Any], key: str) -> str | None:
    value = fields.get(key)
    return value[:64] if isinstance(value, str) else None


def verify_command(
    raw: bytes,
    public_key: Ed25519PublicKey | None,
    kiosk_id: str,
    slots: int,
    now: float,
    limits: Limits = Limits(),
) -> Command:
    """Check a received command completely (except replay); ``CommandRejected`` if unfit."""
    fields = parse_fields(raw, limits.max_bytes)
    command_id, name = _readable(fields, "id"), _readable(fields, "name")
    signature_text = fields.get("signature")
    if signature_text is None:
        raise CommandRejected("unsigned", "no signature", command_id=command_id, name=name)
    if public_key is None:
        raise CommandRejected(
            "no_key", "mqtt.command_public_key is not set", command_id=command_id, name=name
        )
    try:
        signature = base64.b64decode(str(signature_text), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise CommandRejected(
            "malformed", "signature is not 64 bytes of base64", command_id=command_id, name=name
        )
    try:
        text = canonical(fields)
        public_key.verify(signature, text)
    except (InvalidSignature, ValueError, TypeError):
        raise CommandRejected(
            "bad_signature", "signature does not match", command_id=command_id, name=name
        ) from None
    # From here on the command comes from the cloud: the kiosk answers on the result topic.

    def rejected(reason: str, detail: str) -> CommandRejected:
        return CommandRejected(reason, detail, command_id=command_id, name=name, authentic=True)

    if fields.get("kiosk_id") != kiosk_id:
        raise rejected("wrong_kiosk", f"addressed to {str(fields.get('kiosk_id'))[:64]!r}")
    if isinstance(name, str) and name not in ARGS:
        raise rejected("unknown_command", f"no command {name!r}")
    body = {key: value for key, value in fields.items() if key != "signature"}
    try:
        command = Command.model_validate(body)
    except ValidationError as exc:
        raise rejected("malformed", describe(exc)) from None
    try:
        typed = command.typed_args()
    except ValidationError as exc:
        raise rejected("bad_args", describe(exc, prefix="args.")) from None
    if isinstance(typed, EjectArgs) and typed.slot > slots:
        raise rejected("bad_args", f"slot {typed.slot} does not exist (slots 1..{slots})")
    check_times(command, now, limits)
    return command


def check_times(command: Command, now: float, limits: Limits) -> None:
    """Refuse an expired command, one from the future, or one valid for too long."""

    def rejected(reason: str, detail: str) -> CommandRejected:
        return CommandRejected(
            reason, detail, command_id=command.id, name=command.name, authentic=True
        )

    if command.expires_at <= now:
        raise rejected("expired", f"expired {int(now - command.expires_at)} s ago (kiosk clock)")
    if command.issued_at > now + limits.max_skew_s:
        raise rejected(
            "not_yet_valid", f"issued {int(command.issued_at - now)} s ahead of the kiosk's clock"
        )
    if command.expires_at - command.issued_at > limits.max_ttl_s:
        raise rejected(
            "ttl_too_long",
            f"valid for {command.expires_at - command.issued_at} s "
            f"(at most {int(limits.max_ttl_s)} s)",
        )


def parse_result(raw: bytes) -> CommandResult | None:
    """A result read from the result topic, or None when it is not one."""
    try:
        return CommandResult.model_validate_json(raw)
    except ValidationError:
        return None
