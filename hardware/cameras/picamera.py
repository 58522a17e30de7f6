"""The Raspberry Pi camera through picamera2 (Raspberry Pi OS only, imported lazily).

picamera2 comes from the OS package ``python3-picamera2`` or the ``pi`` extra; on any
other machine, opening this source raises ``CameraOpenError`` saying so.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np

from hardware.cameras.base import Frame
from hardware.errors import CameraOpenError


def _load_picamera2() -> Any:
    try:
        module = importlib.import_module("picamera2")
    except ImportError:
        raise CameraOpenError(
            "picamera2 is not installed: on Raspberry Pi OS install python3-picamera2 "
            "(or the 'pi' extra), or set camera.kind to 'opencv'"
        ) from None
    return module.Picamera2


class Picamera2Camera:
    """Frames from the Pi camera's main stream, converted to RGB."""

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        camera_index: int = 0,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[], Any] = _load_picamera2,
    ) -> None:
        self._size = (width, height)
        self._index = camera_index
        self._clock = clock
        self._loader = loader
        self._camera: Any = None
        self._closed = False

    def open(self) -> None:
        factory = self._loader()
        try:
            camera = factory(self._index)
            config = camera.create_video_configuration(
                main={"size": self._size, "format": "RGB888"}
            )
            camera.configure(config)
            camera.start()
        except (RuntimeError, OSError, IndexError) as exc:
            raise CameraOpenError(f"Pi camera {self._index}: cannot open ({exc})") from None
        self._camera = camera

    def frames(self) -> Iterator[Frame]:
        if self._camera is None:
            self.open()
        index = 0
        while not self._closed:
            try:
                array = self._camera.capture_array("main")
            except (RuntimeError, OSError) as exc:
                raise CameraOpenError(f"Pi camera {self._index}: stopped ({exc})") from None
            # picamera2's "RGB888" is laid out B, G, R in memory.
            image = np.ascontiguousarray(cv2.cvtColor(array[:, :, :3], cv2.COLOR_BGR2RGB))
            yield Frame(
                image=image, timestamp=self._clock(), index=index, source=f"picamera{self._index}"
            )
            index += 1

    def close(self) -> None:
        self._closed = True
        if self._camera is not None:
            try:
                self._camera.stop()
                self._camera.close()
            except (RuntimeError, OSError):
                pass
            self._camera = None
