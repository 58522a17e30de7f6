"""Photos as an outside team hands them over, through the real commands.

Each picture is made from a ``../shared/faces/dev`` photo with Pillow (never copied into the
repository) and given to ``kiosk enroll`` or ``kiosk faces identify`` as a subprocess.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from PIL import Image
from structlog.testing import capture_logs

from edge.vision.live_parts import SMALL_FACE_PIXELS
from hardware.cameras import ReplayCamera
from tests.helpers import CONSENT_ARGS, consent_text, run_cli


def _enroll(roster: Path, *args: str) -> tuple[int, str, str]:
    done = run_cli("enroll", "--consent", "test-1", "--roster", str(roster), *args)
    return done.returncode, done.stdout, done.stderr


def test_enrol_from_a_folder_reads_every_file_of_a_rider_or_says_why_not(
    tmp_path: Path, dev_faces: Path
) -> None:
    """A rider's photo is never skipped unsaid: a TIFF (an export from a photo app) is
    refused by name, a JPEG saved without ``.jpg`` is enrolled, and a rider whose folder
    holds no photo is reported (exit 4)."""
    tree = tmp_path / "riders"
    for person in ("person_03", "person_05", "person_06", "person_08"):
        (tree / person).mkdir(parents=True)
    Image.open(dev_faces / "person_03" / "01.jpg").save(tree / "person_03" / "01.tif")
    Image.open(dev_faces / "person_05" / "01.jpg").save(tree / "person_05" / "photo", "JPEG")
    (tree / "person_06" / "01.jpg").symlink_to(dev_faces / "person_06" / "01.jpg")
    (tree / "person_06" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden: skipped
    roster = tmp_path / "roster.sqlite"

    code, out, err = _enroll(roster, "--from-dir", str(tree))

    assert code == 4, out + err
    lines = out.splitlines()
    assert "person_03  refused  01.tif: unsupported image format TIFF: use JPEG, PNG or WebP" in (
        lines
    )
    assert "person_03  enrolled 0 of 1 photo(s); 0 template(s) in the roster" in lines
    assert "person_05  enrolled 1 of 1 photo(s); 1 template(s) in the roster" in lines
    assert "person_06  enrolled 1 of 1 photo(s); 1 template(s) in the roster" in lines
    assert "person_08  refused  person_08/: the folder holds no photo" in lines
    assert err.strip().endswith(
        "2 of 4 rider(s) not enrolled (every photo refused): person_03, person_08"
    )

    # the rider enrolled from the file without an extension is recognised in another photo
    seen = run_cli(
        "faces", "identify", "--roster", str(roster), str(dev_faces / "person_05" / "02.jpg")
    )
    assert json.loads(seen.stdout)["person_id"] == "person_05", seen.stdout + seen.stderr


def test_enrol_from_a_flat_folder_refuses_a_photo_in_another_format_by_name(
    tmp_path: Path, dev_faces: Path
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "person_06.jpg").symlink_to(dev_faces / "person_06" / "01.jpg")
    Image.open(dev_faces / "person_03" / "01.jpg").save(flat / "person_03.bmp")

    code, out, err = _enroll(tmp_path / "roster.sqlite", "--from-dir", str(flat))

    assert code == 4, out + err
    assert "person_03  refused  person_03.bmp: unsupported image format BMP" in out
    assert "person_06  enrolled 1 of 1 photo(s)" in out


def far_in_a_large_photo(dev_faces: Path, rider: str, dest: Path) -> Path:
    """A 24 MP phone photo (6000 x 4000) of a room, with the rider standing back: their
    face about 170 px wide, 18 px once the photo is scaled to the detection width."""
    room = Image.open(dev_faces / "_other" / "noface_01.jpg").convert("RGB")
    photo = room.resize((6000, 4000))
    person = Image.open(dev_faces / rider).convert("RGB")
    person.thumbnail((600, 600))
    photo.paste(person, (3900, 1500))
    photo.save(dest, quality=90)
    return dest


def test_a_rider_standing_back_in_a_large_photo_is_found_by_every_path(
    tmp_path: Path, dev_faces: Path
) -> None:
    """A face the gate accepts (170 px) was 'no face found' once a 6000 px photo was scaled
    to 640 px: now the photo is also scanned at finer scales, in tiles."""
    photo = far_in_a_large_photo(dev_faces, "person_03/01.jpg", tmp_path / "far.jpg")
    roster = tmp_path / "roster.sqlite"

    code, out, err = _enroll(roster, "--person-id", "person_03", str(photo))
    assert code == 0, out + err
    assert "person_03  enrolled 1 of 1 photo(s)" in out
    seen = run_cli(
        "faces", "identify", "--roster", str(roster), str(dev_faces / "person_03" / "02.jpg")
    )
    assert json.loads(seen.stdout)["person_id"] == "person_03", seen.stdout + seen.stderr

    # the cloud's enrolment takes the same photo
    db = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    known = run_cli(*consent_text(tmp_path), "--database-url", db, program="kiosk-cloud")
    assert known.returncode == 0, known.stderr
    added = run_cli(
        "riders", "add", "--person-id", "person_03", str(photo), *CONSENT_ARGS,
        "--database-url", db, program="kiosk-cloud",
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    assert "added person_03 with 1 template(s)" in added.stdout


# The live pipeline on a replayed folder, in a fresh process that reports the most pixels
# one HOG pass scanned (upsampling counted: what HOG's memory grows with) and its peak memory.
_REPLAY = """
import resource, sys
from pathlib import Path
from edge.vision.live import LiveConfig, LivePipeline
from edge.vision.matcher import Gallery
from edge.vision.policy import ThresholdMarginPolicy
from hardware.cameras import ReplayCamera
from models.encoder import FaceEngine
engine = FaceEngine()
scans = []
detect = engine._models.detect
def counted(image, upsample, *rest):
    scans.append(image.shape[0] * image.shape[1] * 4**upsample)
    return detect(image, upsample, *rest)
