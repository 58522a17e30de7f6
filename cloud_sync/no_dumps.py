"""No core dump of a process that holds biometric data or keys.

A kiosk's or the cloud's memory holds what the disk holds only sealed: the decrypted roster
(every rider's templates), camera frames, the data key, the claim hashes. A crash that
leaves a core dump (``core`` in the working folder, systemd-coredump's
``/var/lib/systemd/coredump``, apport's ``/var/crash``) would write all of it in clear to
the SD card of a kiosk in a public place. Every ``kiosk`` and ``kiosk-cloud`` command
therefore sets its core-file limit to 0, soft and hard (inherited by what it starts;
systemd-coredump and apport honour it) and marks itself not dumpable (``PR_SET_DUMPABLE``
0: no core either way, and no other process of the same user may read its memory through
``ptrace`` or ``/proc/PID/mem``). The systemd units say ``LimitCORE=0`` as well.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys

PR_SET_DUMPABLE = 4


def forbid_core_dumps() -> None:
    """Make this process leave no core dump and its memory unreadable to its peers."""
    with contextlib.suppress(ValueError, OSError):  # lowering a limit is always allowed
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # a libc without prctl
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
