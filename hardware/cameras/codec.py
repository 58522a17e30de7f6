"""Decoding pictures: any odd input becomes RGB uint8 no larger than a pixel cap, or a
``FrameError`` that names the problem.

Grayscale, 16-bit and alpha pictures are converted; a picture over the cap is scaled down
before anything else sees it. A JPEG whose header announces more pixels than the cap is
decoded at a reduced scale by libjpeg itself (a 50-megapixel photo never occupies memory at
full size); any other format announcing more than ``HARD_LIMIT_FACTOR`` times the cap is
refused from its header alone.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from hardware.cameras.base import Image
from hardware.errors import CameraOpenError, FrameError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
DEFAULT_MAX_PIXELS = 40_000_000
HARD_LIMIT_FACTOR = 4
_REDUCED = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


def header_size(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` read from a PNG or JPEG header, or ``None``."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return "jpeg", width, height
        pos += 2 + length
    return None


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode encoded image bytes to an RGB uint8 array no larger than ``max_pixels``."""
    if not data:
        raise FrameError(f"{name}: empty file")
    flags = cv2.IMREAD_UNCHANGED
    announced = header_size(data)
    if announced is not None:
        kind, width, height = announced
        if width == 0 or height == 0:
            raise FrameError(f"{name}: not a readable image (zero width or height)")
        pixels = width * height
        if pixels > max_pixels and kind == "jpeg":
            # the coarsest libjpeg scale that keeps at least a quarter of the cap
            flags = next(
                reduced
                for factor, reduced in _REDUCED
                if pixels / (factor * factor) >= max_pixels / 4
            )
        elif pixels > HARD_LIMIT_FACTOR * max_pixels:
            raise FrameError(
                f"{name}: image too large ({width}x{height}, over "
                f"{HARD_LIMIT_FACTOR * max_pixels // 1_000_000} megapixels)"
            )
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        picture = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise FrameError(
            f"{name}: cannot decode image ({exc.msg.strip() or 'OpenCV error'})"
        ) from None
    if picture is None or picture.size == 0:
        raise FrameError(f"{name}: not a readable image (corrupt, truncated or unknown format)")
    return to_rgb8(picture, name, max_pixels)


def to_rgb8(picture: npt.NDArray[Any], name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Turn a decoded OpenCV picture (BGR, BGRA, gray, 8 or 16 bit) into RGB uint8."""
    if picture.dtype == np.uint16:
        picture = (picture >> 8).astype(np.uint8)
    elif picture.dtype in (np.float32, np.float64):
        picture = np.clip(np.nan_to_num(picture) * 255.0, 0, 255).astype(np.uint8)
    elif picture.dtype != np.uint8:
        raise FrameError(f"{name}: unsupported pixel type {picture.dtype}")
    if picture.ndim == 3 and picture.shape[2] == 1:
        picture = picture[:, :, 0]
    if picture.ndim == 2:
        rgb = cv2.cvtColor(picture, cv2.COLOR_GRAY2RGB)
    elif picture.ndim == 3 and picture.shape[2] == 4:
        rgb = cv2.cvtColor(picture, cv2.COLOR_BGRA2RGB)
    elif picture.ndim == 3 and picture.shape[2] == 3:
        rgb = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
    else:
        raise FrameError(f"{name}: unsupported image shape {picture.shape}")
    return cap_pixels(rgb, max_pixels)


def cap_pixels(rgb: npt.NDArray[Any], max_pixels: int) -> Image:
    """Scale ``rgb`` down (keeping its aspect) so it holds at most ``max_pixels``."""
    height, width = rgb.shape[:2]
    if height * width > max_pixels:
        scale = (max_pixels / (height * width)) ** 0.5
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
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
