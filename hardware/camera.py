"""Cameras: one small protocol, and the replay source that reads a folder of images.

A ``Frame`` carries an RGB picture and the monotonic time it was taken. Decoding goes
through ``decode_image`` so that every source turns odd input (grayscale, 16-bit,
alpha channel, oversized pictures, corrupt files) into the same RGB uint8 frames or a
``FrameError`` that names the problem.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from hardware.errors import CameraOpenError, FrameError

Image = npt.NDArray[np.uint8]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


@dataclass(frozen=True)
class Frame:
    """One picture from a camera, RGB, with the monotonic time it was captured."""

    image: Image
    timestamp: float
    index: int
    source: str


class Camera(Protocol):
    """What the vision pipeline needs from a camera."""

    def frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends (a live camera never ends)."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


def decode_image(data: bytes, name: str, max_pixels: int = 40_000_000) -> Image:
    """Decode encoded image bytes to an RGB uint8 array no larger than ``max_pixels``."""
    if not data:
        raise FrameError(f"{name}: empty file")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        picture = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise FrameError(
            f"{name}: cannot decode image ({exc.msg.strip() or 'OpenCV error'})"
        ) from None
    if picture is None or picture.size == 0:
        raise FrameError(f"{name}: not a readable image (corrupt, truncated or unknown format)")
    return to_rgb8(picture, name, max_pixels)


def to_rgb8(picture: npt.NDArray[Any], name: str, max_pixels: int = 40_000_000) -> Image:
    """Turn a decoded OpenCV picture (BGR, BGRA, gray, 8 or 16 bit) into RGB uint8."""
    if picture.dtype == np.uint16:
        picture = (picture >> 8).astype(np.uint8)
    elif picture.dtype != np.uint8:
        raise FrameError(f"{name}: unsupported pixel type {picture.dtype}")
    if picture.ndim == 2:
        rgb = cv2.cvtColor(picture, cv2.COLOR_GRAY2RGB)
    elif picture.ndim == 3 and picture.shape[2] == 4:
        rgb = cv2.cvtColor(picture, cv2.COLOR_BGRA2RGB)
    elif picture.ndim == 3 and picture.shape[2] == 3:
        rgb = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
    else:
        raise FrameError(f"{name}: unsupported image shape {picture.shape}")
    height, width = rgb.shape[:2]
    if height * width > max_pixels:
        scale = (max_pixels / (height * width)) ** 0.5
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def read_image(path: Path, max_pixels: int = 40_000_000) -> Image:
    """Read and decode one image file (see ``decode_image``)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FrameError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FrameError(f"{path}: is a folder, not an image") from None
    except OSError as exc:
        raise FrameError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, str(path), max_pixels)


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, in name order."""
    if not folder.exists():
        raise CameraOpenError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise CameraOpenError(f"{folder}: not a folder")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise CameraOpenError(
            f"{folder}: holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


class ReplayCamera:
    """Replays a folder of images at a fixed frame rate, as a camera would deliver them."""

    def __init__(
        self,
        folder: Path,
        fps: float = 5.0,
        loop: bool = False,
        max_pixels: int = 40_000_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._files = list_images(folder)
        self._period = 1.0 / fps
        self._loop = loop
        self._max_pixels = max_pixels
        self._clock = clock
        self._sleep = sleep
        self._closed = False

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def frames(self) -> Iterator[Frame]:
        index = 0
        next_at = self._clock()
        while not self._closed:
            for path in self._files:
                if self._closed:
                    return
                delay = next_at - self._clock()
                if delay > 0:
                    self._sleep(delay)
                image = read_image(path, self._max_pixels)
                yield Frame(image=image, timestamp=self._clock(), index=index, source=path.name)
                index += 1
                next_at += self._period
            if not self._loop:
                return

    def close(self) -> None:
        self._closed = True
