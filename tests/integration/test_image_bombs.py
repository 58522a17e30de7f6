"""Pictures built to exhaust a Pi's memory, given to every command that decodes photos.

``kiosk enroll``, ``kiosk faces identify`` and ``kiosk-cloud riders add`` run as
subprocesses on small files that announce huge pictures (a deflate TIFF and a PNG of
hundreds of megapixels), on formats the kiosk does not read, and on files that are not
pictures at all. Each is refused by name, with exit 4 where nothing could be used, and the
command's peak memory stays far below what decoding would take.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import BIN, CONSENT_ARGS, consent_text, run_cli

pytestmark = pytest.mark.timeout(300)
PEAK_LIMIT_MB = 900  # decoding the TIFF alone took 1.8 GB; the face models take ~300 MB


def _zeros_deflated(size: int) -> bytes:
    """``size`` zero bytes as a zlib stream, built in well under a second: the compressed
    form of a 1 MiB run of zeros (after a full flush it is the same every time) repeated,
    closed by the checksum of the whole."""
    chunk = bytes(1 << 20)
    count, rest = divmod(size, len(chunk))
    packer = zlib.compressobj(9)
    head = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    tail = packer.compress(bytes(rest)) + packer.flush()
    checksum = 1
    for _ in range(count):
        checksum = zlib.adler32(chunk, checksum)
    checksum = zlib.adler32(bytes(rest), checksum)
    return head + block * (count - 1) + tail[:-4] + struct.pack(">I", checksum)


def tiff_bomb(path: Path, side: int = 20_000) -> Path:
    """A valid grey, deflate-compressed TIFF of ``side`` x ``side`` pixels (about 1 MB)."""
    strip = _zeros_deflated(side * side)
    entries = [  # tag, type (3 short, 4 long), value
        (256, 4, side),
        (257, 4, side),
        (258, 3, 8),
        (259, 3, 8),  # deflate
        (262, 3, 1),  # black is zero
        (273, 4, 0),  # strip offset, set below
        (277, 3, 1),
        (278, 4, side),
        (279, 4, len(strip)),
    ]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_at) + ifd + b"\x00" * 4 + strip)
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(path: Path, side: int = 12_000) -> Path:
    """A valid grey PNG of ``side`` x ``side`` pixels: under the old 4x-the-cap limit, far
    over the cap itself."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    pixels = _zeros_deflated(side * (side + 1))  # each row: filter byte 0, then zeros
    body = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Each bad file, and the refusal a person must read for it."""
    folder = tmp_path_factory.mktemp("bombs")
    (folder / "folder.jpg").mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHD")
    (folder / "anim.gif").write_bytes(b"GIF89a" + bytes(20))
    return {
        "bomb.tif": (tiff_bomb(folder / "bomb.tif"), "unsupported image format TIFF"),
        "bomb.png": (
            png_bomb(folder / "bomb.png"),
            "image too large (PNG 12000x12000, 144 megapixels; the cap is 40 megapixels",
        ),
        "folder.jpg": (folder / "folder.jpg", "is a folder, not an image"),
        "empty.jpg": (folder / "empty.jpg", "empty file (0 bytes)"),
        "cut.png": (folder / "cut.png", "truncated or corrupt PNG header"),
        "anim.gif": (folder / "anim.gif", "unsupported image format GIF: use JPEG, PNG or WebP"),
    }


def run_measured(*args: str, program: str = "kiosk") -> tuple[int, str, str, float]:
    """Run a command in a fresh parent process that reports the command's peak memory."""
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(done.stdout)\n"
        "sys.stderr.write(done.stderr)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "sys.stderr.write(f'\\nPEAK {peak}\\n')\n"
        "raise SystemExit(done.returncode)\n"
    )
    result = run_cli("-c", probe, str(BIN / program), *args, program=Path(sys.executable).name)
    body, _, peak = result.stderr.rpartition("\nPEAK ")
    return result.returncode, result.stdout, body, int(peak) / 1024


