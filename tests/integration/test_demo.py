"""``kiosk demo``: real photos through the real model into a real SQLite outbox."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import run_cli

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def outbox_events(path: Path) -> list[dict[str, object]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, id, type, body FROM events ORDER BY seq").fetchall()
    events = []
    for seq, event_id, event_type, body in rows:
        event = json.loads(body)
        assert (event["seq"], event["id"], event["type"]) == (seq, event_id, event_type)
        events.append(event)
    return events


def test_default_demo_recognises_the_sample_rider_and_records_events(tmp_path: Path) -> None:
    result = run_cli("--log-format", "json", "demo", "--state-dir", str(tmp_path), "--fps", "50")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    frames = [line for line in lines if line.startswith("frame")]
    assert len(frames) == 6
    assert [("RECOGNISED eileen-collins" in line) for line in frames] == [
        True,
        False,
        True,
        False,
        True,
        False,
    ]
    assert all("no face" in line for line in frames if "no-face" in line)
    events = outbox_events(tmp_path / "outbox.sqlite")
    assert [event["type"] for event in events] == ["kiosk.started"] + ["face.recognised"] * 3
    assert [event["seq"] for event in events] == [1, 2, 3, 4]
    assert len({event["id"] for event in events}) == 4
    for event in events:
        assert ULID.match(str(event["id"]))
        assert event["kiosk_id"] == "kiosk-dev"
    for event in events[1:]:
        payload = event["payload"]
        assert isinstance(payload, dict)
        assert payload["person_id"] == "eileen-collins"
        assert 0 <= float(payload["distance"]) < 0.5
        assert set(payload) == {"person_id", "distance", "margin", "frames", "model"}


def test_demo_on_real_rider_photos(tmp_path: Path, dev_faces: Path) -> None:
    enroll = tmp_path / "enroll"
    frames = tmp_path / "frames"
    frames.mkdir()
    for person in ("person_01", "person_02", "person_03", "person_04"):
        (enroll / person).mkdir(parents=True)
        (enroll / person / "01.jpg").symlink_to(dev_faces / person / "01.jpg")
    probes = {
        "a-person_01.jpg": dev_faces / "person_01" / "02.jpg",
        "b-person_03.jpg": dev_faces / "person_03" / "03.jpg",
        "c-stranger.jpg": dev_faces / "person_06" / "01.jpg",
        "d-noface.jpg": dev_faces / "_other" / "noface_04.jpg",
    }
    for name, source in probes.items():
        (frames / name).symlink_to(source)
    result = run_cli(
        "demo",
        "--enroll",
        str(enroll),
        "--images",
        str(frames),
        "--state-dir",
        str(tmp_path / "state"),
        "--fps",
        "50",
    )
    assert result.returncode == 0, result.stderr
    by_frame = {
        line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("frame")
    }
    assert "RECOGNISED person_01" in by_frame["a-person_01.jpg"]
    assert "RECOGNISED person_03" in by_frame["b-person_03.jpg"]
    assert "not recognised" in by_frame["c-stranger.jpg"]
    assert "no face" in by_frame["d-noface.jpg"]
    events = outbox_events(tmp_path / "state" / "outbox.sqlite")
    assert [event["type"] for event in events] == [
        "kiosk.started",
        "face.recognised",
        "face.recognised",
        "face.unrecognised",
    ]
    assert events[3]["payload"] == {"count": 1, "reason": "unknown"}


def test_no_template_or_image_reaches_the_logs(tmp_path: Path) -> None:
    """The demo's whole path, at debug level, writes nothing biometric to its log."""
    result = run_cli(
        "--debug", "--log-format", "json", "demo", "--state-dir", str(tmp_path), "--fps", "50"
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records, "the demo wrote no log records"
    assert all(record["kiosk_id"] == "kiosk-dev" for record in records)

    def numbers_in(value: object) -> int:
        if isinstance(value, dict):
            return max((numbers_in(item) for item in value.values()), default=0)
        if isinstance(value, list):
            own = sum(isinstance(item, (int, float)) for item in value)
            return max([own, *(numbers_in(item) for item in value)])
        return 0

    for record in records:
        assert numbers_in(record) < 16, record
    text = result.stderr
    assert "\\x" not in text and "PNG" not in text
    # The templates the demo computed: none of their values may appear in the log.
    from edge.vision.engine import FaceEngine
    from hardware.camera import read_image

    engine = FaceEngine()
    for frame in sorted((tmp_path / "samples" / "frames").glob("*rider*")):
        observation = engine.observe(read_image(frame))
        assert observation is not None
        for value in observation.encoding[:8]:
            assert f"{value:.5f}" not in text


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "missing", "--images {images}: no such folder"),
        (
            lambda tmp: (tmp / "empty").mkdir() or tmp / "empty",
            "--images {images}: holds no image files",
        ),
    ],
)
def test_bad_image_folder_is_one_clear_line(tmp_path: Path, make: object, expected: str) -> None:
    images = make(tmp_path)  # type: ignore[operator]
    result = run_cli("demo", "--images", str(images), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kiosk: error: " + expected.format(images=images))


def test_unreadable_frame_names_the_file(tmp_path: Path) -> None:
    images = tmp_path / "frames"
    images.mkdir()
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    result = run_cli(
        "demo", "--images", str(images), "--state-dir", str(tmp_path / "state"), "--fps", "50"
    )
    assert result.returncode == 4
    assert result.stderr.strip().splitlines()[-1] == (
        f"kiosk: error: {images / 'broken.jpg'}: not a readable image (corrupt, truncated or unknown format)"
    )
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "--debug", "demo", "--images", str(tmp_path / "missing"), "--state-dir", str(tmp_path / "s")
    )
    assert result.returncode == 4
    assert "Traceback" in result.stderr


def test_missing_model_file_is_one_clear_line(tmp_path: Path) -> None:
    """A broken install (a model file gone) stops the demo before any work, with exit 5."""
    package = tmp_path / "site" / "face_recognition_models"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    result = run_cli(
        "demo", "--state-dir", str(tmp_path / "state"), env={"PYTHONPATH": str(tmp_path / "site")}
    )
    assert result.returncode == 5, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "dlib_face_recognition_resnet_model_v1.dat is missing" in lines[0]
