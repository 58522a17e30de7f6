"""Kiosk request signatures: Ed25519 over method, path, timestamp, nonce and body digest.

A kiosk signs every request it sends to the cloud API with its own Ed25519 key; the server
checks the signature with the public key registered for that kiosk, refuses timestamps
outside a bounded clock skew and refuses a nonce it has already seen (the server stores
nonces; this module only builds and checks signatures, it keeps no state).

The signed text is, one item per line, UTF-8::

    kiosk-sig-v1
    POST                       method, upper case
    /v1/events:batch           path, and ``?query`` when there is one, exactly as sent
    1767225600                 timestamp, Unix seconds
    3f0c...                    nonce, 32 lowercase hex digits (128 random bits)
    9f86d0...                  SHA-256 of the body bytes as sent (after gzip), hex
    kiosk-0042                 the kiosk id

Headers: ``X-Kiosk-Id``, ``X-Kiosk-Timestamp``, ``X-Kiosk-Nonce``, ``X-Kiosk-Signature``
(base64 of the 64-byte signature). Public keys travel as base64 of the 32 raw bytes.

Pure functions, apart from ``kiosk_key`` which reads (or creates) the key file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_sync import keyfiles
from cloud_sync.curve_points import ed25519_weakness
from cloud_sync.errors import SignatureError

VERSION = "kiosk-sig-v1"
HEADER_KIOSK = "X-Kiosk-Id"
HEADER_TIMESTAMP = "X-Kiosk-Timestamp"
HEADER_NONCE = "X-Kiosk-Nonce"
HEADER_SIGNATURE = "X-Kiosk-Signature"
NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
KEY_FILENAME = "kiosk-ed25519.pem"  # the default of sync.key_filename


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def signed_text(
    method: str, path: str, timestamp: int, nonce: str, digest: str, kiosk_id: str
) -> bytes:
    """The exact bytes that are signed (see the module docstring)."""
    return "\n".join(
        (VERSION, method.upper(), path, str(timestamp), nonce, digest, kiosk_id)
    ).encode("utf-8")


def new_nonce() -> str:
    return secrets.token_hex(16)


def sign_request(
    key: Ed25519PrivateKey,
    kiosk_id: str,
    method: str,
    path: str,
    body: bytes,
    timestamp: int,
    nonce: str,
) -> dict[str, str]:
    """The four signature headers for one request."""
    text = signed_text(method, path, timestamp, nonce, body_digest(body), kiosk_id)
    return {
        HEADER_KIOSK: kiosk_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: base64.b64encode(key.sign(text)).decode("ascii"),
    }


@dataclass(frozen=True)
class SignedRequest:
    """The signature headers of a request, read but not yet verified."""

    kiosk_id: str
    timestamp: int
    nonce: str
    signature: bytes


def read_headers(headers: dict[str, str]) -> SignedRequest:
    """Parse the signature headers (case-insensitive names); ``SignatureError`` if unusable."""
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [
        name
        for name in (HEADER_KIOSK, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)
        if name.lower() not in lowered
    ]
    if missing:
        raise SignatureError(f"missing header {', '.join(missing)}")
    kiosk_id = lowered[HEADER_KIOSK.lower()]
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,62}", kiosk_id):
        raise SignatureError(f"{HEADER_KIOSK} is not a kiosk id")
    raw_ts = lowered[HEADER_TIMESTAMP.lower()]
    if not re.fullmatch(r"[0-9]{1,12}", raw_ts):
        raise SignatureError(f"{HEADER_TIMESTAMP} must be Unix seconds")
    nonce = lowered[HEADER_NONCE.lower()]
    if not NONCE_RE.fullmatch(nonce):
        raise SignatureError(f"{HEADER_NONCE} must be 32 lowercase hex digits")
    try:
        signature = base64.b64decode(lowered[HEADER_SIGNATURE.lower()], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{HEADER_SIGNATURE} is not base64") from None
    if len(signature) != 64:
        raise SignatureError(f"{HEADER_SIGNATURE} must be 64 bytes")
    return SignedRequest(kiosk_id, int(raw_ts), nonce, signature)


def check_timestamp(timestamp: int, now: float, max_skew_s: float) -> None:
    """Refuse a request signed too far from ``now`` (either way)."""
    skew = timestamp - now
    if abs(skew) > max_skew_s:
        direction = "ahead of" if skew > 0 else "behind"
        raise SignatureError(
            f"timestamp is {abs(int(skew))} s {direction} the server's clock "
            f"(at most {int(max_skew_s)} s allowed; check the kiosk's clock)"
        )


def verify_request(
    public_key: Ed25519PublicKey,
    signed: SignedRequest,
    method: str,
    path: str,
    body: bytes,
) -> None:
    """Check the signature itself; ``SignatureError`` when it does not match."""
    text = signed_text(
        method, path, signed.timestamp, signed.nonce, body_digest(body), signed.kiosk_id
    )
    try:
        public_key.verify(signed.signature, text)
    except InvalidSignature:
        raise SignatureError("signature does not match this kiosk's registered key") from None


# -- keys ---------------------------------------------------------------------------------


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Base64 of the 32 raw public-key bytes: the form a kiosk registers."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its base64 text; ``SignatureError`` when it is not one, or is one
    no signature can be trusted with (``curve_points``: not on the curve, small order)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("public key is not base64") from None
    if len(raw) != 32:
        raise SignatureError("public key must be 32 bytes (Ed25519), base64-encoded")
    weakness = ed25519_weakness(raw)
    if weakness is not None:
        raise SignatureError(f"public key {weakness}; use the key `kiosk sync key` prints")
    return Ed25519PublicKey.from_public_bytes(raw)


def kiosk_key(state_dir: Path, filename: str = KEY_FILENAME) -> Ed25519PrivateKey:
    """The kiosk's signing key: the systemd credential ``kiosk-signing-key`` when the
    service has one, else a PKCS#8 PEM file (mode 0600) in its state folder, created on
    first use.

    The one place the sync side gets its key; provisioning may change where it comes from.
    """
    key: Ed25519PrivateKey = keyfiles.load_or_create(
        state_dir / filename,
        Ed25519PrivateKey,  # type: ignore[type-abstract]
        credential=keyfiles.SIGNING_CREDENTIAL,
    )
    return key
