"""Request signatures: every signed part matters, the clock is bounded, headers are checked."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.errors import SignatureError
from cloud_sync.signing import (
    check_timestamp,
    new_nonce,
    parse_public_key,
    public_key_text,
    read_headers,
    sign_request,
    verify_request,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NONCE = "0123456789abcdef0123456789abcdef"
ARGS = ("kiosk-a", "POST", "/v1/events:batch", b'{"x":1}', 1_800_000_000, NONCE)


def verify(
    headers: dict[str, str],
    method: str = "POST",
    path: str = "/v1/events:batch",
    body: bytes = b'{"x":1}',
    key: Ed25519PrivateKey = KEY,
) -> None:
    verify_request(key.public_key(), read_headers(headers), method, path, body)


def test_a_signed_request_verifies() -> None:
    headers = sign_request(KEY, *ARGS)
    verify(headers)
    assert read_headers({k.lower(): v for k, v in headers.items()}).nonce == NONCE


def test_signatures_are_deterministic_test_vector() -> None:
    # Ed25519 is deterministic: this pins the signed text format (docs/sync.md).
    headers = sign_request(KEY, *ARGS)
    assert public_key_text(KEY) == "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
    assert headers["X-Kiosk-Signature"] == (
        "0WV0c6FBLeoalrIOnj3C+DACvNG730sSrJ0qBsWha4q51qGZMZwAw3RrfptGcn3+f4I2yQaB1JImsDiuobfHAw=="
    )


@pytest.mark.parametrize(
    "change",
    [
        {"method": "PUT"},
        {"path": "/v1/events:batch?x=1"},
        {"body": b'{"x":2}'},
        {"key": Ed25519PrivateKey.generate()},
    ],
    ids=["method", "path", "body", "key"],
)
def test_changing_any_signed_part_breaks_the_signature(change: dict[str, object]) -> None:
    headers = sign_request(KEY, *ARGS)
    with pytest.raises(SignatureError, match="does not match"):
        verify(headers, **change)  # type: ignore[arg-type]


@pytest.mark.parametrize("header", ["X-Kiosk-Timestamp", "X-Kiosk-Nonce", "X-Kiosk-Id"])
def test_changing_a_signed_header_breaks_the_signature(header: str) -> None:
    headers = sign_request(KEY, *ARGS)
    replacement = {
        "X-Kiosk-Timestamp": "1800000001",
        "X-Kiosk-Nonce": new_nonce(),
        "X-Kiosk-Id": "kiosk-b",
    }
    with pytest.raises(SignatureError, match="does not match"):
        verify({**headers, header: replacement[header]})


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("X-Kiosk-Nonce", "short", "32 lowercase hex"),
        ("X-Kiosk-Nonce", "Z" * 32, "32 lowercase hex"),
        ("X-Kiosk-Timestamp", "-5", "Unix seconds"),
        ("X-Kiosk-Timestamp", "1e9", "Unix seconds"),
        ("X-Kiosk-Id", "Kiosk A", "not a kiosk id"),
        ("X-Kiosk-Signature", "***", "not base64"),
        ("X-Kiosk-Signature", "AAAA", "64 bytes"),
    ],
)
def test_malformed_headers_are_refused(header: str, value: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        read_headers({**sign_request(KEY, *ARGS), header: value})


def test_missing_headers_are_named() -> None:
    with pytest.raises(SignatureError, match="X-Kiosk-Signature"):
        read_headers({"X-Kiosk-Id": "kiosk-a"})


def test_clock_skew_is_bounded_both_ways() -> None:
    check_timestamp(1000, now=1200, max_skew_s=300)
    with pytest.raises(SignatureError, match="behind"):
        check_timestamp(1000, now=1400, max_skew_s=300)
    with pytest.raises(SignatureError, match="ahead of"):
        check_timestamp(1400, now=1000, max_skew_s=300)


def test_public_keys_parse_only_when_they_are_ed25519() -> None:
    assert public_key_text(parse_public_key(public_key_text(KEY))) == public_key_text(KEY)
    with pytest.raises(SignatureError, match="base64"):
        parse_public_key("!!")
    with pytest.raises(SignatureError, match="32 bytes"):
        parse_public_key("AAAA")
