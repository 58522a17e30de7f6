"""Sealing with AES-256-GCM, and data keys wrapped for one kiosk's X25519 key.

A sealed blob is ``nonce (12 bytes) || ciphertext+tag``; a fresh random nonce is drawn for
every seal. Associated data binds a blob to its place (rider id, version, key id), so a
blob moved to another row or version fails to open.

A wrapped key is sealed for a recipient with an ephemeral X25519 key: the shared secret
goes through HKDF-SHA256 (salt: both public keys) to an AES-256-GCM key that seals the
data key, with the data key's id as associated data.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cloud_sync.errors import IntegrityError

NONCE_BYTES = 12
KEY_BYTES = 32
_WRAP_INFO = b"powerbank-kiosk roster data key v1"


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def key_id(material: bytes) -> str:
    """A short, stable id for a key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(material).hexdigest()[:16]


def row_aad(person_id: str, version: int, data_key_id: str) -> bytes:
    return f"rider\x00{person_id}\x00{version}\x00{data_key_id}".encode()


def terms_aad(person_id: str, version: int, data_key_id: str) -> bytes:
    """A rider's terms row (entitlements and claim hash, ``roster_wire.RiderTerms``): bound
    to its own kind, so a terms row can never be read as a rider record or the reverse."""
    return f"terms\x00{person_id}\x00{version}\x00{data_key_id}".encode()


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise IntegrityError("sealed blob is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise IntegrityError(
            "sealed blob does not authenticate (tampered, or the wrong key)"
        ) from None


def raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class WrappedKey:
    """A data key sealed for one recipient."""

    key_id: str
    recipient: str  # key id of the recipient's X25519 public key
    ephemeral: bytes
    sealed: bytes

    def to_dict(self) -> dict[str, str]:
        return {
            "key_id": self.key_id,
            "recipient": self.recipient,
            "ephemeral": base64.b64encode(self.ephemeral).decode(),
            "sealed": base64.b64encode(self.sealed).decode(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> WrappedKey:
        try:
            return cls(
                key_id=str(data["key_id"]),
                recipient=str(data["recipient"]),
                ephemeral=base64.b64decode(data["ephemeral"], validate=True),
                sealed=base64.b64decode(data["sealed"], validate=True),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise IntegrityError(f"malformed wrapped key: {exc}") from None


def _wrapping_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=ephemeral + recipient, info=_WRAP_INFO
    ).derive(shared)


def wrap_key(data_key: bytes, recipient: X25519PublicKey) -> WrappedKey:
    """Seal ``data_key`` so that only the holder of ``recipient``'s private key can open it."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = raw_public(ephemeral.public_key())
    recipient_raw = raw_public(recipient)
    wrapping = _wrapping_key(ephemeral.exchange(recipient), ephemeral_raw, recipient_raw)
    data_key_id = key_id(data_key)
    return WrappedKey(
        key_id=data_key_id,
        recipient=key_id(recipient_raw),
        ephemeral=ephemeral_raw,
        sealed=seal(wrapping, data_key, data_key_id.encode()),
    )


def unwrap_key(wrapped: WrappedKey, private: X25519PrivateKey) -> bytes:
    """Open a wrapped data key with this kiosk's X25519 private key."""
    own_raw = raw_public(private.public_key())
    if wrapped.recipient != key_id(own_raw):
        raise IntegrityError(
            f"data key {wrapped.key_id} is wrapped for another kiosk ({wrapped.recipient})"
        )
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(wrapped.ephemeral))
    except ValueError as exc:
        raise IntegrityError(f"malformed wrapped key: {exc}") from None
    data_key = open_sealed(
        _wrapping_key(shared, wrapped.ephemeral, own_raw), wrapped.sealed, wrapped.key_id.encode()
    )
    if len(data_key) != KEY_BYTES or key_id(data_key) != wrapped.key_id:
        raise IntegrityError(f"data key {wrapped.key_id} does not match its id")
    return data_key
