"""Whether 32 bytes are an Ed25519 public key a signature can be trusted with. Pure.

``cryptography`` loads any 32 bytes as an Ed25519 public key and its verification does not
refuse a key of small order: for the identity point (bytes ``01 00 .. 00``) the signature
"R = identity, s = 0" verifies for every message, so a kiosk registered with such a key can
be impersonated by anyone. This module decodes the point as RFC 8032 (5.1.3) does and
refuses bytes that are no canonical point of the curve and points whose order divides the
cofactor 8 (the eight points that sign for no secret). Mixed-order keys need a secret to
sign with and are not refused. Plain integer arithmetic; a check takes about a millisecond.
"""

from __future__ import annotations

import base64
import binascii

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_IDENTITY = (0, 1)


def _decode(raw: bytes) -> tuple[int, int] | None:
    number = int.from_bytes(raw, "little")
    sign, y = number >> 255, number & ((1 << 255) - 1)
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else (0, y)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _double(point: tuple[int, int]) -> tuple[int, int]:
    x, y = point
    t = _D * x * x * y * y % _P
    return (
        2 * x * y * pow(1 + t, _P - 2, _P) % _P,
        (y * y + x * x) * pow(1 - t, _P - 2, _P) % _P,
    )


def ed25519_weakness(raw: bytes) -> str | None:
    """Why ``raw`` cannot serve as an Ed25519 public key, or None when it can."""
    if len(raw) != 32:
        return "must be 32 bytes"
    point = _decode(raw)
    if point is None:
        return "is not a point of the Ed25519 curve"
    for _ in range(3):
        point = _double(point)
    if point == _IDENTITY:
        return "is a point of small order, which anyone can sign for"
    return None


def strong_pinned_key(text: str | None) -> str | None:
    """A pinned Ed25519 public key (base64) as a setting keeps it; ``ValueError`` when it is
    one that anyone can sign for or no point at all, so such a setting fails at start."""
    if text is None:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64") from None
    weakness = ed25519_weakness(raw)
    if weakness is not None:
        raise ValueError(f"{weakness}: pin the key the cloud or the release signer prints")
    return text
