"""Opening the roster from settings, and the live in-memory copy the matcher uses.

``LiveRoster`` decrypts the store into a ``Snapshot`` (riders plus one float32 gallery per
encoder model). A reload builds a whole new snapshot and then replaces the reference in
one assignment, so a decision in progress sees either the old roster or the new one,
never half of each.
"""

from __future__ import annotations

import base64
import binascii
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.vault.errors import KeyFileError
from edge.vault.keys import BOX_FILE, device_keys
from edge.vault.store import Rider, RosterStore
from edge.vision.matcher import Gallery

ENCODER_MODEL = "dlib_resnet_v1"


def parse_roster_key(text: str | None) -> Ed25519PublicKey | None:
    if not text:
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise KeyFileError("roster.cloud_roster_key is not a base64 Ed25519 public key") from None


def open_roster(
    path: Path,
    keys_dir: Path,
    kiosk_id: str,
    cloud_roster_key: str | None = None,
    model: str = ENCODER_MODEL,
) -> RosterStore:
    """Open the roster with this kiosk's keys.

    A kiosk with a pinned cloud key must have been provisioned (its keys exist). Without
    one the roster is local (demo and development): keys are created on first use.
    """
    public = parse_roster_key(cloud_roster_key)
    create = public is None and not (keys_dir / BOX_FILE).exists()
    return RosterStore(path, device_keys(keys_dir, create=create), kiosk_id, model, public)


@dataclass(frozen=True)
class Snapshot:
    version: int
    riders: dict[str, Rider] = field(default_factory=dict)
    gallery: Gallery = field(default_factory=lambda: Gallery([]))


class LiveRoster:
    """The decrypted roster in memory, swapped whole on reload."""

    def __init__(self, store: RosterStore, model: str = ENCODER_MODEL) -> None:
        self._store = store
        self._model = model
        self._reload_lock = threading.Lock()
        self._snapshot = Snapshot(version=-1)
        self.reload()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def reload(self) -> Snapshot:
        from edge.vision.setup import gallery_of  # the same gallery the kiosk builds

        with self._reload_lock:
            loaded = self._store.load()
            snapshot = Snapshot(
                version=loaded.version,
                riders=loaded.riders,
                gallery=gallery_of(loaded, self._model),
            )
            self._snapshot = snapshot
            return snapshot
