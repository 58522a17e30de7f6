"""Where received commands wait for the link's command thread, and the tally of junk.

Only authentic commands (their signature verified: ``CommandExecutor.screen``) take a
place here; junk is dropped on arrival and counted in a ``JunkTally``, which says when a
summary line is due (one per interval, with the count by reason) instead of one log line
per message. A command is acknowledged to the broker only once the command thread has
recorded it (claimed in the ledger, or its rejection owed), on the connection it arrived
on: one left waiting when the kiosk is killed, or when its connection drops, is delivered
again by the broker (persistent session), with its DUP flag.

At most ``room`` commands wait to run. One that arrives when they are all taken still gets
an item, marked ``busy``: the command thread answers it "busy" (and acknowledges it)
without running it, so a signed command is never dropped for want of room. Busy items are
few: the broker sends no more unacknowledged messages than its in-flight window allows.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Received:
    """An authentic command's message, not yet acknowledged to the broker."""

    raw: bytes
    mid: int
    qos: int
    session: int  # the connection it arrived on: acknowledged only on that one
    redelivered: bool  # the broker's DUP flag, or a retained copy
    busy: bool = False  # no room: answered "busy", never run


class Inbox:
    """A FIFO of ``Received`` shared by paho's loop (``put``) and the command thread."""

    def __init__(self, room: int) -> None:
        self.room = room
        self._items: deque[Received] = deque()
        self._to_run = 0
        self._cond = threading.Condition()

    def put(self, item: Received) -> bool:
        """Queue ``item``; False when there was no room to run it (it is queued ``busy``)."""
        with self._cond:
            fits = self._to_run < self.room
            if fits:
                self._to_run += 1
            else:
                item = replace(item, busy=True)
            self._items.append(item)
            self._cond.notify()
            return fits

    def get(self, timeout: float) -> Received | None:
        """The oldest item, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            if not item.busy:
                self._to_run -= 1
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class JunkTally:
    """Counts junk by reason; ``note`` and ``due`` return a summary at most once per
    ``every_s`` seconds (the first junk at once), else None. Pure: ``now`` is given."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.total = 0
        self._counts: Counter[str] = Counter()
        self._last: float | None = None

    def note(self, reason: str, now: float) -> dict[str, int] | None:
        self.total += 1
        self._counts[reason] += 1
        return self.due(now)

    def due(self, now: float) -> dict[str, int] | None:
        """The counts since the last summary, when one is due; they start again from 0."""
        if not self._counts or (self._last is not None and now - self._last < self.every_s):
            return None
        self._last = now
        counts = dict(self._counts)
        self._counts.clear()
        return counts
