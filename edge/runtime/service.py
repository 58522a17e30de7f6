"""Why the kiosk may not rent right now: the out-of-service reasons, from plain values.

``reason`` is pure: the caller (``edge.runtime.assemble.service_check`` and the runtime) gathers
what it can see locally and passes it in. The reasons, first match wins (each is also the
``detail`` of the rider's ``out_of_service`` screen and of ``kiosk status``):

- ``maintenance``: a technician turned maintenance on;
- ``clock_not_set``: the clock is before 2024 (an RTC-less box before NTP);
- ``disk_full``: the state folder's file system cannot take an eject's intent (too little
  free space, or a write refused for lack of it and no room since);
- ``outbox_full``: the outbox cannot hold the event of one more rental;
- ``roster_too_old``: the roster was last refreshed more than ``roster.max_age_h`` ago;
- ``roster_purged``: the kiosk deleted its roster (``roster.purge_after_h`` without word
  from the cloud, or revoked) and has not pulled a new one yet;
- ``camera_lost``: the camera stopped delivering frames (lost and being reopened,
  stalled: no frame for ``camera.stall_s``, frozen: the same picture that long, or given
  up: the vision thread stopped on a failure);
- ``board_offline``: the slot board does not answer (added by the runtime).

``CameraHealth`` follows the camera wrapper's ``on_status`` reports (from the vision
thread) so that the flow's thread can ask, at any time, whether the camera is down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from hardware.cameras.reconnect import CameraStatus

CLOCK_SET_YEAR = 2024


@dataclass(frozen=True)
class Conditions:
    """What the kiosk can see locally, as plain values (times in seconds since the epoch)."""

    now: float
    year: int
    maintenance: bool = False
    disk_room: bool = True
    money_room: bool = True
    roster_at: float | None = None  # when the roster was last refreshed (see assemble)
    roster_max_age_s: float | None = None
    roster_purged: bool = False  # deleted by the kiosk itself, not pulled again yet
    camera_down: str | None = None  # the camera's state when it is not delivering frames
    board_online: bool = True


def reason(conditions: Conditions) -> str | None:
    """The first reason the kiosk may not rent, or None when it may."""
    c = conditions
    if c.maintenance:
        return "maintenance"
    if c.year < CLOCK_SET_YEAR:
        return "clock_not_set"  # before the roster's age, which needs the clock
    if not c.disk_room:
        return "disk_full"
    if not c.money_room:
        return "outbox_full"
    if (
        c.roster_at is not None
        and c.roster_max_age_s is not None
        and c.now - c.roster_at > c.roster_max_age_s
    ):
        return "roster_too_old"
    if c.roster_purged:
        return "roster_purged"
    if c.camera_down is not None:
        return "camera_lost"
    if not c.board_online:
        return "board_offline"
    return None


class CameraHealth:
    """The camera's latest status, written by its ``on_status`` callback, read by anyone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: CameraStatus | None = None
        self._listeners: list[Callable[[], None]] = []

    def update(self, status: CameraStatus) -> None:
        """The camera wrapper's ``on_status``: remember the status, tell the listeners."""
        with self._lock:
            changed = self._status is None or self._status.state != status.state
            self._status = status
            listeners = list(self._listeners)
        if changed:
            for listener in listeners:
                listener()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (from the camera's thread) whenever the camera goes up or down."""
        with self._lock:
            self._listeners.append(listener)

    @property
    def status(self) -> CameraStatus | None:
        with self._lock:
            return self._status

    @property
    def down(self) -> str | None:
        """The camera's state while it delivers no frames ("lost", "retrying", "gave up",
        "stalled", "frozen")."""
        status = self.status
        if status is None or status.state == "open":
            return None
        return status.state
