"""Update bundles: their format, how one is trusted, and the rules of a safe switch.

A bundle is one folder (or a ``.tar``/``.tar.gz`` of one) made by ``scripts/build-bundle``::

    manifest.json              what is in the bundle, with the sha256 and size of every file
    manifest.sig               base64 Ed25519 signature of manifest.json's bytes (release key)
    requirements.lock          the lock the wheels were chosen from (as committed)
    requirements/<arch>.txt    per architecture: name==version --hash of the wheel shipped
    wheels/*.whl               the project wheel and every dependency, aarch64 and x86_64
    systemd/*.service          the units of this version
    doc/README.md

``verify_bundle`` checks the signature first (over the exact bytes of ``manifest.json``,
with the public key pinned in ``update.release_public_key``), then that every file listed
is there with its size and digest, and that nothing unlisted is. The lock's own hashes are
those of PyPI's files; ``requirements/<arch>.txt`` carries the hashes of the wheels in the
bundle (a package PyPI has only as source is shipped as the wheel built from it), so pip
installs with ``--require-hashes`` and the manifest vouches for those lists. The private
copy an update works from is ``edge.update.unpack.staged``'s (an archive is unpacked only
as far as its trusted manifest lists).

The rules of a switch, as pure functions: ``wait_healthy`` (N consecutive healthy answers
before a deadline) and ``to_prune`` (which installed versions may go).

Its errors (``UpdateError`` and the tree under it) are in ``edge.update.errors``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from edge.update.errors import (
    BundleError,
    SignatureError,
)

FORMAT = 1
NAME = "powerbank-kiosk"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ARCHES: tuple[str, ...] = ("aarch64", "x86_64")
VERSION = re.compile(r"^[0-9][0-9A-Za-z.+_-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, max_length=300)
    sha256: str = Field(pattern=SHA256.pattern)
    size: int = Field(ge=0)


class Manifest(BaseModel):
    """``manifest.json``: the version, what to install for each architecture, every file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    name: Literal["powerbank-kiosk"] = "powerbank-kiosk"
    version: str = Field(pattern=VERSION.pattern)
    created_at: AwareDatetime  # when it was built (UTC): a newer build is a later one
    python: str = Field(pattern=r"^3\.[0-9]{1,2}$")
    project_wheel: str
    requirements: dict[str, str]
    units: tuple[str, ...]
    files: tuple[FileEntry, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        listed = {entry.path for entry in self.files}
        if len(listed) != len(self.files):
            raise ValueError("a file is listed twice")
        for path in listed:
            if not safe_path(path):
                raise ValueError(f"unsafe file path {path!r}")
        unknown = sorted(set(self.requirements) - set(ARCHES))
        if unknown or not self.requirements:
            raise ValueError(f"requirements: architectures must be among {', '.join(ARCHES)}")
        foreign = [unit for unit in self.units if not UNIT.fullmatch(unit)]
        if foreign:  # linked into /etc/systemd/system, it would override the system's own
            raise ValueError(
                f"units: {foreign[0]!r} is not one of the kiosk's (systemd/kiosk-*.service)"
            )
        needed = [self.project_wheel, *self.requirements.values(), *self.units]
        missing = [path for path in needed if path not in listed]
        if missing:
            raise ValueError(f"{missing[0]} is named but not listed in files")
        wheel = PurePosixPath(self.project_wheel).name
        if not (wheel.endswith(".whl") and f"-{self.version}-" in wheel):
            raise ValueError(f"project_wheel {wheel} is not version {self.version}'s wheel")
        return self

    def entry(self, path: str) -> FileEntry | None:
        return next((item for item in self.files if item.path == path), None)


#: The units a bundle may carry: the kiosk's own, linked into the unit folder at a switch.
UNIT = re.compile(r"systemd/kiosk-[a-z0-9][a-z0-9-]{0,40}\.service")


def safe_path(path: str) -> bool:
    """A relative POSIX path inside the bundle: no ``..``, no absolute path, no oddities."""
    pure = PurePosixPath(path)
    return (
        not pure.is_absolute()
        and all(part not in ("", ".", "..") for part in path.split("/"))
        and not any(ord(char) < 32 for char in path)
        and "\\" not in path
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path, paths: Iterable[str]) -> tuple[FileEntry, ...]:
    """The manifest's entry for each of ``paths`` (relative to ``folder``), sorted."""
    return tuple(
        FileEntry(path=path, sha256=sha256_file(folder / path), size=(folder / path).stat().st_size)
        for path in sorted(paths)
    )


def manifest_bytes(manifest: Manifest) -> bytes:
    """The canonical text of ``manifest.json`` (what the signature covers)."""
    data = manifest.model_dump(mode="json")
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes, origin: str = MANIFEST) -> Manifest:
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise BundleError(f"{origin}: {where}: {first['msg']}") from None


