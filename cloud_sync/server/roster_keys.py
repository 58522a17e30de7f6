"""The cloud's two roster keys, as files readable by the service user only.

- the roster **signing key** (Ed25519, PKCS#8 PEM): signs every delta; kiosks pin its
  public half at provisioning;
- the roster **data key** (32 raw bytes, AES-256): seals every rider record in the cloud
  database, and reaches each kiosk wrapped for that kiosk's X25519 key.

Both are created with mode 0600 by ``kiosk-cloud keys init`` (or on the first start with
SQLite) and are refused when group or others can read them. A file of the same name in
``$CREDENTIALS_DIRECTORY`` (systemd credentials) takes precedence and is never written.

Rotating the data key is crash-safe: the new key is first written beside the current one
(``<file>.next``), the rows are re-sealed under it in one database transaction that also
records its id, and only then does it replace the current file (the old key is gone). A
process that finds the database naming the ``.next`` key finishes the swap itself. One
rotation at a time (``rotating``: a lock on ``<file>.lock``, for every thread and process
on the machine): a second one staging its key over the first's before the first promoted
it left the database sealed under a key no file held, and every rider lost.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync import keyfiles
from cloud_sync.errors import SigningKeyError
from cloud_sync.files import fsync_dir
from cloud_sync.sealing import KEY_BYTES, key_id, new_data_key
from cloud_sync.signing import public_key_text

SIGNING_FILE = "roster-ed25519.pem"
DATA_FILE = "roster-data.key"


@dataclass(frozen=True)
class DataKey:
    material: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.material)

    def __repr__(self) -> str:  # never print a key
        return f"DataKey({self.key_id})"


def _read_secret(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode & 0o777
        data = keyfiles.read_small_file(path)
    except FileNotFoundError:
        raise SigningKeyError(
            f"{path}: key file is missing (run `kiosk-cloud keys init`)"
        ) from None
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the key file ({exc.strerror})") from None
    except ValueError as exc:
        raise SigningKeyError(f"{exc}: not a key file") from None
    if mode & 0o077:
        raise SigningKeyError(
            f"{path}: key file is readable by others (mode {mode:o}); run chmod 600 {path}"
        )
    if len(data) != KEY_BYTES:
        raise SigningKeyError(f"{path}: a roster data key is {KEY_BYTES} bytes, not {len(data)}")
    return data


class RosterKeyFiles:
    """The signing key and the data key of one cloud, at the paths its settings name."""

    def __init__(self, signing_path: Path, data_path: Path) -> None:
        self.signing_path = signing_path
        self.data_path = data_path
        self._signing: Ed25519PrivateKey | None = None
        self._data: DataKey | None = None

    @property
    def next_path(self) -> Path:
        return self.data_path.with_name(self.data_path.name + ".next")

    def _data_source(self) -> Path:
        return keyfiles.credential_path(self.data_path.name) or self.data_path

    @staticmethod
    def _missing(path: Path) -> bool:
        return keyfiles.credential_path(path.name) is None and not path.exists()

    def init(self) -> list[Path]:
        """Create whichever key file is missing; returns the files created."""
        created: list[Path] = []
        if self._missing(self.signing_path) and keyfiles.write_private_key(
            self.signing_path, Ed25519PrivateKey.generate()
        ):
            created.append(self.signing_path)
        if self._missing(self.data_path) and keyfiles.write_secret(
            self.data_path, new_data_key(), replace=False
        ):
            created.append(self.data_path)
        self.load()
        return created

    def load(self) -> None:
        """Read both keys (``SigningKeyError`` naming the file when one is unusable)."""
        try:
            self._signing = keyfiles.load_or_create(
                self.signing_path,
                Ed25519PrivateKey,  # type: ignore[type-abstract]
                create=False,
            )
        except SigningKeyError as exc:
            if "missing" not in str(exc):
                raise
            raise SigningKeyError(f"{exc} (run `kiosk-cloud keys init`)") from None
        self._data = DataKey(_read_secret(self._data_source()))

    @property
    def signing(self) -> Ed25519PrivateKey:
        if self._signing is None:
            self.load()
        assert self._signing is not None
        return self._signing

    @property
    def public_key(self) -> str:
        """The roster public key as kiosks pin it (base64 of 32 raw bytes)."""
        return public_key_text(self.signing)

    def data_key(self, expected_id: str | None = None) -> DataKey:
        """The current data key; when the database names another one, read the files
        again (another process rotated it) and finish an interrupted rotation."""
        if self._data is None:
            self.load()
        assert self._data is not None
        if expected_id is None or self._data.key_id == expected_id:
            return self._data
        self._data = DataKey(_read_secret(self._data_source()))
        if self._data.key_id == expected_id:
            return self._data
        if self.next_path.exists() and DataKey(_read_secret(self.next_path)).key_id == expected_id:
            self.promote_next()
            self._data = DataKey(_read_secret(self.data_path))
            if self._data.key_id == expected_id:
                return self._data
        raise SigningKeyError(
            f"{self._data_source()}: roster data key {self._data.key_id} is not the one the "
            f"database is sealed with ({expected_id}); install the current key file"
        )

    # -- rotation --------------------------------------------------------------------------

    def _check_rotatable(self) -> None:
        if keyfiles.credential_path(self.data_path.name) is not None:
            raise SigningKeyError(
                f"the roster data key comes from systemd credentials ({self._data_source()}); "
                "rotate it where the credential is made, not here"
            )

    @contextmanager
    def rotating(self) -> Iterator[None]:
        """Hold this from staging a new data key until it is promoted (or given up): one
        rotation at a time, whichever thread or process on this machine runs it."""
        self._check_rotatable()
        lock_path = self.data_path.with_name(self.data_path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SigningKeyError(f"{lock_path}: cannot open the lock ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: threads of one process wait too
            yield
        finally:
            os.close(fd)  # and the lock with it

    def stage_next(self) -> DataKey:
        """A new data key, written to ``<file>.next`` (the current key stays in place);
        call it within ``rotating``."""
        self._check_rotatable()
        fresh = DataKey(new_data_key())
        keyfiles.write_secret(self.next_path, fresh.material, replace=True)
        return fresh

    def promote_next(self) -> None:
        """The staged key becomes the current one; the old key file is replaced."""
        try:
            self.next_path.replace(self.data_path)
            fsync_dir(self.data_path.parent)
        except FileNotFoundError:
            return  # another process finished the swap
        except OSError as exc:
            raise SigningKeyError(f"{self.data_path}: cannot replace the key ({exc})") from None
        self._data = None

    def discard_next(self) -> None:
        self.next_path.unlink(missing_ok=True)
