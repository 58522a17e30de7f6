"""Ctrl-C, a closed terminal or a stop in the middle of a change the technician made.

A command that changes the kiosk in several steps (an eject's intent, the board, its
``slot.ejected`` event; a slot's flag, the board, its ``slot.service`` event; the
maintenance flag and its event) holds SIGINT, SIGHUP and SIGTERM until its last step is
written and its outcome printed (``finishing``): each step is bounded (the board's
timeouts, ``roster.erase_wait_s``), so the wait is a few seconds at most. The signal is then
delivered as it came: Ctrl-C ends the command with ``kiosk: interrupted`` and exit 130, a
hang-up or SIGTERM ends it as it would have, the change complete and recorded. Only
SIGKILL or a power cut can still cut the steps apart, and the eject journal covers those.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HELD = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)


@contextlib.contextmanager
def finishing() -> Iterator[None]:
    """Hold ``HELD`` signals while the block runs; deliver the first that came once it
    ends (a Ctrl-C only when it returned: a failed block's error is the command's answer).
    Outside the main thread, nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        came.append(signum)

    before = {signum: signal.signal(signum, note) for signum in HELD}
    failed = True
    try:
        yield
        failed = False
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        # a block that failed has its own line and exit code: a Ctrl-C adds nothing to it
        if came and not (failed and came[0] == signal.SIGINT):
            signal.raise_signal(came[0])
