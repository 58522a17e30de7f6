"""A picture's format and size, read from its first bytes before anything is decoded.

Pure code. The kiosk reads three formats: JPEG, PNG and WebP (what cameras, phones and
web pages give). ``read_header`` returns the format, the width and the height from the
header, or raises ``ImageError`` naming the problem: a format the kiosk does not read
(TIFF, BMP, GIF, ... by name), a header cut short, a zero width or height. The decoder
checks the size against its pixel cap before it allocates anything.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from models.errors import ImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WebP")
_ACCEPTED = "use JPEG, PNG or WebP"
_PNG = b"\x89PNG\r\n\x1a\n"
# start-of-frame markers; libjpeg decodes the sequential ones at 1/2..1/8 scale without
# holding the picture at full size, but keeps every coefficient of a progressive or
# lossless one in memory
_SEQUENTIAL_SOF = frozenset({0xC0, 0xC1, 0xC9})
_OTHER_SOF = frozenset({0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
# formats the kiosk does not read, recognised so that the refusal can name them
_OTHER_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"II+\x00", "BigTIFF"),
    (0, b"MM\x00+", "BigTIFF"),
    (0, b"GIF8", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"II\xbc", "JPEG XR"),
    (0, b"#?RADIANCE", "Radiance HDR"),
    (0, b"#?RGBE", "Radiance HDR"),
    (0, b"v/1\x01", "OpenEXR"),
    (0, b"8BPS", "Photoshop"),
    (0, b"\x59\xa6\x6a\x95", "Sun raster"),
    (0, b"PF", "PFM"),
    (0, b"Pf", "PFM"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
)


@dataclass(frozen=True)
class Header:
    format: str  # one of ACCEPTED_FORMATS
    width: int
    height: int
    scalable: bool = False  # a sequential JPEG: libjpeg can decode it at a reduced scale

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes, name: str) -> Header:
    """The format and size of the picture in ``data``; ``ImageError`` when it is not a
    JPEG, PNG or WebP picture whose size can be read (``name`` starts the message)."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if data.startswith(_PNG):
        header = _png(data)
        kind = "PNG"
    elif data.startswith(b"\xff\xd8"):
        header = _jpeg(data)
        kind = "JPEG"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        header = _webp(data)
        kind = "WebP"
    else:
        raise ImageError(f"{name}: {_unsupported(data)}")
    if header is None:
        raise ImageError(f"{name}: truncated or corrupt {kind} header: its size cannot be read")
    if header.width == 0 or header.height == 0:
        raise ImageError(f"{name}: not a readable image (zero width or height)")
    return header


def header_size(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` (format in lower case), or None when unreadable."""
    try:
        header = read_header(data, "")
    except ImageError:
        return None
    return header.format.lower(), header.width, header.height


def _unsupported(data: bytes) -> str:
    for offset, magic, kind in _OTHER_FORMATS:
        if data[offset : offset + len(magic)] == magic:
            return f"unsupported image format {kind}: {_ACCEPTED}"
    if len(data) >= 3 and data[0:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return f"unsupported image format PNM (PBM/PGM/PPM): {_ACCEPTED}"
    return f"not a JPEG, PNG or WebP picture (unknown format): {_ACCEPTED}"


def _png(data: bytes) -> Header | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return Header("PNG", width, height)


def _jpeg(data: bytes) -> Header | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SEQUENTIAL_SOF or marker in _OTHER_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return Header("JPEG", width, height, scalable=marker in _SEQUENTIAL_SOF)
        if length < 2:
            return None
        pos += 2 + length
    return None


def _webp(data: bytes) -> Header | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return Header("WebP", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return Header("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return Header("WebP", width, height)
    return None
