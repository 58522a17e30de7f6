"""A camera that comes back: reopen a vanished source with bounded exponential backoff.

``ReconnectingCamera`` wraps a factory that opens the real source. When opening fails or
the source stops delivering frames (``CameraOpenError``), the loss is reported through
``on_status`` and the log, and the source is reopened after a delay that doubles from
``initial_s`` up to ``max_s`` (with jitter). ``give_up_after`` bounds the attempts; by
default a live camera is retried for ever, because a kiosk must recover on its own.
"""

from __future__ import annotations

import time
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

    state: Literal["open", "lost", "retrying", "gave up"]
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

    def _report(self, status: CameraStatus) -> None:
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

    def frames(self) -> Iterator[Frame]:
        index = 0
        while not self._closed:
            try:
                self._current = self._open_with_backoff()
            except _Closed:
                return
            try:
                for frame in self._current.frames():
                    yield Frame(frame.image, frame.timestamp, index, frame.source)
                    index += 1
                    if self._closed:
                        return
                return  # the source ended on its own (a replayed file)
            except CameraOpenError as exc:
                self._report(CameraStatus("lost", str(exc)))
                self.reopened += 1
            finally:
                self._current.close()
                self._current = None

    def close(self) -> None:
        self._closed = True
        if self._current is not None:
            self._current.close()


class _Closed(Exception):
    """Raised inside the retry loop when ``close`` was called while waiting."""
