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

from cloud_sync.keyfiles import credential_path
from edge.vault.erasure import DEFAULT_WAIT_S
from edge.vault.errors import KeyFileError, MissingKeyError
from edge.vault.files import check_roster_file, check_roster_target, holds_data_keys
from edge.vault.keys import BOX_FILE, device_keys
from edge.vault.store import RosterStore
from edge.vault.values import Rider
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
    *,
    read_only: bool = False,
    erase_wait_s: float = DEFAULT_WAIT_S,
) -> RosterStore:
    """Open the roster with this kiosk's keys.

    A kiosk with a pinned cloud key must have been provisioned (its keys exist). Without
    one the roster is local (demo and development): keys are created on first use, but
    only for a roster that holds no data key yet; a roster sealed for keys that are not
    here is refused (``MissingKeyError``) rather than given new keys it cannot open.

    ``read_only`` (commands that only look): nothing is created, neither the roster
    (``RosterMissingError``) nor a key (``MissingKeyError``), and nothing is written.
    """
    public = parse_roster_key(cloud_roster_key)
    if read_only:
        check_roster_file(path)  # missing, empty or not a roster: said before any key
    else:
        check_roster_target(path)  # another kind of file: refused before any key is made
    box = keys_dir / BOX_FILE
    if not box.exists() and credential_path(BOX_FILE) is None:
        _refuse_missing_keys(path, keys_dir, public is not None or read_only)
    keys = device_keys(keys_dir, create=not read_only and public is None)
    return RosterStore(
        path, keys, kiosk_id, model, public, read_only=read_only, erase_wait_s=erase_wait_s
    )


def _refuse_missing_keys(path: Path, keys_dir: Path, never_create: bool) -> None:
    """``MissingKeyError`` when this kiosk's keys are missing and may not be made here."""
    box = keys_dir / BOX_FILE
    if holds_data_keys(path):
        raise MissingKeyError(
            f"{box}: key file is missing, and the roster {path} is sealed for a kiosk key "
            f"that is not here: copy the keys folder that came with it to {keys_dir}"
        )
    if never_create:
        raise MissingKeyError(
            f"{box}: key file is missing (run `kiosk provision` to make this kiosk's keys, "
            "or `kiosk enroll` for a local roster)"
        )


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
