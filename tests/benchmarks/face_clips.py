"""Replayed "visits" for the live pipeline: camera-like 640x480 frames made from photos.

A visit shows one photo as a kiosk camera would: the face about ``face_px`` wide near the
middle of a 640x480 frame, with a little movement, zoom, brightness change and sensor
noise from frame to frame (seeded, so every run sees the same frames). A photo without a
face is letterboxed instead. Frames are made in memory from the shared photos and never
written anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.encoder import FaceBox, FaceEngine, pick_face
from models.images import Image, read_image

WIDTH, HEIGHT = 640, 480


@dataclass(frozen=True)
class Visit:
    """Someone (``truth``; ``None`` for nobody) in front of the camera for ``frames`` frames."""

    photo: Path
    truth: str | None
    enrolled: bool
    frames: int


def face_box(engine: FaceEngine, image: Image) -> FaceBox | None:
    boxes = engine.detect(image)
    if not boxes:
        return None
    return pick_face(boxes, image.shape[1], image.shape[0])


def blank_frame(seed: int) -> Image:
    rng = np.random.default_rng(seed)
    base = np.full((HEIGHT, WIDTH, 3), 70, dtype=np.int16)
    return np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)


def visit_frames(
    image: Image, box: FaceBox | None, count: int, seed: int, face_px: int = 200
) -> Iterator[Image]:
    """``count`` camera-like frames of ``image`` (see the module docstring)."""
    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    for _ in range(count):
        if box is not None:
            zoom = face_px / max(1, box.width) * (1 + rnd.uniform(-0.03, 0.03))
            cx, cy = box.centre
            tx = WIDTH / 2 + rnd.uniform(-6, 6) - zoom * cx
            ty = HEIGHT * 0.45 + rnd.uniform(-6, 6) - zoom * cy
        else:
            zoom = min(WIDTH / width, HEIGHT / height)
            tx, ty = (WIDTH - zoom * width) / 2, (HEIGHT - zoom * height) / 2
        frame = place(image, zoom, (tx, ty), (WIDTH, HEIGHT))
        gain = 1 + rnd.uniform(-0.04, 0.04)
        noisy = frame.astype(np.float32) * gain + rng.normal(0, 2.0, frame.shape)
        yield np.clip(noisy, 0, 255).astype(np.uint8)


def place(
    image: Image,
    zoom: float,
    shift: tuple[float, float],
    size: tuple[int, int],
    enlarge: int = cv2.INTER_LINEAR,
) -> Image:
    """``image`` scaled by ``zoom`` and moved by ``shift`` onto a ``size`` (width, height)
    canvas, its edges repeated beyond the photo."""
    matrix = np.array([[zoom, 0, shift[0]], [0, zoom, shift[1]]], dtype=np.float64)
    flags = cv2.INTER_AREA if zoom < 1 else enlarge
    placed = cv2.warpAffine(image, matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(placed, dtype=np.uint8)


def load(path: Path) -> Image:
    return read_image(path)
