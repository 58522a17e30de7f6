"""Private key files: created once with mode 0600, refused when others can read them.

Both of a kiosk's key pairs live in files like these: Ed25519 to sign what it sends,
X25519 to receive data keys wrapped for it. A key may also come from systemd credentials
(``$CREDENTIALS_DIRECTORY``), which take precedence over the key folder and are never
created by the kiosk: the signing key as ``kiosk-signing-key``, the box key as
``kiosk-box-key`` (``CREDENTIAL_NAMES``; a credential named like the key's file is read
too). Made with ``systemd-creds encrypt`` and given by ``LoadCredentialEncrypted=``, they
are never stored in clear on the SD card (docs/installing.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloud_sync.errors import SigningKeyError
from cloud_sync.files import fsync_dir
from cloud_sync.private_files import private_dir

PrivateKey = TypeVar("PrivateKey", Ed25519PrivateKey, X25519PrivateKey)


#: The systemd credential names of the kiosk's private keys, by the name of their file.
CREDENTIAL_NAMES = {
    "kiosk-ed25519.pem": "kiosk-signing-key",
    "kiosk-x25519.pem": "kiosk-box-key",
}
SIGNING_CREDENTIAL = CREDENTIAL_NAMES["kiosk-ed25519.pem"]


def credential_path(filename: str, credential: str | None = None) -> Path | None:
    """The key's file in ``$CREDENTIALS_DIRECTORY``, when systemd provides it: named
    ``credential`` (by default the documented name for ``filename``), else ``filename``."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    for name in (credential or CREDENTIAL_NAMES.get(filename), filename):
        if name and (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


#: No key or password file is larger than this (a PEM key takes under 1 kB).
MAX_SECRET_BYTES = 64 * 1024


def read_small_file(path: Path, limit: int = MAX_SECRET_BYTES) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes.

    ``FileNotFoundError`` when it is missing; ``ValueError`` for anything else (a device
    such as /dev/zero, a FIFO, a folder, a larger file), which is then never opened or
    read whole: a mistyped path neither hangs the command nor fills its memory.
    """
    if not path.is_file():
        if not path.exists():
            raise FileNotFoundError(2, "No such file", str(path))
        raise ValueError(f"{path}: not a regular file")
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit} bytes, which no key or password is")
    return data


def read_private_key(path: Path, kind: type[PrivateKey]) -> PrivateKey:
    """Read a PKCS#8 PEM key of ``kind``, refusing a file that group or others can read
    and anything but a small regular file (``read_small_file``)."""
    try:
        mode = path.stat().st_mode & 0o777
        data = read_small_file(path)
    except FileNotFoundError:
        raise SigningKeyError(f"{path}: key file is missing") from None
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the key file ({exc.strerror})") from None
    except ValueError as exc:
        raise SigningKeyError(f"{exc}: not a key file") from None
    if mode & 0o077:
        raise SigningKeyError(
            f"{path}: key file is readable by others (mode {mode:o}); run chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(f"{path}: not a PEM private key") from None
    if not isinstance(key, kind):
        raise SigningKeyError(f"{path}: not an {kind.__name__.removesuffix('PrivateKey')} key")
    return key


def write_secret(path: Path, data: bytes, replace: bool = False) -> bool:
    """Write ``data`` to ``path`` with mode 0600, durably (file and folder fsynced).

    Unless ``replace``, never over an existing file: returns False when the file exists
    (another process created it first, and its content wins).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        private_dir(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            if replace:
                tmp.replace(path)
            else:
                os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot write the key file ({exc.strerror})") from None
    return True


def write_private_key(path: Path, key: Ed25519PrivateKey | X25519PrivateKey) -> bool:
    """Write ``key`` to ``path`` (PKCS#8 PEM, mode 0600), durably, unless the file exists.

    Returns False when another process created the file first (its key wins).
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return write_secret(path, pem)


def load_or_create(
    path: Path, kind: type[PrivateKey], create: bool = True, credential: str | None = None
) -> PrivateKey:
    """The key from systemd credentials (``credential_path``), else from ``path``, created
    there when allowed."""
    given = credential_path(path.name, credential)
    if given is not None:
        return read_private_key(given, kind)
    if not path.exists() and create:
        key = kind.generate()
        if write_private_key(path, key):
            return key
    return read_private_key(path, kind)
