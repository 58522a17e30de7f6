"""A photo as a kiosk camera would give it: small, dim, noisy and JPEG-compressed.

The labelled photo sets are portraits: the face is large, well lit and sharp. The kiosk's
camera gives 640x480 frames in which a rider standing back has a face 50-80 px wide, in
poor light, with sensor noise, through a video pipeline that compresses. ``kiosk_frame``
makes such a frame from a photo (``kiosk faces eval --degrade kiosk``):

1. the photo is scaled (``INTER_AREA``) so that the face the offline detector finds in it
   is ``face_px`` wide, a width drawn between ``KioskCamera.face_px`` (seeded by the
   photo's name), and placed with the face a little off the middle of a grey 640x480
   frame;
2. gamma ``gamma`` (1.4: a dim scene, ``255 * (v / 255) ** 1.4``);
3. Gaussian sensor noise of ``noise`` grey levels;
4. JPEG at quality ``jpeg_quality`` (55), decoded again.

A photo in which the offline detector finds no face is scaled to fit the frame instead
(and still darkened, noised and compressed). The frames exist only in memory.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.encoder import FaceBox, FaceEncoder, pick_face
from models.images import Image

FRAME = (640, 480)  # width, height


@dataclass(frozen=True)
class KioskCamera:
    """How a kiosk camera degrades a photo (the defaults are the documented recipe)."""

    face_px: tuple[int, int] = (50, 80)
    gamma: float = 1.4
    noise: float = 4.0
    jpeg_quality: int = 55

    @property
    def name(self) -> str:
        """A short, stable name of the recipe (for caches and reports)."""
        low, high = self.face_px
        return f"kiosk{low}-{high}g{self.gamma}n{self.noise}q{self.jpeg_quality}"


KIOSK = KioskCamera()


def photo_seed(path: Path) -> int:
    """A seed from a photo's folder and name, so every run degrades it the same way."""
    return zlib.crc32(f"{path.parent.name}/{path.name}".encode())


def _placed(image: Image, box: FaceBox | None, face_px: float, rng: np.random.Generator) -> Image:
    width, height = FRAME
    rows, cols = image.shape[:2]
    if box is None:
        scale = min(width / cols, height / rows)
        centre = (cols / 2, rows / 2)
        target = (width / 2, height / 2)
    else:
        scale = face_px / max(1, box.width)
        centre = box.centre
        target = (width / 2 + rng.uniform(-40, 40), height * 0.45 + rng.uniform(-20, 20))
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    scaled = np.asarray(cv2.resize(image, size, interpolation=interpolation), np.uint8)
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[..., None], 3, axis=2)
    frame = np.full((height, width, 3), 128, np.uint8)
    # where the scaled photo's top-left corner lands in the frame
    left = round(target[0] - centre[0] * scale)
    top = round(target[1] - centre[1] * scale)
    src_left, src_top = max(0, -left), max(0, -top)
    dst_left, dst_top = max(0, left), max(0, top)
    span_x = min(size[0] - src_left, width - dst_left)
    span_y = min(size[1] - src_top, height - dst_top)
    if span_x > 0 and span_y > 0:
        frame[dst_top : dst_top + span_y, dst_left : dst_left + span_x] = scaled[
            src_top : src_top + span_y, src_left : src_left + span_x
        ]
    return frame


def kiosk_frame(image: Image, box: FaceBox | None, seed: int, camera: KioskCamera = KIOSK) -> Image:
    """``image`` (whose face is ``box``, or ``None``) as a 640x480 kiosk camera frame."""
    rng = np.random.default_rng(seed)
    face_px = rng.uniform(*camera.face_px)
    frame = _placed(image, box, face_px, rng).astype(np.float32)
    dim = 255.0 * (frame / 255.0) ** camera.gamma
    noisy = np.clip(dim + rng.normal(0.0, camera.noise, dim.shape), 0, 255).astype(np.uint8)
    bgr = cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg_quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 frame
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if decoded is None:  # pragma: no cover - it decodes what it just encoded
        raise RuntimeError("JPEG decoding failed")
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), np.uint8)


def degrade_photo(
    engine: FaceEncoder, image: Image, path: Path, camera: KioskCamera = KIOSK
) -> Image:
    """The photo at ``path`` (already read) as a kiosk frame, its face found offline."""
    boxes = engine.detect(image)
    box = pick_face(boxes, image.shape[1], image.shape[0]) if boxes else None
    return kiosk_frame(image, box, photo_seed(path), camera)
