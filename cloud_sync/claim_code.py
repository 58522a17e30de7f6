"""A rider's claim code and its salted hash, the same in the kiosk and the cloud.

A claim is 4 to 6 digits the rider chose (in the app, or the last digits of their phone).
Nothing keeps the code itself: ``hash_claim`` makes ``scrypt$ln=14,r=8,p=1$<salt>$<key>``
with a fresh random salt, its parameters written into the string so they can be raised
later. The cloud hashes a code the app sets (``PUT /v1/riders/{id}/claim``) and seals the
hash in the rider's terms; a kiosk checks a typed code against it (``claim_matches``).
No code or hash is ever logged or printed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

from cloud_sync.errors import InputError, KioskError

CLAIM_MIN_DIGITS, CLAIM_MAX_DIGITS = 4, 6  # the rider page's keypad reads these too
CLAIM_PATTERN = re.compile(rf"^[0-9]{{{CLAIM_MIN_DIGITS},{CLAIM_MAX_DIGITS}}}$")
SCHEME = "scrypt"
LOG2_N, BLOCK_SIZE, PARALLEL = 14, 8, 1  # 16 MiB and ~45 ms per check (x86); raise later
SALT_BYTES, KEY_BYTES = 16, 32


class ClaimFormatError(InputError):
    """A typed claim is not 4 to 6 digits."""


class ClaimHashError(KioskError, ValueError):
    """A stored claim hash cannot be read (unknown scheme, bad parameters or encoding)."""


def normalise_claim(text: str) -> str:
    """The claim as typed, without spaces; ``ClaimFormatError`` unless it is 4-6 digits."""
    code = "".join(text.split())
    if not CLAIM_PATTERN.match(code):
        raise ClaimFormatError(f"a claim is {CLAIM_MIN_DIGITS} to {CLAIM_MAX_DIGITS} digits")
    return code


def _kdf(code: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        code.encode("ascii"),
        salt=salt,
        n=2**log2_n,
        r=r,
        p=p,
        maxmem=256 * r * (2**log2_n + p + 2),
        dklen=KEY_BYTES,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_claim(code: str, salt: bytes | None = None, log2_n: int = LOG2_N) -> str:
    """``scrypt$ln=14,r=8,p=1$<salt>$<key>`` for a 4-6 digit claim (a fresh salt each time)."""
    code = normalise_claim(code)
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    key = _kdf(code, salt, log2_n, BLOCK_SIZE, PARALLEL)
    return f"{SCHEME}$ln={log2_n},r={BLOCK_SIZE},p={PARALLEL}${_b64(salt)}${_b64(key)}"


def _parse(stored: str) -> tuple[bytes, int, int, int, bytes]:
    try:
        scheme, params, salt, key = stored.split("$")
        values = dict(item.split("=", 1) for item in params.split(","))
        log2_n, r, p = int(values["ln"]), int(values["r"]), int(values["p"])
        salt_bytes, key_bytes = _unb64(salt), _unb64(key)
    except (ValueError, KeyError, binascii.Error):
        raise ClaimHashError("the stored claim hash is malformed") from None
    # bounded, so that a hostile record cannot make the kiosk spend minutes or gigabytes
    if scheme != SCHEME or not (10 <= log2_n <= 20 and 1 <= r <= 16 and 1 <= p <= 4):
        raise ClaimHashError(f"the stored claim hash uses unsupported parameters ({params})")
    if len(salt_bytes) < 8 or len(key_bytes) != KEY_BYTES:
        raise ClaimHashError("the stored claim hash has a short salt or key")
    return salt_bytes, log2_n, r, p, key_bytes


def check_claim_hash(stored: str) -> None:
    """``ClaimHashError`` unless a kiosk can check codes against ``stored`` (what the cloud
    asks of a hash an operator sends, so that no rider gets one that matches nothing)."""
    _parse(stored)


def claim_matches(code: str, stored: str) -> bool:
    """Whether ``code`` is the claim hashed in ``stored`` (constant-time comparison)."""
    salt, log2_n, r, p, key = _parse(stored)
    return hmac.compare_digest(_kdf(normalise_claim(code), salt, log2_n, r, p), key)
