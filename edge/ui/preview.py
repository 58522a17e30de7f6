"""The optional camera preview of the rider screen (``ui.preview``, off by default).

Riders place themselves far better when they see themselves. The vision thread offers
every frame (``offer``); at most ``fps`` times a second one is scaled down to ``width``
pixels and JPEG-encoded into memory, replacing the previous one. Nothing else keeps it:
it is never written to disk, never logged, and the rider page's server hands it only to
a browser on 127.0.0.1 (``GET /preview.jpg``). The page mirrors it, as a mirror would.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from models.images import Image

PREVIEW_WIDTH = 320
JPEG_QUALITY = 70


class PreviewFrames:
    """The latest low-rate, low-resolution JPEG of the camera, in memory only."""

    def __init__(self, fps: float = 2.0, width: int = PREVIEW_WIDTH) -> None:
        self.every_s = 1.0 / fps
        self.width = width
        self._lock = threading.Lock()
        self._jpeg: bytes | None = None
        self._at: float | None = None

    def offer(self, image: Image, now: float) -> None:
        """A camera frame taken at ``now`` (monotonic s); kept only when one is due."""
        if self._at is not None and now - self._at < self.every_s:
            return
        self._at = now
        height, width = image.shape[:2]
        picture = image
        if width > self.width:
            size = (self.width, max(1, round(height * self.width / width)))
            picture = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        if picture.ndim == 3:
            picture = np.asarray(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            with self._lock:
                self._jpeg = data.tobytes()

    def latest(self) -> bytes | None:
        with self._lock:
            return self._jpeg

    def clear(self) -> None:
        """Forget the picture (the camera stopped)."""
        with self._lock:
            self._jpeg, self._at = None, None
