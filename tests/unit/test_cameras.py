"""Camera code without devices: decoding odd pictures, reopening a source that vanishes."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from hardware.cameras import (
    CameraStatus,
    Frame,
    OpenCVCamera,
    Picamera2Camera,
    ReconnectingCamera,
)
from hardware.errors import CameraOpenError
from models.errors import ImageError
from models.image_headers import header_size
from models.images import decode_image


def encoded(picture: np.ndarray, ext: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(ext, picture)
    assert ok
    return buffer.tobytes()


def test_grayscale_16bit_and_alpha_become_rgb8() -> None:
    grey = np.full((40, 60), 200, dtype=np.uint8)
    deep = np.full((40, 60), 50000, dtype=np.uint16)
    bgra = np.zeros((40, 60, 4), dtype=np.uint8)
    bgra[..., 2] = 255  # red in OpenCV's BGR order
    for picture in (grey, deep, bgra):
        rgb = decode_image(encoded(picture), "x.png")
        assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert decode_image(encoded(deep), "x.png")[0, 0, 0] == 50000 >> 8
    assert tuple(decode_image(encoded(bgra), "x.png")[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"\xff\xd8\xff\xe0 not really a jpeg", "truncated or corrupt JPEG header"),
        (b"hello, world", "not a JPEG, PNG or WebP picture"),
    ],
)
def test_unreadable_bytes_raise_image_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data, "bad.jpg")


def test_truncated_jpeg_is_refused_or_decoded_but_never_crashes() -> None:
    picture = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    data = encoded(picture, ".jpg")
    for cut in (10, 100, len(data) // 2):
        try:
            rgb = decode_image(data[:cut], "cut.jpg")
        except ImageError:
            continue
        assert rgb.shape == (200, 300, 3)


def test_header_sizes_are_read_without_decoding() -> None:
    picture = np.zeros((30, 70, 3), dtype=np.uint8)
    assert header_size(encoded(picture, ".png")) == ("png", 70, 30)
    assert header_size(encoded(picture, ".jpg")) == ("jpeg", 70, 30)
    assert header_size(b"GIF89a") is None


def test_an_oversized_jpeg_is_decoded_reduced_under_the_cap() -> None:
    picture = cv2.resize(
        np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8), (4000, 3000)
    )
    rgb = decode_image(encoded(picture, ".jpg"), "big.jpg", max_pixels=1_000_000)
    assert rgb.shape[0] * rgb.shape[1] <= 1_000_000
    assert abs(rgb.shape[1] / rgb.shape[0] - 4 / 3) < 0.01


def test_a_png_announcing_a_gigapixel_is_refused_from_its_header() -> None:
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    chunk = (
        struct.pack(">I", len(ihdr))
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )
    data = b"\x89PNG\r\n\x1a\n" + chunk
    with pytest.raises(ImageError, match="image too large"):
        decode_image(data, "bomb.png", max_pixels=1_000_000)


def _jpeg_header(sof: int, width: int, height: int) -> bytes:
    """The start of a JPEG: SOI, then a frame header of type ``sof`` (no scan data)."""
    frame = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    return b"\xff\xd8" + bytes([0xFF, sof]) + struct.pack(">H", len(frame) + 2) + frame


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_jpeg_header(0xC2, 10_000, 10_000), "image too large .JPEG 10000x10000, 100 megapixels"),
        (_jpeg_header(0xC0, 30_000, 30_000), "image too large .JPEG 30000x30000"),
        (
            b"RIFF\x00\x00\x00\x00WEBPVP8X" + bytes(8) + (9_999).to_bytes(3, "little") * 2,
            "image too large .WebP 10000x10000",
        ),
        (b"II*\x00" + bytes(16), "unsupported image format TIFF: use JPEG, PNG or WebP"),
        (b"BM" + bytes(60), "unsupported image format BMP"),
        (b"GIF89a" + bytes(10), "unsupported image format GIF"),
        (b"P5\n20000 20000\n255\n", "unsupported image format PNM"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(8), "unsupported image format HEIC"),
        (_jpeg_header(0xC0, 0, 100), "zero width or height"),
        (b"\xff\xd8\xff\xda\x00\x02", "truncated or corrupt JPEG header"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "truncated or corrupt WebP header"),
    ],
)
def test_the_cap_and_the_formats_hold_from_the_header_alone(data: bytes, message: str) -> None:
    """Refused before any decoding: a progressive JPEG (libjpeg would keep every coefficient
    of it), a sequential one still over the cap at 1/8 scale, a WebP, other formats."""
    with pytest.raises(ImageError, match=message):
        decode_image(data, "x", max_pixels=40_000_000)


def test_webp_sizes_are_read_from_each_kind_of_header() -> None:
    picture = np.zeros((30, 70, 3), dtype=np.uint8)
    for quality in (80, 101):  # lossy VP8, lossless VP8L
        ok, buffer = cv2.imencode(".webp", picture, [cv2.IMWRITE_WEBP_QUALITY, quality])
        assert ok and header_size(buffer.tobytes()) == ("webp", 70, 30)
        assert decode_image(buffer.tobytes(), "x.webp").shape == (30, 70, 3)


def test_cmyk_and_progressive_jpegs_decode_to_rgb8() -> None:
    import io

    from PIL import Image as PilImage

    cmyk = io.BytesIO()
    PilImage.new("CMYK", (64, 48), (0, 255, 255, 0)).save(cmyk, "JPEG", quality=95)  # red
    rgb = decode_image(cmyk.getvalue(), "cmyk.jpg")
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert rgb[24, 32, 0] > 200 and rgb[24, 32, 1] < 60
    picture = np.full((40, 60, 3), 120, dtype=np.uint8)
    ok, progressive = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and decode_image(progressive.tobytes(), "p.jpg").shape == (40, 60, 3)


class FlakySource:
    """Fails to open ``fail_opens`` times, then yields ``frames`` frames and vanishes."""

    def __init__(self, log: list[str], frames: int, vanish: bool) -> None:
        self.log, self.count, self.vanish = log, frames, vanish

    def frames(self) -> Iterator[Frame]:
        for i in range(self.count):
            yield Frame(np.zeros((4, 4, 3), dtype=np.uint8), float(i), i, "flaky")
        if self.vanish:
            raise CameraOpenError("camera flaky: stopped delivering frames")

    def close(self) -> None:
        self.log.append("closed")


def test_a_vanishing_camera_is_reopened_with_growing_delays() -> None:
    log: list[str] = []
    sleeps: list[float] = []
    statuses: list[CameraStatus] = []
    attempts = iter(["fail", "fail", "ok-vanish", "fail", "ok-end"])

    def open_source() -> FlakySource:
        what = next(attempts)
        if what == "fail":
            raise CameraOpenError("camera 0: cannot open (unplugged, busy or no such device)")
        return FlakySource(log, 3, vanish=what == "ok-vanish")

    camera = ReconnectingCamera(
        open_source, initial_s=0.5, max_s=4.0, on_status=statuses.append, sleep=sleeps.append
    )
    frames = list(camera.frames())
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 5]  # numbered across reopenings
    assert [s.state for s in statuses] == [
        "retrying",
        "retrying",
        "open",
        "lost",
        "retrying",
        "open",
    ]
    assert len(sleeps) == 3 and all(0.5 <= s <= 4.0 for s in sleeps)
    assert sleeps[1] >= 1.0  # the second wait is at least double the first base delay
    assert log == ["closed", "closed"]
    assert camera.reopened == 1


def test_a_bounded_camera_gives_up_with_the_reason() -> None:
    def never() -> FlakySource:
        raise CameraOpenError("camera 3: cannot open")

    statuses: list[CameraStatus] = []
    camera = ReconnectingCamera(
        never, give_up_after=3, on_status=statuses.append, sleep=lambda s: None
    )
    with pytest.raises(CameraOpenError, match="camera 3"):
        list(camera.frames())
    assert [s.state for s in statuses] == ["retrying", "retrying", "gave up"]


class FakeCapture:
    def __init__(self, opened: bool, reads: list[bool]) -> None:
        self.opened, self.reads, self.released = opened, reads, False

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.reads and self.reads.pop(0):
            return True, np.zeros((48, 64, 3), dtype=np.uint8)
        return False, None

    def release(self) -> None:
        self.released = True


def test_opencv_camera_translates_failures() -> None:
    closed = OpenCVCamera("0", capture_factory=lambda source: FakeCapture(False, []))
    with pytest.raises(CameraOpenError, match="camera 0: cannot open"):
        closed.open()
    capture = FakeCapture(True, [True, True, False])
    camera = OpenCVCamera(
        "0", capture_factory=lambda source: capture, clock=iter(range(100)).__next__
    )
    got = []
    with pytest.raises(CameraOpenError, match="stopped delivering frames"):
        for frame in camera.frames():
            got.append(frame)
    assert [(f.index, f.timestamp, f.image.shape) for f in got] == [
        (0, 0, (48, 64, 3)),
        (1, 1, (48, 64, 3)),
    ]
    camera.close()
    assert capture.released


def test_picamera2_missing_is_a_clear_error() -> None:
    def missing() -> object:
        raise CameraOpenError(
            "picamera2 is not installed: on Raspberry Pi OS install python3-picamera2"
        )

    with pytest.raises(CameraOpenError, match="picamera2 is not installed"):
        Picamera2Camera(loader=missing).open()
    with pytest.raises(CameraOpenError, match="picamera2 is not installed"):
        Picamera2Camera().open()  # the real lazy import, on a machine without picamera2
