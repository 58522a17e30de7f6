"""A proposed template, sealed for the cloud: the encoding never travels or rests in clear.

A kiosk proposes the live encoding of a verified visit as an extra template for a rider
(``template.proposed``). The event waits in the kiosk's outbox (SQLite) and is stored by the
cloud as it arrived, so the encoding inside it is sealed with AES-256-GCM under the
roster data key (``cloud_sync.sealing``): the key that already seals every rider record,
which the kiosk holds (wrapped for its own X25519 key) and the cloud holds in its key file.
No new key is needed, and no party learns anything it could not already read: a kiosk
holding the data key holds every enrolled template anyway.

The associated data binds the blob to its kind, the rider, the proposing kiosk and the data
key's id, so a sealed template copied into another rider's proposal, or another kiosk's,
fails to open. After a data-key rotation a proposal sealed under the old key no longer
opens: the cloud refuses it (``stale_key``), which loses one learning chance, nothing else.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud_sync.errors import IntegrityError
from cloud_sync.roster_wire import ENCODING_SIZE
from cloud_sync.sealing import open_sealed, seal


def template_aad(person_id: str, kiosk_id: str, data_key_id: str) -> bytes:
    return f"template\x00{person_id}\x00{kiosk_id}\x00{data_key_id}".encode()


def seal_template(
    data_key: bytes,
    data_key_id: str,
    person_id: str,
    kiosk_id: str,
    vector: npt.NDArray[np.floating[Any]],
) -> str:
    """The encoding sealed, as base64 text for the event's ``sealed`` field."""
    raw = np.asarray(vector, dtype="<f4")
    if raw.shape != (ENCODING_SIZE,):
        raise ValueError(f"an encoding has {ENCODING_SIZE} values, not {raw.size}")
    blob = seal(data_key, raw.tobytes(), template_aad(person_id, kiosk_id, data_key_id))
    return base64.b64encode(blob).decode()


def open_template(
    data_key: bytes, data_key_id: str, person_id: str, kiosk_id: str, sealed: str
) -> npt.NDArray[np.float32]:
    """The encoding back (``IntegrityError`` when it does not open or is not one)."""
    try:
        blob = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError("sealed template is not base64") from None
    plain = open_sealed(data_key, blob, template_aad(person_id, kiosk_id, data_key_id))
    if len(plain) != ENCODING_SIZE * 4:
        raise IntegrityError(f"sealed template holds {len(plain)} bytes, not an encoding")
    return np.frombuffer(plain, dtype="<f4").astype(np.float32)