# -- signatures -------------------------------------------------------------------------------


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw public key, base64: the value of ``update.release_public_key``."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign_manifest(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """The content of ``manifest.sig``."""
    return base64.b64encode(key.sign(data)) + b"\n"


def check_signature(data: bytes, signature: bytes | None, public_key: str | None) -> None:
    """Raise ``SignatureError`` unless ``signature`` is the release key's, over ``data``."""
    if public_key is None:
        raise SignatureError(
            "no release key is pinned (update.release_public_key), so no bundle can be "
            "trusted; set it, or update.require_signature = false on a development kiosk"
        )
    if signature is None:
        raise SignatureError(f"the bundle is not signed (no {SIGNATURE})")
    try:
        raw_key = base64.b64decode(public_key, validate=True)
        raw_signature = base64.b64decode(signature.strip(), validate=True)
        Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_signature, data)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{SIGNATURE} is not a base64 Ed25519 signature") from None
    except InvalidSignature:
        raise SignatureError(
            f"bad signature: {MANIFEST} is not signed by the release key this kiosk trusts"
        ) from None


def trusted_manifest(
    data: bytes,
    signature: bytes | None,
    public_key: str | None,
    require_signature: bool = True,
    origin: Path | str = MANIFEST,
) -> Manifest:
    """The manifest in ``data``, once its signature checks out (when one is required, or
    given with a key to check it against)."""
    if require_signature or (signature is not None and public_key is not None):
        check_signature(data, signature, public_key)
    return parse_manifest(data, str(origin))


# -- a bundle on disk -------------------------------------------------------------------------


def verify_bundle(folder: Path, public_key: str | None, require_signature: bool = True) -> Manifest:
    """The bundle's manifest, once its signature, every file and nothing else check out."""
    manifest_path = folder / MANIFEST
    try:
        if manifest_path.exists() and not manifest_path.is_file():  # a pipe would never end
            raise BundleError(f"{manifest_path}: not a bundle's manifest (not a regular file)")
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{manifest_path}: larger than {MAX_MANIFEST_BYTES} bytes")
        data = manifest_path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{folder}: not an update bundle (no {MANIFEST})") from None
    except OSError as exc:
        raise BundleError(f"{manifest_path}: cannot be read: {exc.strerror}") from None
    signature_path = folder / SIGNATURE
    signature = signature_path.read_bytes() if signature_path.is_file() else None
    manifest = trusted_manifest(data, signature, public_key, require_signature, manifest_path)
    for entry in manifest.files:
        path = folder / entry.path
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"{entry.path}: missing from the bundle")
        if path.stat().st_size != entry.size:
            raise BundleError(
                f"{entry.path}: {path.stat().st_size} bytes, the manifest says {entry.size}"
            )
        if sha256_file(path) != entry.sha256:
            raise BundleError(f"{entry.path}: bad checksum (sha256 differs from the manifest)")
    listed = {entry.path for entry in manifest.files} | {MANIFEST, SIGNATURE}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if (path.is_file() or path.is_symlink()) and relative not in listed:
            raise BundleError(f"{relative}: in the bundle but not in its manifest")
    return manifest


# -- rules of a switch ------------------------------------------------------------------------


def wait_healthy(
    check: Callable[[], tuple[bool, str]],
    timeout_s: float,
    interval_s: float,
    passes: int,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> tuple[bool, str]:
    """Ask ``check`` until it answers healthy ``passes`` times in a row (True) or the
    deadline passes (False); with the last answer's detail."""
    deadline = clock() + timeout_s
    streak, detail = 0, "no answer yet"
    while True:
        ok, detail = check()
        streak = streak + 1 if ok else 0
        if streak >= passes:
            return True, detail
        if clock() + interval_s > deadline:
            return False, detail
        sleep(interval_s)


def to_prune(
    versions: Sequence[str], current: str | None, previous: str | None, keep: int
) -> list[str]:
    """Installed versions (oldest first) that may be removed: all but the newest ``keep``,
    never the current or previous one."""
    kept = set(versions[-keep:]) | {current, previous}
    return [version for version in versions if version not in kept]
