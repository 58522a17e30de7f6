"""Whether the state folder's file system can take one more eject intent.

The outbox's byte budget (``cloud_sync.outbox_budget``) says whether the outbox may hold one
more rental's event; this says whether the disk under it can: its free space (``statvfs``)
must stay above ``DISK_RESERVE``, and after a write the file system refused for lack of
space (the outbox's ``disk_full``) a probe must allocate that reserve before the kiosk
rents again. Until then no intent is written and no eject sent: the kiosk is out of service
with the reason ``disk_full`` and comes back by itself once space returns.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DISK_RESERVE = 1024 * 1024  # room for an intent, its settling event and runtime.json


def free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged writer may still use on ``folder``'s file system; None when it
    reports no size at all (a FUSE file system without ``statfs`` answers zeros): then
    only a write the file system refused can tell that it is full."""
    stats = os.statvfs(folder)
    if stats.f_blocks == 0:
        return None
    return stats.f_bavail * stats.f_frsize


def can_allocate(folder: Path, size: int) -> bool:
    """Whether ``size`` bytes can be allocated in ``folder`` right now (quotas included):
    a temporary file is given the blocks and removed."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".space-probe-") as probe:
            os.posix_fallocate(probe.fileno(), 0, size)
    except OSError:
        return False
    return True


def has_room(folder: Path, failed: bool, reserve: int = DISK_RESERVE) -> bool:
    """Whether ``folder``'s file system can take an eject intent: more than ``reserve`` free,
    and, when the last write ``failed`` for lack of space, ``reserve`` actually allocated."""
    try:
        free = free_bytes(folder)
    except OSError:  # cannot tell: never eject without the room for its record
        return False
    if free is not None and free < reserve:
        return False
    return not failed or can_allocate(folder, reserve)
