"""``kiosk enroll`` and ``kiosk faces identify|verify|eval`` end to end, on real photos.

The commands run as subprocesses; the claim step's pure core is also driven in process on
encodings of the same photos, through the real model.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import struct
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cloud_sync.claim_code import claim_matches
from edge.config import VisionSection
from edge.vault.live import open_roster
from edge.vision import setup
from edge.vision.claim import CLAIM_NOT_RECOGNISED, ClaimLockout, check_claim, lock_key
from edge.vision.policy import load_operating_points
from models.encoder import FaceEngine
from models.images import read_image
from tests.helpers import BIN, run_cli

IDENTIFY_KEYS = {"image", "person_id", "distance", "margin", "faces", "reason"}
VERIFY_KEYS = {"image", "person_id", "accepted", "distance", "reason"}


def run_with_input(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    """``run_cli`` with text on standard input (for the claim prompt)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    return subprocess.run(
        [str(BIN / "kiosk"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def link_tree(dev: Path, dest: Path, people: dict[str, list[str]]) -> Path:
    for person, files in people.items():
        (dest / person).mkdir(parents=True, exist_ok=True)
        for name in files:
            (dest / person / name).symlink_to(dev / person / name)
    return dest


def test_eval_probes_with_fused_frames_and_enrols_with_templates(
    tmp_path: Path, dev_faces: Path
) -> None:
    tree = link_tree(
        dev_faces,
        tmp_path / "tree",
        {"person_01": ["01.jpg", "02.jpg"], "person_03": ["01.jpg", "02.jpg"]},
    )
    out = tmp_path / "eval.json"
    cache = tmp_path / "enc.npz"
    args = ("faces", "eval", str(tree), "--frames", "2", "--encodings", str(cache))
    result = run_cli(*args, "--json", str(out), env={"KIOSK_VISION__ENROL_JITTERS": "4"})
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert (report["protocol"]["frames"], report["protocol"]["enrol_jitters"]) == (2, 4)
    counts = report["counts"]
    assert (counts["genuine"], counts["wrong_person"], counts["correct"]) == (2, 0, 2)
    # the probes' distances come from the fused frames, not from the photos themselves
    plain = tmp_path / "plain.json"
    assert run_cli("faces", "eval", str(tree), "--json", str(plain)).returncode == 0
    fused = sorted(p["distance"] for p in report["probes"])
    alone = sorted(p["distance"] for p in json.loads(plain.read_text())["probes"])
    assert fused != alone and all(abs(a - b) < 0.15 for a, b in zip(fused, alone, strict=True))
    again = run_cli(*args, "--json", str(out), env={"KIOSK_VISION__ENROL_JITTERS": "4"})
    assert again.returncode == 0, again.stderr
    assert sorted(p["distance"] for p in json.loads(out.read_text())["probes"]) == fused
    bad = run_cli("faces", "eval", str(tree), "--frames", "0")
    assert bad.returncode != 0 and "--frames" in bad.stderr


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
    result = run_cli(
        "enroll", "--consent", "test-1", "--roster", str(path), "--from-dir", str(tree)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "person_01  enrolled 2 of 2 photo(s); 2 template(s) in the roster",
        "person_03  enrolled 1 of 1 photo(s); 1 template(s) in the roster",
        "person_03  one photo: a second photo of this rider lets the kiosk recognise them more often without a claim code",
        "person_09  enrolled 1 of 1 photo(s); 1 template(s) in the roster",
        "person_09  one photo: a second photo of this rider lets the kiosk recognise them more often without a claim code",
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
        assert tables == {
            "riders", "data_keys", "meta", "rider_terms", "rider_fleet", "auto_set", "consents"
        }  # fmt: skip
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


def sideways(photo: Path, dest: Path, orientation: int) -> Path:
    """``photo`` stored as a phone stores a portrait: the pixels turned, and an EXIF
    orientation tag (6: turn 90 degrees clockwise to show it, 8: anticlockwise, 3: 180)."""
    turn = {
        6: cv2.ROTATE_90_COUNTERCLOCKWISE,
        8: cv2.ROTATE_90_CLOCKWISE,
        3: cv2.ROTATE_180,
    }[orientation]
    ok, jpeg = cv2.imencode(".jpg", cv2.rotate(cv2.imread(str(photo)), turn))
    assert ok
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # Orientation, SHORT, 1
    tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01" + entry + b"\x00\x00\x00\x00"
    app1 = b"Exif\x00\x00" + tiff
    data = jpeg.tobytes()
    dest.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    return dest


def test_phone_photos_stored_sideways_are_turned_upright(
    roster: Path, dev_faces: Path, tmp_path: Path
) -> None:
    turned = [
        sideways(dev_faces / "person_01" / "05.jpg", tmp_path / "a.jpg", 6),
        sideways(dev_faces / "person_03" / "02.jpg", tmp_path / "b.jpg", 8),
        sideways(dev_faces / "person_09" / "01.png", tmp_path / "c.jpg", 3),
    ]
    result = run_cli("faces", "identify", "--roster", str(roster), *map(str, turned))
    assert result.returncode == 0, result.stderr
    got = [
        (line["person_id"], line["reason"]) for line in map(json.loads, result.stdout.splitlines())
    ]
    assert got == [("person_01", "match"), ("person_03", "match"), ("person_09", "match")]

    # a rider enrolled from a sideways photo is recognised in an upright one
    fresh = tmp_path / "roster.sqlite"
    enrolled = run_cli(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(fresh),
        "--person-id",
        "person_06",
        "--name",
        "Sixth Person",
        str(sideways(dev_faces / "person_06" / "01.jpg", tmp_path / "d.jpg", 6)),
    )
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    upright = run_cli(
        "faces", "identify", "--roster", str(fresh), str(dev_faces / "person_06" / "02.jpg")
    )
    assert json.loads(upright.stdout)["person_id"] == "person_06", upright.stdout


def test_enrolling_the_same_photo_twice_is_refused(roster: Path, dev_faces: Path) -> None:
    result = run_cli(
        "enroll",
        "--consent",
        "test-1",
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
        "--consent",
        "test-1",
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
        "someone  refused  broken.jpg: truncated or corrupt JPEG header: its size cannot be read",
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
    result = run_cli("enroll", "--consent", "test-1", "--roster", str(tmp_path / "r.sqlite"), *args)
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
    assert report["protocol"]["policy"] == "CohortPolicy"
    assert report["protocol"]["threshold"] == 0.52  # the largest distance it ever accepts
    assert len(report["sweep"]) == 48
    assert "genuine probes 4:" in result.stdout
    assert all("encoding" not in probe for probe in report["probes"])


@pytest.fixture(scope="module")
def claim_roster(tmp_path_factory: pytest.TempPathFactory, dev_faces: Path) -> Path:
    """Three riders; person_16 set a claim code (4821) at enrolment."""
    base = tmp_path_factory.mktemp("claims")
    path = base / "roster.sqlite"
    tree = link_tree(dev_faces, base / "riders", {"person_01": ["01.jpg"], "person_09": ["01.png"]})
    assert (
        run_cli(
            "enroll", "--consent", "test-1", "--roster", str(path), "--from-dir", str(tree)
        ).returncode
        == 0
    )
    result = run_with_input(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(path),
        "--person-id",
        "person_16",
        "--claim",
        str(dev_faces / "person_16" / "01.png"),
        stdin="4821\n4821\n",
    )
    assert result.returncode == 0, result.stderr
    assert "4821" not in result.stdout + result.stderr
    return path


def test_identify_asks_for_a_claim_when_not_certain(claim_roster: Path, dev_faces: Path) -> None:
    images = [
        dev_faces / "person_16" / "01.png",  # the enrolment photo itself
        dev_faces / "person_16" / "02.jpg",  # the same rider, 0.52 away: not certain
        dev_faces / "person_06" / "01.jpg",  # never enrolled, far from everyone
    ]
    result = run_cli("faces", "identify", "--roster", str(claim_roster), *map(str, images))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(line) for line in lines] == [IDENTIFY_KEYS] * 3
    got = [(line["person_id"], line["reason"]) for line in lines]
    assert got == [("person_16", "match"), (None, "claim required"), (None, "unknown")]
    assert 0.5 <= lines[1]["distance"] < 0.61


def test_verify_is_the_claim_step_s_one_to_one_check(
    claim_roster: Path, dev_faces: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    images = [
        dev_faces / "person_16" / "02.jpg",  # what identify sent to the claim step
        dev_faces / "person_06" / "01.jpg",  # somebody else claiming to be person_16
        dev_faces / "_other" / "group_01.jpg",
        broken,
    ]
    args = ["faces", "verify", "--roster", str(claim_roster), "--person-id", "person_16"]
    result = run_cli(*args, *map(str, images))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(line) for line in lines] == [VERIFY_KEYS] * 4
    got = [(line["person_id"], line["accepted"], line["reason"]) for line in lines]
    assert got == [
        ("person_16", True, "match"),
        ("person_16", False, "no match"),
        ("person_16", False, "several faces"),
        ("person_16", False, "unreadable image"),
    ]
    assert lines[0]["distance"] == pytest.approx(0.522, abs=0.01)
    assert lines[1]["distance"] > 0.6 and lines[2]["distance"] is None
    missing = run_cli(
        "faces", "verify", "--roster", str(claim_roster), "--person-id", "nobody", str(images[0])
    )
    assert missing.returncode == 0
    assert json.loads(missing.stdout) == {
        "image": str(images[0]),
        "person_id": "nobody",
        "accepted": False,
        "distance": None,
        "reason": "not enrolled",
    }
    assert "nobody has no template" in missing.stderr


def test_a_typed_claim_verifies_the_face_against_its_holder(
    claim_roster: Path, dev_faces: Path
) -> None:
    store = open_roster(claim_roster, claim_roster.parent / "keys", "kiosk-dev")
    try:
        engine = FaceEngine()
        gallery = setup.gallery(store, engine.model_version)
        riders = store.load().riders
    finally:
        store.close()
    stored = riders["person_16"].claim_hash
    assert stored is not None and stored.startswith("scrypt$") and claim_matches("4821", stored)
    assert riders["person_01"].claim_hash is None
    claims = {person: rider.claim_hash for person, rider in riders.items()}
    policy = setup.claim_policy(VisionSection())
    observed = engine.observe(read_image(dev_faces / "person_16" / "02.jpg"))
    assert observed is not None
    got = check_claim(gallery, observed.encoding, "4821", claims, policy)
    assert (got.person_id, got.reason, got.holders) == ("person_16", "match", 1)
    lockout = ClaimLockout(max_tries=3)
    for attempt in range(3):
        wrong = check_claim(gallery, observed.encoding, "1234", claims, policy)
        assert (wrong.person_id, wrong.reason) == (None, CLAIM_NOT_RECOGNISED)
        assert lockout.failed(lock_key("1234"), float(attempt)) == (attempt == 2)
    # a stranger who knows the code is still refused: the face must verify too
    stranger = engine.observe(read_image(dev_faces / "person_06" / "01.jpg"))
    assert stranger is not None
    assert check_claim(gallery, stranger.encoding, "4821", claims, policy).person_id is None


def test_lookalikes_are_flagged_at_enrolment_and_always_confirm_a_claim(
    tmp_path: Path, dev_faces: Path
) -> None:
    roster = tmp_path / "roster.sqlite"
    first = run_cli(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(roster),
        "--person-id",
        "twin-a",
        str(dev_faces / "person_09" / "01.png"),
    )
    assert first.returncode == 0, first.stderr
    assert "lookalike of" not in first.stdout
    alone = run_cli(
        "faces", "identify", "--roster", str(roster), str(dev_faces / "person_09" / "02.png")
    )
    line = json.loads(alone.stdout)  # a roster of one: nobody else to beat, still decided
    assert (line["person_id"], line["reason"], line["margin"]) == ("twin-a", "match", None)
    second = run_cli(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(roster),
        "--person-id",
        "twin-b",
        str(dev_faces / "person_09" / "02.png"),
    )
    assert second.returncode == 0, second.stderr
    assert (
        "twin-b  lookalike of twin-a (templates 0.273 apart): both confirm a claim at the kiosk"
        in second.stdout
    )
    info = run_cli("roster", "info", "--roster", str(roster))
    assert info.returncode == 0, info.stderr
    assert re.search(r"lookalikes flagged\s+2", info.stdout)
    assert re.search(r"enrolled from one photo\s+2", info.stdout)
    as_json = run_cli("roster", "info", "--roster", str(roster), "--json")
    assert json.loads(as_json.stdout)["lookalikes_flagged"] == 2
    assert json.loads(as_json.stdout)["one_photo_riders"] == 2
    probe = dev_faces / "person_09" / "03.png"
    line = json.loads(run_cli("faces", "identify", "--roster", str(roster), str(probe)).stdout)
    assert (line["person_id"], line["reason"]) == (None, "claim required")
    assert line["distance"] < 0.45  # close enough to accept, but a lookalike is enrolled


def test_an_empty_roster_gives_a_reason_not_a_guess(tmp_path: Path, dev_faces: Path) -> None:
    roster = tmp_path / "r.sqlite"
    refused = run_cli(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(roster),
        "--person-id",
        "x",
        str(dev_faces / "_other" / "noface_01.jpg"),
    )
    assert refused.returncode == 4 and roster.exists()
    photo = str(dev_faces / "person_01" / "01.jpg")
    identify = json.loads(run_cli("faces", "identify", "--roster", str(roster), photo).stdout)
    assert (identify["person_id"], identify["reason"]) == (None, "empty roster")
    verify = run_cli("faces", "verify", "--roster", str(roster), "--person-id", "x", photo)
    assert json.loads(verify.stdout)["reason"] == "empty roster"


def test_a_claim_must_be_four_to_six_digits(tmp_path: Path, dev_faces: Path) -> None:
    result = run_with_input(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(tmp_path / "r.sqlite"),
        "--person-id",
        "ann",
        "--claim",
        str(dev_faces / "person_01" / "01.jpg"),
        stdin="12\n12\n",
    )
    assert result.returncode == 4
    assert "--claim: a claim is 4 to 6 digits" in result.stderr


@pytest.fixture(scope="module")
def open_set_tree(tmp_path_factory: pytest.TempPathFactory, dev_faces: Path) -> tuple[Path, Path]:
    """Seven dev people with all their photos and two with one photo (unknowns), and the
    file their encodings are cached in (shared by the open-set tests of this module)."""
    folder = tmp_path_factory.mktemp("open-set")
    people = {f"person_{n:02d}": None for n in (1, 3, 6, 9, 11, 14, 16)}
    tree = link_tree(
        dev_faces,
        folder / "tree",
        {p: sorted(f.name for f in (dev_faces / p).iterdir()) for p in people}
        | {"person_12": ["01.png"], "person_13": ["01.png"]},  # single photos: unknowns
    )
    return tree, folder / "encodings.npz"


def test_open_set_eval_calibrates_on_one_half_and_reports_the_other(
    tmp_path: Path, open_set_tree: tuple[Path, Path]
) -> None:
    tree, cache = open_set_tree
    out = tmp_path / "open.json"
    points = tmp_path / "points.json"
    args = ["faces", "eval", str(tree), "--protocol", "open-set", "--encodings", str(cache)]
    result = run_cli(
        *args,
        "--calibrate-half",
        "A",
        "--sizes",
        "2,50",
        "--draws",
        "2",
        "--json",
        str(out),
        "--write-points",
        str(points),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["protocol"]["half"] == "B" and report["protocol"]["calibrated_on"]["half"] == "A"
    whole, two, fifty = report["rosters"]
    assert whole["whole_gallery"] and whole["wrong_person"] == 0
    assert whole["correct"] + whole["missed"] + whole["wrong_person"] == whole["genuine"]
    assert (two["people"], two["draws"]) == (2, 2)
    assert fifty == {"people": 50, "skipped": f"the gallery holds {whole['people']} people"}
    assert set(report["claim"]) >= {"genuine_accepted", "impostor_attempts", "false_accepts"}
    assert report["claim"]["to_serve"]["share"] == 0.95 and "to serve 95% of all" in result.stdout
    assert set(json.loads(points.read_text())) == {"format", "identify", "verify"}
    assert all("encoding" not in probe for probe in report["probes"])
    assert "open set, half B, calibrated on half A" in result.stdout
    # the live path's figures, on the same half with the same points, beside the offline ones
    live = report["live"]
    assert (live["camera"], live["detect_width"]) == ([640, 480], 320)
    live_whole = live["rosters"][0]
    assert (live_whole["people"], live_whole["genuine"]) == (whole["people"], whole["genuine"])
    assert live_whole["wrong_person"] == 0 and live_whole["correct"] >= whole["correct"] - 2
    assert "live path (640x480 camera frame" in result.stdout
    # the same photos again, measured with the written points: encodings come from the cache
    again = run_cli(*args, "--half", "A", "--points", str(points), "--sizes", "2")
    assert again.returncode == 0, again.stderr
    assert "encoded in 0." in again.stdout
    wrong = run_cli(*args, "--probe", str(tree))
    assert wrong.returncode == 4 and "uses one tree" in wrong.stderr


def test_cross_validation_repeats_the_calibration_over_several_splits(
    tmp_path: Path, open_set_tree: tuple[Path, Path]
) -> None:
    tree, cache = open_set_tree
    args = ["faces", "eval", str(tree), "--protocol", "open-set", "--encodings", str(cache)]
    out, single = tmp_path / "cv.json", tmp_path / "single.json"
    result = run_cli(
        *args, "--cross-validate", "2", "--sizes", "2", "--threshold", "0.5", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "cross-validated: 4 folds (split seeds 10-11" in result.stdout
    report = json.loads(out.read_text())
    folds = report["folds"]
    assert [(f["split_seed"], f["calibrated_on"], f["measured"]) for f in folds] == [
        (10, "A", "B"),
        (10, "B", "A"),
        (11, "A", "B"),
        (11, "B", "A"),
    ]
    # the first fold is exactly what --calibrate-half A reports for split seed 10
    check = run_cli(*args, "--calibrate-half", "A", "--sizes", "2", "--json", str(single))
    assert check.returncode == 0, check.stderr
    once = json.loads(single.read_text())["rosters"][0]
    first = folds[0]["rosters"][0]
    assert {k: first[k] for k in ("genuine", "correct", "wrong_person", "unknown_accepted")} == {
        k: once[k] for k in ("genuine", "correct", "wrong_person", "unknown_accepted")
    }
    # the pooled rows are the sums of the folds that count, for the points and the baseline
    for pooled, key in (("pooled", "rosters"), ("pooled_baseline", "baseline")):
        for row in report[pooled]:
            if row["people"] == "whole half":
                parts = [f[key][0] for f in folds if not f[key][0]["beyond"]]
            else:
                parts = [r for f in folds for r in f[key][1:] if r["people"] == row["people"]]
            assert row["folds"] == len(parts)
            for count in ("genuine", "correct", "wrong_person", "unknown", "unknown_accepted"):
                assert row[count] == sum(p[count] for p in parts)
    assert report["protocol"]["baseline"] == {"threshold": 0.5, "margin": 0.08}
    live = report["live"]  # the live path, cross-validated the same way
    assert [r["genuine"] for r in live["pooled"]] == [r["genuine"] for r in report["pooled"]]
    assert all(r["wrong_person"] == 0 for r in live["pooled"])
    assert "cross-validated the same way" in result.stdout
    assert "baseline (threshold 0.5, margin 0.08)" in result.stdout
    assert report["claim"]["genuine_attempts"] == sum(f["claim"]["genuine_attempts"] for f in folds)
    for fold in folds:  # a measured half larger than the calibrated one asks for claims only
        whole = fold["rosters"][0]
        assert whole["beyond"] == (whole["people"] > fold["calibrated_people"])
        if whole["beyond"]:
            assert whole["correct"] == whole["wrong_person"] == whole["unknown_accepted"] == 0
    assert "encoding" not in out.read_text()
    mixed = run_cli(*args, "--cross-validate", "2", "--half", "A")
    assert mixed.returncode == 4 and "--cross-validate calibrates each fold itself" in mixed.stderr
    budget = run_cli(*args, "--unknown-budget", "0.02")
    assert budget.returncode == 4 and "--unknown-budget applies to" in budget.stderr
    folders = run_cli("faces", "eval", str(tree), "--cross-validate", "2")
    assert folders.returncode == 4 and "need --protocol open-set" in folders.stderr


def test_the_shipped_operating_points_are_the_documented_ones() -> None:
    points = load_operating_points()
    assert points["format"] == "kiosk-operating-points/1"
    assert points["identify"]["calibration"]["wrong_budget"] == 0.0
    assert points["identify"]["calibration"]["unknown_budget"] == 0.01
    # up to the 410 people of lfw-dev's half A, the calibration half
    sizes = [p["people"] for p in points["identify"]["points"]]
    assert sizes == [10, 25, 50, 100, 200, 300, 400, 410]


def test_a_rider_enrolled_from_several_photos_is_identified_by_their_mean(
    tmp_path: Path, dev_faces: Path
) -> None:
    roster = tmp_path / "roster.sqlite"
    photos = [dev_faces / "person_03" / name for name in ("01.jpg", "02.jpg", "03.jpg")]
    enrolled = run_cli(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(roster),
        "--person-id",
        "person_03",
        *map(str, photos),
    )
    assert enrolled.returncode == 0, enrolled.stderr
    probe = dev_faces / "person_03" / "04.jpg"
    engine = FaceEngine()
    encodings = []
    for path in [*photos, probe]:
        observed = engine.observe(read_image(path))
        assert observed is not None
        encodings.append(observed.encoding)
    centre = np.mean(encodings[:3], axis=0)
    nearest_photo = min(float(np.linalg.norm(e - encodings[3])) for e in encodings[:3])

    def identified(fuse: str) -> dict[str, Any]:
        env = {"KIOSK_VISION__FUSE_TEMPLATES": fuse}
        result = run_cli("faces", "identify", "--roster", str(roster), str(probe), env=env)
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    fused, apart = identified("true"), identified("false")
    assert fused["person_id"] == "person_03"
    assert fused["distance"] == pytest.approx(np.linalg.norm(centre - encodings[3]), abs=1e-3)
    assert apart["distance"] == pytest.approx(nearest_photo, abs=1e-3)
    assert fused["distance"] < apart["distance"]


def test_eval_reports_the_live_path_beside_the_offline_one(tmp_path: Path, dev_faces: Path) -> None:
    # person_05/03.jpg: matched offline; in a 640x480 camera frame the live detection width
    # (320 px) scores it under the minimum unless the live search judges it as offline
    tree = link_tree(
        dev_faces,
        tmp_path / "tree",
        {"person_05": ["01.jpg", "02.jpg", "03.jpg"], "person_01": ["01.jpg", "02.jpg"]},
    )
    out = tmp_path / "eval.json"
    result = run_cli("faces", "eval", str(tree), "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    live = report["live"]
    assert (live["camera"], live["detect_width"]) == ([640, 480], 320)
    assert "live path (640x480 camera frame" in result.stdout
    offline = {Path(p["image"]).relative_to(tree).as_posix(): p for p in report["probes"]}
    seen_live = {Path(p["image"]).relative_to(tree).as_posix(): p for p in live["probes"]}
    assert offline["person_05/03.jpg"]["person_id"] == "person_05"
    assert seen_live["person_05/03.jpg"]["person_id"] == "person_05"
    assert live["counts"]["missed_reasons"].get("no face", 0) == 0
    assert live["counts"]["wrong_person"] == 0
    assert all("encoding" not in probe for probe in live["probes"])


def test_eval_probes_with_photos_degraded_as_a_kiosk_camera_gives_them(
    tmp_path: Path, dev_faces: Path
) -> None:
    # in a dim, noisy, compressed 640x480 frame the probes' faces are 50-80 px: two riders
    # recognised from their clean enrolment photo, a stranger (person_09) refused
    tree = link_tree(
        dev_faces,
        tmp_path / "tree",
        {
            "person_02": ["01.jpg", "02.jpg"],
            "person_03": ["01.jpg", "02.jpg"],
            "person_09": ["01.png"],
        },
    )
    out = tmp_path / "eval.json"
    result = run_cli("faces", "eval", str(tree), "--degrade", "kiosk", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["protocol"]["degrade"] == report["live"]["degrade"] == "kiosk50-80g1.4n4.0q55"
    for probes in (report["probes"], report["live"]["probes"]):
        decided = {Path(p["image"]).relative_to(tree).as_posix(): p["person_id"] for p in probes}
        assert decided == {
            "person_02/02.jpg": "person_02",
            "person_03/02.jpg": "person_03",
            "person_09/01.png": None,
        }
    refused = run_cli("faces", "eval", str(tree), "--degrade", "kiosk", "--frames", "3")
    assert refused.returncode == 4 and "--degrade and --frames" in refused.stderr


def test_an_enrolment_into_the_kiosk_s_own_roster_records_one_edit_with_what_it_did(
    tmp_path: Path, dev_faces: Path
) -> None:
    """One ``roster.edited`` per ``kiosk enroll``, counting the riders saved (not the one
    whose every photo was refused), at the version the roster reached."""
    tree = link_tree(
        dev_faces, tmp_path / "riders", {"person_01": ["01.jpg"], "person_03": ["01.jpg"]}
    )
    (tree / "person_99").mkdir()
    (tree / "person_99" / "group.jpg").symlink_to(dev_faces / "_other" / "group_01.jpg")
    env = {"KIOSK_KIOSK__STATE_DIR": str(tmp_path / "state")}
    own = tmp_path / "state" / "roster.sqlite"
    result = run_cli(
        "enroll", "--consent", "test-1", "--roster", str(own), "--from-dir", str(tree), env=env
    )
    assert result.returncode == 4, result.stderr  # person_99: every photo refused
    assert f"roster {own}: 2 rider(s), version 2" in result.stdout
    with sqlite3.connect(tmp_path / "state" / "outbox.sqlite") as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM events ORDER BY seq")]
    edits = [e["payload"] for e in bodies if e["type"] == "roster.edited"]
    assert [(e["action"], e["riders"], e["roster_version"]) for e in edits] == [("enrol", 2, 2)]
