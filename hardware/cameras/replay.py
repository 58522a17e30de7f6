"""The replay source: a folder of images, or a video file, delivered at a chosen frame rate.

It stands in for a camera in the demo, the tests and the benchmarks: the frames are real
pictures and carry monotonic timestamps, as a live camera's would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import structlog

from hardware.cameras.base import Frame
from hardware.errors import CameraOpenError, FrameError
from models.errors import ImageError
from models.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    Image,
    cap_pixels,
    read_image,
    to_rgb8,
)

log = structlog.get_logger("hardware.camera")

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".mjpeg", ".mjpg"})


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
    """Replays a folder of images (name order) or a video file at ``fps``.

    ``skip_bad`` decides what a picture that cannot be decoded does: raise ``FrameError``
    (the default: the demo stops and names the file) or be skipped, with one
    ``camera.frame_skipped`` warning naming the file and the reason (once per file, also
    when the folder loops).
    """

    def __init__(
        self,
        source: Path,
        fps: float = 5.0,
        loop: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        skip_bad: bool = False,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self._video = source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES
        if self._video:
            self._files: list[Path] = [source]
        else:
            self._files = list_images(source)
        self._source = source
        self._period = 1.0 / fps
        self._loop = loop
        self._max_pixels = max_pixels
        self._clock = clock
        self._sleep = sleep
        self._skip_bad = skip_bad
        self._skipped: set[Path] = set()
        self._closed = False

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def _pictures(self) -> Iterator[tuple[str, Image]]:
        if self._video:
            yield from _video_pictures(self._source, self._max_pixels)
            return
        for path in self._files:
            try:
                picture = read_image(path, self._max_pixels)
            except ImageError as exc:
                if not self._skip_bad:
                    raise FrameError(str(exc)) from None
                if path not in self._skipped:
                    self._skipped.add(path)
                    log.warning("camera.frame_skipped", reason=str(exc))
                continue
            yield path.name, picture

    def frames(self) -> Iterator[Frame]:
        index = 0
        next_at = self._clock()
        while not self._closed:
            delivered = 0
            for name, image in self._pictures():
                if self._closed:
                    return
                delay = next_at - self._clock()
                if delay > 0:
                    self._sleep(delay)
                yield Frame(image=image, timestamp=self._clock(), index=index, source=name)
                index += 1
                delivered += 1
                next_at += self._period
            if not self._loop or delivered == 0:
                return

    def close(self) -> None:
        self._closed = True


def _video_pictures(path: Path, max_pixels: int) -> Iterator[tuple[str, Image]]:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise CameraOpenError(f"{path}: cannot open the video file")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > max_pixels:  # each frame would be decoded at full size
            raise FrameError(
                f"{path}: video frames too large ({width}x{height}; the cap is"
                f" {max_pixels:,} pixels, vision.max_image_pixels)"
            )
        number = 0
        while True:
            ok, picture = capture.read()
            if not ok or picture is None:
                if number == 0:
                    raise FrameError(f"{path}: the video holds no readable frame")
                return
            number += 1
            try:
                rgb = cap_pixels(to_rgb8(picture, str(path)), max_pixels)
            except ImageError as exc:
                raise FrameError(str(exc)) from None
            yield f"{path.name}#{number}", rgb
    finally:
        capture.release()
