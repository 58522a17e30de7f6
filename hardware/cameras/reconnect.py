"""A camera that comes back: reopen a vanished source with bounded exponential backoff.

``ReconnectingCamera`` wraps a factory that opens the real source. When opening fails or
the source stops delivering frames (``CameraOpenError``), the loss is reported through
``on_status`` and the log, and the source is reopened after a delay that doubles from
``initial_s`` up to ``max_s`` (with jitter). ``give_up_after`` bounds the attempts; by
default a live camera is retried for ever, because a kiosk must recover on its own.

A source can also stop without a word: a read that waits for ever (a wedged driver, a
ribbon cable working loose, a stream whose sender went quiet). With ``stall_s``, a watch
thread (one per wrapper, not per reopen) reports ``stalled`` once the consumer has waited
that long for a frame (the first open included), and ``open`` again when one comes. With
``frozen_check`` too (a live camera: a sensor never gives two frames alike), a source that
delivers the very same picture for ``stall_s`` (a driver stuck on its last buffer) is
reported ``frozen`` until the picture changes.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)

from hardware.cameras.base import Camera, Frame
from hardware.errors import CameraOpenError

log = structlog.get_logger("hardware.camera")


@dataclass(frozen=True)
class CameraStatus:
    """A change in the camera's health, for the rider screen and ``kiosk status``."""

    state: Literal["open", "lost", "retrying", "gave up", "stalled", "frozen"]
    reason: str
    attempt: int = 0
    retry_in_s: float | None = None


class ReconnectingCamera:
    """Frames from ``open_source()``, reopened with backoff whenever the source is lost."""

    def __init__(
        self,
        open_source: Callable[[], Camera],
        initial_s: float = 0.5,
        max_s: float = 30.0,
        give_up_after: int | None = None,
        on_status: Callable[[CameraStatus], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stall_s: float | None = None,
        name: str = "camera",
        clock: Callable[[], float] = time.monotonic,
        frozen_check: bool = False,
    ) -> None:
        self._open_source = open_source
        self._initial = initial_s
        self._max = max_s
        self._give_up_after = give_up_after
        self._on_status = on_status or (lambda status: None)
        self._sleep = sleep
        self._current: Camera | None = None
        self._closed = False
        self.reopened = 0
        self._stall_s = stall_s
        self._name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state: str | None = None  # the last state reported
        self._waiting_since: float | None = None  # the consumer waits for a frame since
        self._unwatched = threading.Event()  # set: the stall watch stops
        self._frozen_check = frozen_check and stall_s is not None
        self._picture: int | None = None  # a checksum of the last picture (frozen_check)
        self._same_since: float | None = None  # the picture has not changed since

    def _report(self, status: CameraStatus) -> None:
        with self._lock:
            self._state = status.state
        level = log.info if status.state == "open" else log.warning
        level(
            "camera." + status.state.replace(" ", "_"),
            reason=status.reason,
            attempt=status.attempt,
            retry_in_s=status.retry_in_s,
        )
        self._on_status(status)

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else None
        self._report(
            CameraStatus("retrying", str(error), attempt=state.attempt_number, retry_in_s=delay)
        )

    def _open_with_backoff(self) -> Camera:
        retrying = Retrying(
            retry=retry_if_exception_type(CameraOpenError),
            wait=wait_exponential_jitter(
                multiplier=self._initial, max=self._max, jitter=self._initial
            ),
            stop=stop_never
            if self._give_up_after is None
            else stop_after_attempt(self._give_up_after),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if self._closed:
                        raise _Closed
                    camera = self._open_source()
                    opener = getattr(camera, "open", None)
                    if callable(opener):
                        opener()
        except CameraOpenError as exc:
            self._report(CameraStatus("gave up", str(exc), attempt=self._give_up_after or 0))
            raise
        self._report(CameraStatus("open", "camera delivering frames"))
        return camera

    def _watch_stalls(self, stall_s: float) -> None:
        """The stall watch's thread: ``stalled`` once a frame is ``stall_s`` late."""
        while not self._unwatched.wait(min(0.5, stall_s / 4)):
            with self._lock:
                since = self._waiting_since
                waited = 0.0 if since is None else self._clock() - since
                due = since is not None and waited >= stall_s and self._state in (None, "open")
            if due:
                reason = f"{self._name}: no frame for {waited:.0f} s (the camera is not answering)"
                self._report(CameraStatus("stalled", reason))

    def _waiting(self, since: float | None) -> bool:
        """Note whether the consumer waits for a frame; True when a stall just ended."""
        with self._lock:
            self._waiting_since = since
            return since is None and self._state == "stalled"

    def frames(self) -> Iterator[Frame]:
        if self._stall_s is not None:
            self._unwatched.clear()
            watch = threading.Thread(
                target=self._watch_stalls, args=(self._stall_s,), name="camera-stall", daemon=True
            )
            watch.start()
        try:
            yield from self._reopening()
        finally:
            self._unwatched.set()
            self._waiting(None)

    def _reopening(self) -> Iterator[Frame]:
        index = 0
        while not self._closed:
            self._waiting(self._clock())
            try:
                self._current = self._open_with_backoff()
            except _Closed:
                return
            try:
                source = iter(self._current.frames())
                while True:
                    self._waiting(self._clock())
                    frame = next(source, None)
                    if self._waiting(None):
                        self._report(CameraStatus("open", "camera delivering frames again"))
                    if frame is None:
                        return  # the source ended on its own (a replayed file)
                    if self._frozen_check:
                        self._check_frozen(frame)
                    yield Frame(frame.image, frame.timestamp, index, frame.source)
                    index += 1
                    if self._closed:
                        return
            except CameraOpenError as exc:
                self._report(CameraStatus("lost", str(exc)))
                self.reopened += 1
            finally:
                self._current.close()
                self._current = None

    def _check_frozen(self, frame: Frame) -> None:
        """``frozen`` once the same picture has come for ``stall_s``; ``open`` when it moves.
        One pixel in 64 is compared (a sensor's noise reaches every one)."""
        picture = zlib.crc32(frame.image[::8, ::8].tobytes())
        now = self._clock()
        if picture != self._picture:
            self._picture, self._same_since = picture, now
            if self._state == "frozen":
                self._report(CameraStatus("open", "camera delivering moving pictures again"))
            return
        same_for = now - (self._same_since or now)
        if self._state == "open" and self._stall_s is not None and same_for >= self._stall_s:
            reason = f"{self._name}: the same picture for {same_for:.0f} s (the camera is frozen)"
            self._report(CameraStatus("frozen", reason))

    def close(self) -> None:
        self._closed = True
        self._unwatched.set()
        if self._current is not None:
            self._current.close()


class _Closed(Exception):
    """Raised inside the retry loop when ``close`` was called while waiting."""
