"""The private copy of a bundle an update works from (``staged``): a folder copied, or a
``.tar``/``.tar.gz`` unpacked, under the update root, so nothing can change it between the
checks and the install; removed afterwards.

An archive comes from anywhere, so it is read in two passes and nothing of it is written
before its manifest is trusted:

1. the member headers only: each must be a plain file or folder with a safe path
   (``bundle.safe_path``), named once, at most ``MAX_MEMBERS`` of them, their sizes adding
   up to less than the disk can spare (``room``: ``MAX_UNPACKED_BYTES`` at most, and
   ``RESERVE_BYTES`` always left free for the kiosk's outbox and logs);
2. ``manifest.json`` and ``manifest.sig`` are read from the archive and handed to
   ``trust`` (the signature check and the manifest's parse), then only the files the
   trusted manifest lists are written, each exactly the size it declares, as plain 0644
   files; anything else stops the unpacking before a byte of it is written.

So an archive bomb, a member larger than declared or one the manifest does not list costs
no disk space, and one not signed by the release key costs no more than its headers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from edge.update.bundle import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE, Manifest, safe_path
from edge.update.errors import BundleError, UpdateStateError

#: The manifest's bytes and the signature's (None: not signed) -> the trusted manifest.
Trust = Callable[[bytes, bytes | None], Manifest]

MAX_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 4 * 1024**3
RESERVE_BYTES = 256 * 1024**2
MAX_SIGNATURE_BYTES = 4096
_BLOCK = 1024 * 1024


def room(folder: Path) -> int:
    """How many bytes an unpacked bundle may take in ``folder``'s file system."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return MAX_UNPACKED_BYTES
    if usage.total == 0:  # a file system that does not tell (some FUSE ones): unknown
        return MAX_UNPACKED_BYTES
    return max(0, min(MAX_UNPACKED_BYTES, usage.free - RESERVE_BYTES))


def _too_big(bundle: Path, total: int, root: Path) -> BundleError:
    return BundleError(
        f"{bundle}: unpacked it takes more than the {room(root) // 1024**2} MB {root} can "
        f"spare (at least {total // 1024**2} MB; {RESERVE_BYTES // 1024**2} MB are kept free "
        "for the kiosk): not an update bundle, or free some space"
    )


@contextlib.contextmanager
def staged(bundle: Path, root: Path, trust: Trust) -> Iterator[Path]:
    """A private copy of ``bundle`` under ``root`` (see the module's docstring)."""
    if not bundle.exists():
        raise BundleError(f"{bundle}: no such file or folder")
    if not (bundle.is_file() or bundle.is_dir()):  # a pipe or a device would never end
        raise BundleError(f"{bundle}: not a bundle (a pipe or a device): give the .tar.gz")
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        try:
            if bundle.is_dir():
                _copy_folder(bundle, work / "bundle", root)
            else:
                _unpack(bundle, work / "bundle", root, trust)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise UpdateStateError(
                    f"{root}: the disk filled up while {bundle} was copied there: nothing was "
                    "installed; free some space"
                ) from None
            raise
        yield work / "bundle"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_folder(bundle: Path, target: Path, root: Path) -> None:
    total = sum(path.lstat().st_size for path in bundle.rglob("*") if path.is_file())
    if total > room(root):
        raise _too_big(bundle, total, root)
    try:
        shutil.copytree(bundle, target, symlinks=True)
    except (shutil.Error, OSError) as exc:  # a pipe, a device, an unreadable file
        first = exc.args[0][0] if isinstance(exc, shutil.Error) else (exc.filename, exc)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise
        raise BundleError(f"{bundle}: not a bundle folder: {first[0]}: {first[-1]}") from None


def _unpack(bundle: Path, target: Path, root: Path, trust: Trust) -> None:
    try:
        with tarfile.open(bundle) as archive:
            members = _headers(bundle, archive, room(root), root)
            manifest = trust(
                _read(bundle, archive, members, MANIFEST, MAX_MANIFEST_BYTES) or b"",
                _read(bundle, archive, members, SIGNATURE, MAX_SIGNATURE_BYTES),
            )
            sizes = {entry.path: entry.size for entry in manifest.files}
            sizes.update({MANIFEST: members[MANIFEST].size})
            if SIGNATURE in members:
                sizes[SIGNATURE] = members[SIGNATURE].size
            target.mkdir(mode=0o700)
            for path, member in members.items():
                if member.isdir():
                    (target / path).mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                if path not in sizes:
                    raise BundleError(f"{path}: in the bundle but not in its manifest")
                if member.size != sizes[path]:
                    raise BundleError(
                        f"{path}: {member.size} bytes, the manifest says {sizes[path]}"
                    )
                source = archive.extractfile(member)
                assert source is not None  # a regular file, checked in _headers
                _write(source, target / path, member.size)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{bundle}: not a readable bundle archive: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        raise BundleError(f"{bundle}: not a readable bundle archive: {exc}") from None


def _headers(
    bundle: Path, archive: tarfile.TarFile, limit: int, root: Path
) -> dict[str, tarfile.TarInfo]:
    """Pass 1: each member by its path inside the bundle (without the archive's one top
    folder, if it has one), checked; nothing is read but the headers."""
    found: list[tuple[str, tarfile.TarInfo]] = []
    names, total = set(), 0
    for member in archive:
        name = member.name.removeprefix("./").rstrip("/")
        if not name:
            continue
        if not ((member.isfile() or member.isdir()) and safe_path(name)):
            raise BundleError(f"{bundle}: {member.name}: not allowed in a bundle")
        if name in names:
            raise BundleError(f"{bundle}: {member.name}: in the archive twice")
        if len(found) >= MAX_MEMBERS:
            raise BundleError(f"{bundle}: more than {MAX_MEMBERS} members: not an update bundle")
        total += member.size if member.isfile() else 0
        if total > limit:
            raise _too_big(bundle, total, root)
        names.add(name)
        found.append((name, member))
    tops = {name.split("/", 1)[0] for name, _ in found}
    top = next(iter(tops)) if len(tops) == 1 else ""
    if top and any(name == top and member.isfile() for name, member in found):
        top = ""
    cut = len(top) + 1 if top else 0
    members = {name[cut:]: member for name, member in found if name != top}
    if MANIFEST not in members or not members[MANIFEST].isfile():
        raise BundleError(f"{bundle}: not an update bundle (no {MANIFEST})")
    return members


def _read(
    bundle: Path,
    archive: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    path: str,
    limit: int,
) -> bytes | None:
    member = members.get(path)
    if member is None or not member.isfile():
        return None
    if member.size > limit:
        raise BundleError(f"{bundle}: {path}: larger than {limit} bytes")
    source = archive.extractfile(member)
    return source.read() if source is not None else None


def _write(source: IO[bytes], path: Path, size: int) -> None:
    """``size`` bytes of ``source`` into a new plain file (0644) at ``path``."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        left = size
        while left:
            block = source.read(min(_BLOCK, left))
            if not block:
                raise BundleError(f"{path.name}: the archive ends inside it")
            handle.write(block)
            left -= len(block)
