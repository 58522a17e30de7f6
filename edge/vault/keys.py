"""A kiosk's own key pairs: X25519 to receive wrapped data keys, Ed25519 to sign.

Both come from systemd credentials when the service has them (``kiosk-box-key``,
``kiosk-signing-key``: encrypted on the disk, bound to the TPM2 or the host key; see
docs/installing.md), else from PKCS#8 PEM files with mode 0600 in the kiosk's key folder,
the plain mode for development that ``kiosk doctor`` reports as weaker. ``kiosk
provision`` creates the files; a local roster in demo and development use creates them on
first use. A key file that group or others can read is refused, and the kiosk will not
start with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloud_sync import keyfiles
from cloud_sync.errors import SigningKeyError
from cloud_sync.sealing import key_id, raw_public
from edge.vault.errors import KeyFileError, MissingKeyError

BOX_FILE = "kiosk-x25519.pem"
SIGN_FILE = "kiosk-ed25519.pem"


@dataclass(frozen=True)
class DeviceKeys:
    box: X25519PrivateKey
    sign: Ed25519PrivateKey

    @property
    def box_key_id(self) -> str:
        return key_id(raw_public(self.box.public_key()))

    def __repr__(self) -> str:
        return f"DeviceKeys(box={self.box_key_id})"


def device_keys(folder: Path, create: bool = False) -> DeviceKeys:
    """Load this kiosk's keys from ``folder`` (creating them when ``create``)."""
    try:
        box = keyfiles.load_or_create(folder / BOX_FILE, X25519PrivateKey, create=create)  # type: ignore[type-abstract]
        sign = keyfiles.load_or_create(folder / SIGN_FILE, Ed25519PrivateKey, create=create)  # type: ignore[type-abstract]
    except SigningKeyError as exc:
        if "missing" in str(exc):
            raise MissingKeyError(
                f"{exc} (run `kiosk provision` to create this kiosk's keys)"
            ) from None
        raise KeyFileError(str(exc)) from None
    return DeviceKeys(box=box, sign=sign)
