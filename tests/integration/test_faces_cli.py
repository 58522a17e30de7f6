"""``kiosk enroll`` and ``kiosk faces identify|eval`` end to end, as subprocesses, on real photos."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import run_cli

IDENTIFY_KEYS = {"image", "person_id", "distance", "margin", "faces", "reason"}


def link_tree(dev: Path, dest: Path, people: dict[str, list[str]]) -> Path:
    for person, files in people.items():
        (dest / person).mkdir(parents=True, exist_ok=True)
        for name in files:
            (dest / person / name).symlink_to(dev / person / name)
    return dest


@pytest.fixture(scope="module")
def roster(tmp_path_factory: pytest.TempPathFactory, dev_faces: Path) -> Path:
    """A roster with three riders enrolled with --from-dir (an _other folder is skipped)."""
    base = tmp_path_factory.mktemp("enrolled")
    tree = link_tree(
        dev_faces,
        base / "riders",
        {"person_01": ["01.jpg", "02.jpg"], "person_03": ["01.jpg"], "person_09": ["01.png"]},
    )
    (tree / "_other").mkdir()
    (tree / "_other" / "group.jpg").symlink_to(dev_faces / "_other" / "group_01.jpg")
    path = base / "roster.sqlite"
    result = run_cli("enroll", "--roster", str(path), "--from-dir", str(tree))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "person_01  enrolled 2 of 2 photo(s); 2 template(s) in the roster",
        "person_03  enrolled 1 of 1 photo(s); 1 template(s) in the roster",
        "person_09  enrolled 1 of 1 photo(s); 1 template(s) in the roster",
        f"roster {path}: 3 rider(s), version 3",
    ]
    return path


def test_the_roster_holds_no_template_or_name_in_clear(roster: Path) -> None:
    raw = roster.read_bytes() + b"".join(
        p.read_bytes() for p in roster.parent.glob("roster.sqlite*")
    )
    assert b"person_01" in raw  # ids are the row keys
    with sqlite3.connect(roster) as db:
        tables = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert tables == {"riders", "data_keys", "meta"}
        sealed = [blob for (blob,) in db.execute("SELECT sealed FROM riders")]
    assert all(isinstance(blob, bytes) and b"dlib" not in blob for blob in sealed)
    keys = roster.parent / "keys"
    assert all(oct(p.stat().st_mode)[-3:] == "600" for p in keys.iterdir())


def test_identify_prints_one_json_line_per_image(
    roster: Path, dev_faces: Path, tmp_path: Path
) -> None:
    grey = tmp_path / "grey.png"
    cv2.imwrite(
        str(grey), cv2.imread(str(dev_faces / "person_03" / "02.jpg"), cv2.IMREAD_GRAYSCALE)
    )
    deep = tmp_path / "deep.png"
    cv2.imwrite(
        str(deep), cv2.imread(str(dev_faces / "person_01" / "03.jpg")).astype(np.uint16) * 257
    )
    truncated = tmp_path / "truncated.jpg"
    data = (dev_faces / "person_01" / "04.jpg").read_bytes()
    truncated.write_bytes(data[:200])
    images = [
        dev_faces / "person_01" / "05.jpg",
        dev_faces / "person_06" / "01.jpg",  # not enrolled
        dev_faces / "_other" / "group_04.jpg",
        dev_faces / "_other" / "noface_03.png",
        grey,
        deep,
        truncated,
        tmp_path / "missing.jpg",
    ]
    result = run_cli("faces", "identify", "--roster", str(roster), *map(str, images))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(line) for line in lines] == [IDENTIFY_KEYS] * len(images)
    assert [line["image"] for line in lines] == [str(p) for p in images]
    got = [(line["person_id"], line["reason"], line["faces"]) for line in lines]
    assert got == [
        ("person_01", "match", 1),
        (None, "unknown", 1),
        (None, "several faces", 2),
        (None, "no face", 0),
        ("person_03", "match", 1),
        ("person_01", "match", 1),
        (None, "unreadable image", None),
        (None, "unreadable image", None),
    ]
    assert 0 < lines[0]["distance"] < 0.47 and lines[0]["margin"] >= 0.08
    assert lines[1]["distance"] >= 0.47
    assert f"{tmp_path / 'missing.jpg'}: no such file" in result.stderr


def test_enrolling_the_same_photo_twice_is_refused(roster: Path, dev_faces: Path) -> None:
    result = run_cli(
        "enroll",
        "--roster",
        str(roster),
        "--person-id",
        "person_03",
        "--name",
        "Third Person",
        str(dev_faces / "person_03" / "01.jpg"),
        str(dev_faces / "person_03" / "03.jpg"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [
        "person_03  refused  01.jpg: already enrolled from this photo",
        "person_03  enrolled 1 of 2 photo(s); 2 template(s) in the roster",
    ]
    assert "Third Person" not in roster.read_bytes().decode("latin-1")


def test_enrol_refuses_bad_photos_with_reasons_and_exit_4(tmp_path: Path, dev_faces: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 nope")
    small = tmp_path / "small.jpg"
    photo = cv2.imread(str(dev_faces / "person_03" / "01.jpg"))
    cv2.imwrite(str(small), cv2.resize(photo, (photo.shape[1] // 6, photo.shape[0] // 6)))
    result = run_cli(
        "enroll",
        "--roster",
        str(tmp_path / "r.sqlite"),
        "--person-id",
        "someone",
        str(dev_faces / "_other" / "group_01.jpg"),
        str(dev_faces / "_other" / "noface_01.jpg"),
        str(broken),
        str(small),
    )
    assert result.returncode == 4
    assert result.stdout.splitlines()[:4] == [
        "someone  refused  group_01.jpg: 2 faces of similar size: use a photo of one person",
        "someone  refused  noface_01.jpg: no face found",
        "someone  refused  broken.jpg: not a readable image (corrupt, truncated or unknown format)",
        "someone  refused  small.jpg: face too small (come closer to the camera)",
    ]
    assert result.stderr.strip().endswith(
        "1 of 1 rider(s) not enrolled (every photo refused): someone"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--person-id", "x"], "give one or more images"),
        ([], "give --person-id ID with one or more images, or --from-dir DIR"),
        (["--person-id", "bad id!", "a.jpg"], "is not a valid person id"),
        (["--from-dir", "/nonexistent", "--person-id", "x"], "use either --from-dir"),
        (["--from-dir", "/nonexistent"], "/nonexistent: no such folder"),
    ],
)
def test_enrol_usage_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("enroll", "--roster", str(tmp_path / "r.sqlite"), *args)
    assert result.returncode == 4
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_identify_needs_an_existing_roster(tmp_path: Path) -> None:
    result = run_cli("faces", "identify", "--roster", str(tmp_path / "none.sqlite"), "x.jpg")
    assert result.returncode == 4
    assert "no such roster" in result.stderr
    assert not (tmp_path / "none.sqlite").exists()


def test_eval_counts_and_writes_json(tmp_path: Path, dev_faces: Path) -> None:
    tree = link_tree(
        dev_faces,
        tmp_path / "tree",
        {
            "person_01": ["01.jpg", "02.jpg", "03.jpg"],
            "person_03": ["01.jpg", "02.jpg"],
            "person_09": ["01.png", "02.png"],
            "person_12": ["01.png"],  # one photo: an unknown probe
        },
    )
    out = tmp_path / "eval.json"
    result = run_cli("faces", "eval", str(tree), "--json", str(out), "--sweep")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    counts = report["counts"]
    assert (
        counts["genuine"],
        counts["unknown"],
        counts["wrong_person"],
        counts["unknown_accepted"],
    ) == (4, 1, 0, 0)
    assert counts["correct"] + counts["missed"] == 4
    assert report["protocol"]["threshold"] == 0.47
    assert len(report["sweep"]) == 48
    assert "genuine probes 4:" in result.stdout
    assert all("encoding" not in probe for probe in report["probes"])
