"""The OpenCV source: a V4L2 device (index or path), an RTSP/HTTP URL or a video file.

OpenCV's errors are translated here: a device that cannot be opened, or that stops
delivering frames, raises ``CameraOpenError`` (``ReconnectingCamera`` reopens it); the end
of a video file ends ``frames``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2

from hardware.cameras.base import Frame
from hardware.config import shown_source
from hardware.errors import CameraOpenError
from models.errors import ImageError
from models.images import DEFAULT_MAX_PIXELS, cap_pixels, to_rgb8


def parse_source(source: str) -> int | str:
    """A device index (``"0"``) as an int; a path or URL unchanged."""
    text = source.strip()
    if not text:
        raise CameraOpenError("camera.source is empty: give a device index, path, URL or file")
    return int(text) if text.isdigit() else text


class OpenCVCamera:
    """Frames from ``cv2.VideoCapture``, converted to RGB, with monotonic timestamps."""

    def __init__(
        self,
        source: str,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        open_timeout_s: float = 5.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        clock: Callable[[], float] = time.monotonic,
        capture_factory: Callable[[int | str], Any] | None = None,
    ) -> None:
        self._source = parse_source(source)
        self._name = shown_source(str(self._source))  # never an IP camera's password
        self._is_file = isinstance(self._source, str) and Path(self._source).is_file()
        self._size = (width, height)
        self._fps = fps
        self._timeout_ms = int(open_timeout_s * 1000)
        self._max_pixels = max_pixels
        self._clock = clock
        self._factory = capture_factory or self._default_capture
        self._capture: Any = None
        self._closed = False

    def _default_capture(self, source: int | str) -> Any:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            self._timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self._timeout_ms,
        ]
        return cv2.VideoCapture(source, cv2.CAP_ANY, params)

    def open(self) -> None:
        """Open the device now; raises ``CameraOpenError`` naming the source."""
        try:
            capture = self._factory(self._source)
        except cv2.error as exc:
            raise CameraOpenError(f"camera {self._name}: {exc.msg.strip()}") from None
        if capture is None or not capture.isOpened():
            raise CameraOpenError(
                f"camera {self._name}: cannot open (unplugged, busy or no such device)"
            )
        if not self._is_file:
            width, height = self._size
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            capture.set(cv2.CAP_PROP_FPS, self._fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        self._capture = capture

    def frames(self) -> Iterator[Frame]:
        if self._capture is None:
            self.open()
        index = 0
        while not self._closed:
            try:
                ok, picture = self._capture.read()
            except cv2.error as exc:
                raise CameraOpenError(f"camera {self._name}: {exc.msg.strip()}") from None
            if not ok or picture is None:
                if self._is_file:
                    return
                raise CameraOpenError(f"camera {self._name}: stopped delivering frames")
            try:
                image = cap_pixels(to_rgb8(picture, self._name), self._max_pixels)
            except ImageError:
                continue  # one bad frame from a live device is dropped, not fatal
            yield Frame(image=image, timestamp=self._clock(), index=index, source=self._name)
            index += 1

    def close(self) -> None:
        self._closed = True
        if self._capture is not None:
            self._capture.release()
            self._capture = None