engine._models.detect = counted
pipe = LivePipeline(engine, Gallery([]), ThresholdMarginPolicy(), config=LiveConfig())
camera = ReplayCamera(Path(sys.argv[1]), fps=1000, loop=True)
for number, frame in enumerate(camera.frames()):
    pipe.process(frame)
    if number == 5:
        break
print(max(scans), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_a_replayed_large_photo_is_searched_in_bounded_memory(
    tmp_path: Path, dev_faces: Path
) -> None:
    """``kiosk run`` replaying 24 MP photos of an empty room (or a 4K stream): the
    small-face pass scanned each frame whole and then upsampled (96 million pixels, 1.3 GB
    here on every third search); now no pass scans more than a 1080p frame upsampled.

    The bound is on the pixels HOG scans, which its memory grows with: the process's peak
    is printed, not asserted (430 MB here, 1.3 GB before the fix; it read up to 1 GB in a
    loaded CI run with the fix in place, a difference no run here reproduced)."""
    folder = tmp_path / "replay"
    folder.mkdir()
    for number, name in enumerate(("noface_01.jpg", "noface_04.jpg")):
        room = Image.open(dev_faces / "_other" / name).convert("RGB").resize((6000, 4000))
        room.save(folder / f"{number}.jpg", quality=90)

    done = run_cli("-c", _REPLAY, str(folder), program=Path(sys.executable).name)

    assert done.returncode == 0, done.stderr
    scanned, peak_mb = (int(value) for value in done.stdout.split()[-2:])
    print(f"live pipeline on replayed 24 MP photos: at most {scanned:,} pixels, peak {peak_mb} MB")
    assert 0 < scanned <= 4 * SMALL_FACE_PIXELS * 1.01  # the scaled size is rounded


def test_a_replayed_picture_that_cannot_be_read_is_skipped_with_one_warning(
    tmp_path: Path, dev_faces: Path
) -> None:
    """``kiosk run`` skips a replayed picture it cannot decode; it said nothing, so a
    folder of half-copied photos looked like an empty scene."""
    folder = tmp_path / "replay"
    folder.mkdir()
    (folder / "1.jpg").symlink_to(dev_faces / "person_03" / "01.jpg")
    whole = (dev_faces / "person_06" / "01.jpg").read_bytes()
    (folder / "2.jpg").write_bytes(whole[:100])  # cut short in its header
    camera = ReplayCamera(folder, fps=1000, loop=True, skip_bad=True)

    with capture_logs() as logs:
        shown = [frame.source for frame, _ in zip(camera.frames(), range(3), strict=False)]

    assert shown == ["1.jpg", "1.jpg", "1.jpg"]
    skipped = [entry for entry in logs if entry["event"] == "camera.frame_skipped"]
    assert len(skipped) == 1 and skipped[0]["log_level"] == "warning", logs
    assert skipped[0]["reason"].startswith(f"{folder / '2.jpg'}: truncated or corrupt JPEG")


def test_a_file_name_that_is_not_utf8_comes_out_as_json_any_reader_takes(
    tmp_path: Path, dev_faces: Path
) -> None:
    """A camera card's Latin-1 file name: identify and verify name it with its odd byte
    shown as ``\\xe9``, never as a lone surrogate that a strict JSON reader refuses."""
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.jpg"))
    odd.symlink_to(dev_faces / "person_01" / "01.jpg")
    roster = tmp_path / "r" / "roster.sqlite"
    enrolled = run_cli(
        "enroll", *CONSENT_ARGS[:2], "--roster", str(roster), "--person-id", "p1", str(odd)
    )
    assert enrolled.returncode == 0, enrolled.stderr
    for command in (("identify",), ("verify", "--person-id", "p1")):
        result = run_cli("faces", *command, "--roster", str(roster), str(odd))
        assert result.returncode == 0, result.stderr
        line = json.loads(result.stdout)
        line["image"].encode("utf-8")  # a lone surrogate would raise here
        assert line["image"] == f"{tmp_path}/caf\\xe9.jpg"
        assert line["reason"] == "match"
