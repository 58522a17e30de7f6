"""Signals for the long-running commands (``kiosk run``, ``kiosk sync run``).

Python runs a signal handler on the main thread between two of its bytecodes, wherever that
thread happens to be: possibly inside ``queue.Queue.get`` or ``threading.Event.wait``,
holding the very lock the handler would take to stop or wake the service. Taking it again
there hangs the process for good (those locks are not re-entrant), so a SIGTERM would stop
nothing until systemd's SIGKILL. Here the handler only writes the signal's number into a
pipe (``os.write`` takes no lock), and a thread of its own reads the pipe and runs the
action; a burst of signals is never lost, only queued in the pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType

import structlog

log = structlog.get_logger("edge.signals")


class SignalRelay:
    """Run ``actions[signum]`` on the relay's thread each time ``signum`` arrives."""

    def __init__(self, actions: Mapping[signal.Signals, Callable[[], None]]) -> None:
        self._actions = dict(actions)
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a full pipe drops the signal, never blocks
        self._thread = threading.Thread(target=self._relay, name="signals", daemon=True)
        self._thread.start()
        self._before = {signum: signal.signal(signum, self._handler) for signum in self._actions}

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # 64 KiB of signals unread: this one is moot
            os.write(self._write, bytes([signum]))

    def _relay(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)
            except OSError:
                return
            if not data:
                return
            for number in data:
                action = self._actions.get(signal.Signals(number))
                if action is None:
                    continue
                try:
                    action()
                except Exception:  # the next signal must still be heard
                    log.exception("signal.action_failed", signal=signal.Signals(number).name)

    def close(self) -> None:
        """Give the signals back their handlers from before and end the relay's thread."""
        for signum, before in self._before.items():
            signal.signal(signum, before)
        os.close(self._write)
        self._thread.join(timeout=2)
        os.close(self._read)

    def __enter__(self) -> SignalRelay:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
