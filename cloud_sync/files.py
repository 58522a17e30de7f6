"""Files written so that a power cut leaves the old content or the new, never a torn or
empty file: the one way the kiosk and the cloud replace a file.

``write_atomic``: a temporary file beside the target, written in full and fsynced, renamed
over the target, then the folder fsynced (the rename itself is on the disk only then).
``remove_durably``: unlink, then fsync the folder. Both raise ``OSError``; each caller
turns it into its package's error. ``read_small`` reads a small state file back: a pipe,
a device or a folder in its place is an ``OSError``, never a read that blocks or never
ends. Used by ``private_files.write_private`` (runtime state,
the maintenance flag), ``keyfiles`` and provisioning (``edge.provision.apply``).
"""

from __future__ import annotations

import contextlib
import grp
import os
import stat
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename, a new or removed file) durable."""
    with contextlib.suppress(OSError):  # some file systems (FAT) refuse it on folders
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, group: str | None = None) -> None:
    """Replace ``path`` with ``data`` (file ``mode``; ``group`` when root and it exists):
    temporary file, fsync, rename, fsync of the folder. The folder must exist."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            if group is not None and os.geteuid() == 0:
                with contextlib.suppress(KeyError):  # no such group: root's own
                    os.fchown(fd, -1, grp.getgrnam(group).gr_gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_durably(path: Path) -> bool:
    """Remove ``path`` and make the removal durable; False when it was not there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def read_small(path: Path, limit: int = 1024 * 1024) -> bytes:
    """The bytes of the regular file at ``path`` (``FileNotFoundError`` without one), at
    most ``limit``; ``OSError`` when something else is in its place or it is larger."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a pipe with no writer does not block
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file (a folder, a pipe or a device)")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path}: larger than {limit} bytes")
    return data
