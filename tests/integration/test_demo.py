"""``kiosk demo``: the whole appliance on one machine, run as a person runs it.

Each run is a real process: the cloud API on loopback with SQLite, the board simulator on a
pty, the kiosk runtime with the real face model, the sync daemon and the rider page. The
tests read what a person would check afterwards: the cloud's database, the kiosk's outbox
and roster files, and what the command printed.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from tests.helpers import run_cli

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def cloud_events(state: Path) -> list[dict[str, object]]:
    found = rows(
        state / "appliance" / "cloud" / "cloud.sqlite",
        "SELECT id, type, payload FROM events ORDER BY seq",
    )
    return [{"id": i, "type": t, "payload": json.loads(str(p))} for i, t, p in found]


def test_default_demo_rents_returns_and_refuses_and_the_cloud_has_it_all(tmp_path: Path) -> None:
    result = run_cli("--log-format", "json", "demo", "--state-dir", str(tmp_path), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Hi Eileen, take your powerbank from slot" in out
    assert "Sorry, we could not recognise you" in out
    assert re.search(r"rider page: http://127\.0\.0\.1:\d+/", out)
    assert re.search(r"done in [\d.]+ s: 1 round\(s\), 1 rental\(s\), 1 return\(s\)", out)

    events = cloud_events(tmp_path)
    kinds = [event["type"] for event in events]
    assert kinds.count("rental.started") == 1 and kinds.count("rental.returned") == 1
    assert "face.unrecognised" in kinds and "kiosk.started" in kinds
    assert all(ULID.match(str(event["id"])) for event in events)
    started = next(e["payload"] for e in events if e["type"] == "rental.started")
    returned = next(e["payload"] for e in events if e["type"] == "rental.returned")
    assert isinstance(started, dict) and isinstance(returned, dict)
    assert started["person_id"] == "eileen-collins"
    assert returned["powerbank_id"] == started["powerbank_id"]
    assert returned["slot"] != started["slot"]  # returned into another slot

    cloud_db = tmp_path / "appliance" / "cloud" / "cloud.sqlite"
    assert rows(cloud_db, "SELECT status FROM rentals") == [("closed",)]
    kiosk = tmp_path / "appliance" / "kiosk"
    # Every event the kiosk recorded reached the cloud, once.
    outbox = rows(kiosk / "outbox.sqlite", "SELECT id, state FROM events")
    assert {state for _, state in outbox} == {"sent"}
    assert sorted(str(i) for i, _ in outbox) == sorted(str(e["id"]) for e in events)
    # The rider was deleted in the cloud: the kiosk's roster holds nobody now.
    assert rows(kiosk / "roster.sqlite", "SELECT COUNT(*) FROM riders") == [(0,)]


def test_demo_with_real_riders_and_a_stranger(tmp_path: Path, dev_faces: Path) -> None:
    enroll = tmp_path / "enroll"
    for person in ("person_01", "person_02", "person_03"):
        (enroll / person).mkdir(parents=True)
        for photo in ("01.jpg", "02.jpg"):
            (enroll / person / photo).symlink_to(dev_faces / person / photo)
    stranger = dev_faces / "person_06" / "01.jpg"
    result = run_cli(
        "demo", "--enroll", str(enroll), "--stranger", str(stranger),
        "--state-dir", str(tmp_path / "state"), timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "operator added rider person_03" in result.stdout
    events = cloud_events(tmp_path / "state")
    started = [e["payload"] for e in events if e["type"] == "rental.started"]
    assert [p["person_id"] for p in started if isinstance(p, dict)] == ["person_01"]
    assert any(e["type"] == "face.unrecognised" for e in events)
    # With a stranger, nobody is deleted: the kiosk still holds all three riders.
    roster = tmp_path / "state" / "appliance" / "kiosk" / "roster.sqlite"
    assert rows(roster, "SELECT COUNT(*) FROM riders") == [(3,)]


def test_no_template_or_image_reaches_the_logs(tmp_path: Path) -> None:
    """The whole appliance, at debug level, writes nothing biometric to its log."""
    result = run_cli(
        "--debug", "--log-format", "json", "demo", "--state-dir", str(tmp_path), timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records, "the demo wrote no log records"

    def numbers_in(value: object) -> int:
        if isinstance(value, dict):
            return max((numbers_in(item) for item in value.values()), default=0)
        if isinstance(value, list):
            own = sum(isinstance(item, (int, float)) for item in value)
            return max([own, *(numbers_in(item) for item in value)])
        return 0

    for record in records:
        assert numbers_in(record) < 16, record
    text = result.stderr + result.stdout
    # no dump of binary data (four escaped bytes in a row) and no picture's signature; a
    # random id may well contain the letters PNG
    assert not re.search(r"(\\x[0-9a-f]{2}){4}", text), "escaped bytes in the output"
    for signature in ("\\x89PNG", "IHDR", "JFIF", "\\xff\\xd8\\xff"):
        assert signature not in text, signature
    # The template of the rider's photo: none of its values may appear in the output.
    from edge.vision.engine import FaceEngine
    from hardware.cameras import read_image

    engine = FaceEngine()
    photo = tmp_path / "samples" / "enroll" / "eileen-collins" / "portrait.png"
    observation = engine.observe(read_image(photo))
    assert observation is not None
    for value in observation.encoding[:8]:
        # its first 5 decimals (a value printed at any longer precision starts with them),
        # not inside a longer number: a timestamp's 10.021160 holds 0.02116
        digits = f"{abs(value):.10f}"[:7]
        leaked = re.search(rf"(?<![\d.]){re.escape(digits)}", text)
        assert leaked is None, leaked


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "ann").mkdir(parents=True)
    (broken / "ann" / "01.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cases = [
        (["--enroll", str(tmp_path / "missing")], 4, f"--enroll {tmp_path / 'missing'}"),
        (["--stranger", str(tmp_path / "nobody.jpg")], 4, "--stranger"),
        (["--enroll", str(broken)], 4, "no rider could be enrolled"),
        (["--rounds", "0"], 2, "--rounds"),
    ]
    for args, code, words in cases:
        result = run_cli("demo", *args, "--state-dir", str(tmp_path / "state"))
        assert result.returncode == code, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert words in result.stderr, (args, result.stderr)
        if code == 4:
            assert len(lines) <= 2 and lines[-1].startswith("kiosk: error: "), result.stderr
            assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "--debug", "demo", "--enroll", str(tmp_path / "missing"), "--state-dir", str(tmp_path)
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
