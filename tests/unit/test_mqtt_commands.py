"""Remote commands: the signed format and the kiosk's checks, with plain values."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sync.mqtt.commands import (
    Command,
    CommandResult,
    Limits,
    canonical,
    new_command,
    parse_result,
    sign_command,
    verify_command,
)
from cloud_sync.mqtt.errors import REASONS, CommandRejected
from cloud_sync.mqtt.sender import broker_config, parse_arg

KIOSK = "kiosk-0042"
NOW = 1_767_225_600.0
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


def signed(
    name: str = "eject", args: dict[str, Any] | None = None, ttl: int = 60, **over: object
) -> bytes:
    command = new_command(KIOSK, name, {"slot": 3} if args is None else args, ttl, NOW, "ops:asha")
    if over:
        command = command.model_copy(update=over)
    return sign_command(KEY, command)


def resign(fields: dict[str, Any]) -> bytes:
    """Sign arbitrary fields with the real key (a cloud bug, or a test of the kiosk's checks)."""
    body = {k: v for k, v in fields.items() if k != "signature"}
    signature = base64.b64encode(KEY.sign(canonical(body))).decode()
    return json.dumps({**body, "signature": signature}).encode()


def reason_of(raw: bytes, **kwargs: object) -> CommandRejected:
    options: dict[str, Any] = {"public_key": PUBLIC, "kiosk_id": KIOSK, "slots": 8, "now": NOW}
    options.update(kwargs)
    with pytest.raises(CommandRejected) as caught:
        verify_command(raw, **options)
    assert caught.value.reason in REASONS
    return caught.value


def test_a_signed_command_verifies_with_its_typed_arguments() -> None:
    command = verify_command(signed(), PUBLIC, KIOSK, 8, NOW)
    assert command.name == "eject" and command.issuer == "ops:asha"
    assert command.typed_args().slot == 3  # type: ignore[attr-defined]
    assert command.expires_at - command.issued_at == 60


def test_a_tampered_command_is_refused_and_gets_no_answer() -> None:
    fields = json.loads(signed())
    fields["args"]["slot"] = 4
    refused = reason_of(json.dumps(fields).encode())
    assert refused.reason == "bad_signature" and not refused.authentic


def test_reordered_keys_and_whitespace_still_verify() -> None:
    fields = json.loads(signed())
    shuffled = json.dumps(dict(reversed(list(fields.items()))), indent=2).encode()
    assert verify_command(shuffled, PUBLIC, KIOSK, 8, NOW).id == fields["id"]


def test_another_key_an_unsigned_command_or_no_pinned_key_is_refused() -> None:
    other = Ed25519PrivateKey.generate().public_key()
    assert reason_of(signed(), public_key=other).reason == "bad_signature"
    fields = json.loads(signed())
    del fields["signature"]
    assert reason_of(json.dumps(fields).encode()).reason == "unsigned"
    assert reason_of(signed(), public_key=None).reason == "no_key"
    fields["signature"] = "not base64!"
    assert reason_of(json.dumps(fields).encode()).reason == "malformed"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"[1, 2]", "malformed"),
        (b'{"a": NaN, "signature": "x"}', "malformed"),
        (b'{"id": "a", "id": "b"}', "malformed"),
        (b"[" * 3000 + b"]" * 3000, "oversize"),
        (b"[" * 2000 + b"]" * 2000, "malformed"),
        (b'{"name": "eject", "args": {"slot": 3}}', "unsigned"),
    ],
)
def test_garbage_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    assert reason_of(raw).reason == reason


def test_time_window() -> None:
    assert reason_of(signed(ttl=60), now=NOW + 61).reason == "expired"
    assert reason_of(signed(ttl=60), now=NOW + 60).reason == "expired"
    assert verify_command(signed(ttl=60), PUBLIC, KIOSK, 8, NOW + 59).name == "eject"
    refused = reason_of(signed(ttl=60), now=NOW - 1000)
    assert refused.reason == "not_yet_valid" and refused.authentic
    assert reason_of(signed(ttl=7200)).reason == "ttl_too_long"
    long = Limits(max_ttl_s=86400)
    assert verify_command(signed(ttl=7200), PUBLIC, KIOSK, 8, NOW, long).name == "eject"


def test_arguments_are_checked_per_command() -> None:
    assert reason_of(signed(args={"slot": 99})).reason == "bad_args"
    assert reason_of(signed(args={"slot": 9})).reason == "bad_args"  # this kiosk has 8
    assert reason_of(signed(args={"slot": 0})).reason == "bad_args"
    assert reason_of(signed(args={"slot": "3"})).reason == "bad_args"
    assert reason_of(signed(args={})).reason == "bad_args"
    assert reason_of(signed(args={"slot": 3, "force": True})).reason == "bad_args"
    assert reason_of(signed(name="ping", args={"slot": 3})).reason == "bad_args"
    assert verify_command(signed(name="sync-now", args={}), PUBLIC, KIOSK, 8, NOW).args == {}


def test_floats_unknown_commands_and_other_kiosks_are_refused_after_the_signature() -> None:
    fields = json.loads(signed())
    fields["args"] = {"slot": 3.0}  # floats are not part of the format at all
    assert reason_of(resign(fields)).reason == "malformed"
    fields = json.loads(signed())
    fields["name"] = "self-destruct"
    refused = reason_of(resign(fields))
    assert refused.reason == "unknown_command" and refused.authentic
    fields = json.loads(signed())
    fields["kiosk_id"] = "kiosk-0043"
    assert reason_of(resign(fields)).reason == "wrong_kiosk"
    fields = json.loads(signed())
    fields["extra"] = 1
    assert reason_of(resign(fields)).reason == "malformed"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_a_rejection(raw: bytes) -> None:
    with pytest.raises(CommandRejected):
        verify_command(raw, PUBLIC, KIOSK, 8, NOW)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "id", "kiosk_id", "name", "args", "issued_at", "expires_at", "x"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=6,
        ),
    )
)
def test_random_signed_objects_are_refused_or_are_valid_commands(fields: dict[str, Any]) -> None:
    try:
        command = verify_command(resign(fields), PUBLIC, KIOSK, 8, NOW)
    except CommandRejected:
        return
    assert isinstance(command, Command)


def test_results_round_trip_and_garbage_is_not_a_result() -> None:
    result = CommandResult(id="01ABCDEFGH", kiosk_id=KIOSK, name="ping", status="ok", at=1)
    assert parse_result(result.model_dump_json().encode()) == result
    assert parse_result(b"{") is None
    assert parse_result(b'{"id": 1}') is None


def test_command_line_arguments_and_broker_addresses() -> None:
    assert parse_arg("slot=3") == ("slot", 3)
    assert parse_arg("reason=jammed door") == ("reason", "jammed door")
    assert parse_arg("force=true") == ("force", True)
    assert parse_arg("echo=007x") == ("echo", "007x")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_arg("slot")
    assert broker_config("mq.example:8883", tls=True).port == 8883
    assert broker_config("mq.example", tls=True).port == 8883
    assert broker_config("127.0.0.1").port == 1883
    with pytest.raises(ValueError):
        broker_config("host:port")