def test_enroll_refuses_each_bad_image_by_name_without_decoding_it(
    tmp_path: Path, bad_images: dict[str, tuple[Path, str]]
) -> None:
    paths = [str(path) for path, _ in bad_images.values()]
    roster = tmp_path / "roster.sqlite"
    code, out, err, peak_mb = run_measured(
        "enroll", "--consent", "test-1", "--roster", str(roster), "--person-id", "someone", *paths
    )
    print(f"kiosk enroll: peak {peak_mb:.0f} MB")
    assert code == 4, err
    for name, (_, refusal) in bad_images.items():
        assert f"someone  refused  {name}: {refusal}" in out, out
    assert "every photo refused" in err
    assert peak_mb < PEAK_LIMIT_MB


def test_identify_reports_bad_images_as_unreadable(
    tmp_path: Path, dev_faces: Path, bad_images: dict[str, tuple[Path, str]]
) -> None:
    roster = tmp_path / "roster.sqlite"
    enrolled = run_cli(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(roster),
        "--person-id",
        "p3",
        str(dev_faces / "person_03" / "01.jpg"),
    )
    assert enrolled.returncode == 0, enrolled.stderr
    paths = [str(path) for path, _ in bad_images.values()]
    code, out, err, peak_mb = run_measured("faces", "identify", "--roster", str(roster), *paths)
    print(f"kiosk faces identify: peak {peak_mb:.0f} MB")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["image"], line["reason"]) for line in lines] == [
        (path, "unreadable image") for path in paths
    ]
    for path, refusal in bad_images.values():
        assert f"kiosk: warning: {path}: {refusal}" in err, err
    assert peak_mb < PEAK_LIMIT_MB


def test_riders_add_refuses_the_bombs_and_stores_nothing(
    tmp_path: Path, bad_images: dict[str, tuple[Path, str]]
) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    bombs = [bad_images[name][0] for name in ("bomb.tif", "bomb.png")]
    known = run_cli(*consent_text(tmp_path), "--database-url", db, program="kiosk-cloud")
    assert known.returncode == 0, known.stderr
    code, _, err, peak_mb = run_measured(
        "riders",
        "add",
        "--person-id",
        "mallory",
        *map(str, bombs),
        *CONSENT_ARGS,
        "--database-url",
        db,
        program="kiosk-cloud",
    )
    print(f"kiosk-cloud riders add: peak {peak_mb:.0f} MB")
    assert code == 4 and "no usable photo" in err, err
    for name in ("bomb.tif", "bomb.png"):
        assert f"mallory  refused  {name}: {bad_images[name][1]}" in err
    assert peak_mb < PEAK_LIMIT_MB


def test_a_tall_strip_under_the_cap_is_scanned_in_bounded_memory(
    tmp_path: Path, dev_faces: Path
) -> None:
    """A 640 x 40,000 picture (25.6 MP, under the cap) with no face: the detector scaled it
    by its width only, so it scanned all of it and then all of it upsampled (1.4 GB, 17 s);
    now a pass scans at most twice the detection width squared."""
    tile = Image.open(dev_faces / "_other" / "noface_01.jpg").convert("RGB").resize((640, 651))
    strip = Image.new("RGB", (640, 40_000))
    for top in range(0, 40_000, tile.height):
        strip.paste(tile, (0, top))
    path = tmp_path / "strip.jpg"
    strip.save(path, quality=85)
    roster = tmp_path / "roster.sqlite"

    code, out, err, peak_mb = run_measured(
        "enroll", "--consent", "test-1", "--roster", str(roster), "--person-id", "tall", str(path)
    )
    print(f"kiosk enroll of a strip: peak {peak_mb:.0f} MB")
    assert code == 4 and "tall  refused  strip.jpg: no face found" in out, out + err
    assert peak_mb < 600
