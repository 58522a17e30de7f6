"""Reading and decoding pictures: any odd input becomes RGB uint8 no larger than a pixel cap,
or an ``ImageError`` that names the problem.

Shared by the kiosk's cameras (``hardware.cameras``, which turn it into ``FrameError``),
enrolment and identification from photo files, and the cloud's enrolment from photos.

Only JPEG, PNG and WebP files are read; any other format (TIFF, BMP, GIF, ...) is refused
by name. The size is read from the header (``models.image_headers``) before anything
is decoded, and the cap holds for every format: a picture announcing more pixels than the
cap is refused, except a sequential JPEG of up to 16 times the cap, which libjpeg decodes
at 1/2 or 1/4 scale without ever holding it at full size. A file
larger than 3 bytes per pixel of the cap, or not a regular file, is refused before it is
read. Pictures are decoded to 8-bit colour (16-bit and grey are converted, alpha is
dropped) and turned upright by their EXIF orientation, as a phone's portrait photo is
shown: stored sideways, the face would not be found. At most 3 bytes per pixel of the cap
are held, twice while a picture is turned.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from models.errors import ImageError
from models.image_headers import ACCEPTED_FORMATS, read_header

Image = npt.NDArray[np.uint8]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
DEFAULT_MAX_PIXELS = 40_000_000
_FILE_BYTES_PER_PIXEL = 3  # no JPEG, PNG or WebP of a sane picture is larger
_COLOUR = cv2.IMREAD_COLOR  # EXIF orientation applied
# a sequential JPEG up to 16 times the cap is decoded at 1/2 or 1/4 scale (libjpeg still
# reads every block of it, so the file's work stays bounded too); larger ones are refused
_REDUCED = (
    (2, cv2.IMREAD_REDUCED_COLOR_2),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
)

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "Image",
    "cap_pixels",
    "decode_image",
    "max_file_bytes",
    "read_image",
    "read_image_bytes",
    "to_rgb8",
]


def shown_name(path: Path | str) -> str:
    """``path`` as text any JSON reader takes: bytes of a file name that are not UTF-8
    (which Python keeps as lone surrogates, invalid in strict JSON) shown as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.4g} megapixels"


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode encoded image bytes to an RGB uint8 array no larger than ``max_pixels``."""
    header = read_header(data, name)
    flags = _COLOUR
    if header.pixels > max_pixels:
        reduced = [flag for factor, flag in _REDUCED if header.pixels <= max_pixels * factor**2]
        if not header.scalable or not reduced:
            raise ImageError(
                f"{name}: image too large ({header.format} {header.width}x{header.height},"
                f" {_megapixels(header.pixels)}; the cap is {_megapixels(max_pixels)},"
                " vision.max_image_pixels)"
            )
        flags = reduced[0]
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        picture = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise ImageError(
            f"{name}: cannot decode image ({exc.msg.strip() or 'OpenCV error'})"
        ) from None
    if picture is None or picture.size == 0:
        raise ImageError(f"{name}: not a readable image (corrupt or truncated {header.format})")
    if picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8:
        cv2.cvtColor(picture, cv2.COLOR_BGR2RGB, dst=picture)  # in place: no second copy
        return cap_pixels(picture, max_pixels)
    return to_rgb8(picture, name, max_pixels)


def to_rgb8(picture: npt.NDArray[Any], name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Turn a decoded OpenCV picture (BGR, BGRA, gray, 8 or 16 bit) into RGB uint8."""
    if picture.dtype == np.uint16:
        picture = (picture >> 8).astype(np.uint8)
    elif picture.dtype in (np.float32, np.float64):
        picture = np.clip(np.nan_to_num(picture) * 255.0, 0, 255).astype(np.uint8)
    elif picture.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {picture.dtype}")
    if picture.ndim == 3 and picture.shape[2] == 1:
        picture = picture[:, :, 0]
    if picture.ndim == 2:
        rgb = cv2.cvtColor(picture, cv2.COLOR_GRAY2RGB)
    elif picture.ndim == 3 and picture.shape[2] == 4:
        rgb = cv2.cvtColor(picture, cv2.COLOR_BGRA2RGB)
    elif picture.ndim == 3 and picture.shape[2] == 3:
        rgb = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
    else:
        raise ImageError(f"{name}: unsupported image shape {picture.shape}")
    return cap_pixels(rgb, max_pixels)


def cap_pixels(rgb: npt.NDArray[Any], max_pixels: int) -> Image:
    """Scale ``rgb`` down (keeping its aspect) so it holds at most ``max_pixels``."""
    height, width = rgb.shape[:2]
    if height * width > max_pixels:
        scale = (max_pixels / (height * width)) ** 0.5
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def max_file_bytes(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The largest image file read for a pixel cap of ``max_pixels``."""
    return _FILE_BYTES_PER_PIXEL * max_pixels + (1 << 20)


def read_image_bytes(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> bytes:
    """The bytes of the image file ``path``, read only when it is a regular file no larger
    than ``max_file_bytes``; ``ImageError`` (starting with ``name``, else the path) if not."""
    label = str(path) if name is None else name
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{label}: is a folder, not an image")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{label}: not a regular file")
        limit = max_file_bytes(max_pixels)
        if info.st_size > limit:
            raise ImageError(
                f"{label}: file too large for an image ({info.st_size:,} bytes, over"
                f" {limit:,} for the cap of {_megapixels(max_pixels)})"
            )
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a folder, not an image") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:  # it grew while being read
        raise ImageError(f"{label}: file too large for an image (over {limit:,} bytes)")
    return data


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Read and decode one image file (see ``read_image_bytes`` and ``decode_image``)."""
    return decode_image(read_image_bytes(path, max_pixels), str(path), max_pixels)
