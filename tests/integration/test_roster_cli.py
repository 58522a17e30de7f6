"""``kiosk roster`` on a real encrypted roster file."""

from __future__ import annotations

import json
from pathlib import Path

from edge.vision.policy import load_operating_points
from tests.helpers import run_cli
from tests.vault_helpers import open_store, record


def make_roster(folder: Path) -> Path:
    store = open_store(folder)
    store.enrol("rider-a", record("Asha", 1))
    store.enrol("rider-b", record("Bo", 2))
    store.close()
    return folder / "roster.sqlite"


def test_info_reports_counts_without_personal_data(tmp_path: Path) -> None:
    roster = make_roster(tmp_path)
    result = run_cli("roster", "info", "--roster", str(roster), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["riders"] == 2
    assert info["version"] == 2
    assert info["source"] == "local"
    assert info["templates_by_model"] == {"dlib_resnet_v1": 2}
    assert info["too_old"] is False
    assert "Asha" not in result.stdout
    table = run_cli("roster", "info", "--roster", str(roster))
    assert "riders" in table.stdout and "dlib_resnet_v1: 2" in table.stdout


def small_points(folder: Path, people: int) -> Path:
    """The shipped operating points, cut to rosters of at most ``people``."""
    points = load_operating_points()
    points["identify"]["points"] = [{"people": people, "threshold": 2.0}]
    path = folder / "points.json"
    path.write_text(json.dumps(points), encoding="utf-8")
    return path


def test_info_says_when_every_rider_must_confirm_a_claim(tmp_path: Path) -> None:
    roster = make_roster(tmp_path)  # two riders
    shipped = json.loads(run_cli("roster", "info", "--roster", str(roster), "--json").stdout)
    assert shipped["automatic_up_to"] == 410 and shipped["claim_for_everyone"] is False
    env = {"KIOSK_VISION__OPERATING_POINTS": str(small_points(tmp_path, 1))}
    result = run_cli("roster", "info", "--roster", str(roster), "--json", env=env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["automatic_up_to"] == 1 and info["claim_for_everyone"] is True
    table = run_cli("roster", "info", "--roster", str(roster), env=env | {"COLUMNS": "200"})
    assert "2 riders, more than the 1 the face policy is calibrated for" in table.stdout
    assert "every rider confirms a claim" in table.stdout
    plain = {"KIOSK_VISION__POLICY": "threshold"}
    threshold = json.loads(
        run_cli("roster", "info", "--roster", str(roster), "--json", env=plain).stdout
    )
    assert threshold["automatic_up_to"] is None and threshold["claim_for_everyone"] is False


def test_verify_and_delete(tmp_path: Path) -> None:
    roster = make_roster(tmp_path)
    assert (
        run_cli("roster", "verify", "--roster", str(roster))
        .stdout.strip()
        .endswith("2 rider(s) verified, version 2")
    )
    deleted = run_cli("roster", "delete", "rider-a", "--roster", str(roster))
    assert deleted.returncode == 0, deleted.stderr
    again = run_cli("roster", "delete", "rider-a", "--roster", str(roster))
    assert again.returncode == 2
    assert "no rider 'rider-a'" in again.stderr
    assert (
        json.loads(run_cli("roster", "info", "--roster", str(roster), "--json").stdout)["riders"]
        == 1
    )


def test_tampered_row_fails_verify(tmp_path: Path) -> None:
    import sqlite3

    roster = make_roster(tmp_path)
    with sqlite3.connect(roster) as db:
        (sealed,) = db.execute("SELECT sealed FROM riders WHERE person_id = 'rider-b'").fetchone()
        flipped = bytes([sealed[0], *sealed[1:20], sealed[20] ^ 1, *sealed[21:]])
        db.execute("UPDATE riders SET sealed = ? WHERE person_id = 'rider-b'", (flipped,))
    result = run_cli("roster", "verify", "--roster", str(roster))
    assert result.returncode == 7
    assert "rider rider-b: fails authentication" in result.stderr


def test_loose_key_permissions_refuse_to_start(tmp_path: Path) -> None:
    roster = make_roster(tmp_path)
    (tmp_path / "keys" / "kiosk-x25519.pem").chmod(0o640)
    result = run_cli("roster", "info", "--roster", str(roster))
    assert result.returncode == 7
    assert result.stderr.strip() == (
        f"kiosk: error: {tmp_path / 'keys' / 'kiosk-x25519.pem'}: key file is readable by others (mode 640); "
        f"run chmod 600 {tmp_path / 'keys' / 'kiosk-x25519.pem'}"
    )


def test_rotate_key(tmp_path: Path) -> None:
    roster = make_roster(tmp_path)
    before = json.loads(run_cli("roster", "info", "--roster", str(roster), "--json").stdout)[
        "data_key_id"
    ]
    result = run_cli("roster", "rotate-key", "--roster", str(roster))
    assert result.returncode == 0, result.stderr
    after = json.loads(run_cli("roster", "info", "--roster", str(roster), "--json").stdout)
    assert after["data_key_id"] != before
    assert after["riders"] == 2


def test_hand_edits_of_the_kiosk_s_own_roster_are_recorded_with_the_operator(
    tmp_path: Path,
) -> None:
    import pwd
    import sqlite3

    make_roster(tmp_path)  # the kiosk's own roster: <state_dir>/roster.sqlite, keys beside
    env = {"KIOSK_KIOSK__STATE_DIR": str(tmp_path)}
    assert run_cli("roster", "delete", "rider-a", env=env).returncode == 0
    assert run_cli("roster", "rotate-key", env=env).returncode == 0
    elsewhere = make_roster(tmp_path / "elsewhere")  # a roster file that is not the kiosk's
    assert (
        run_cli("roster", "delete", "rider-b", "--roster", str(elsewhere), env=env).returncode == 0
    )
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM events ORDER BY seq")]
    edits = [e["payload"] for e in bodies if e["type"] == "roster.edited"]
    me = pwd.getpwuid(__import__("os").getuid()).pw_name
    assert [(e["action"], e["riders"], e["operator"]) for e in edits] == [
        ("delete", 1, me),
        ("rotate_key", 1, me),
    ]
    assert "Asha" not in json.dumps(bodies) and "Bo" not in json.dumps(bodies)


def test_changing_a_roster_that_is_not_there_says_so_and_makes_nothing(tmp_path: Path) -> None:
    """A mistyped --roster for delete, rotate-key or erase-pending: one line naming what
    makes a roster, exit 4, and no empty roster or new keys left behind."""
    missing = tmp_path / "nowhere" / "roster.sqlite"
    missing.parent.mkdir()
    for command in (("delete", "bob"), ("rotate-key",), ("erase-pending",)):
        result = run_cli("roster", *command, "--roster", str(missing))
        assert result.returncode == 4, (command, result.stderr)
        assert result.stderr.strip() == (
            f"kiosk: error: {missing}: no roster here (enrol riders with `kiosk enroll`, or "
            "pull the cloud's roster with `kiosk roster pull`)"
        )
    assert list(missing.parent.iterdir()) == []
