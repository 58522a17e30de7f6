"""The roster as an operator and a technician type it: ``kiosk-cloud keys | riders | roster``
and ``kiosk roster pull`` / ``kiosk sync status``, as subprocesses against a real API."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

from models.hints import ONE_PHOTO_HINT
from tests.helpers import CONSENT_ARGS, consent_text, run_cli
from tests.integration.sync.cloudkit import start_cloud
from tests.vault_helpers import MODEL, template


def cloud_cli(*args: str, db: str) -> tuple[int, str, str]:
    result = run_cli(*args, "--database-url", db, program="kiosk-cloud")
    return result.returncode, result.stdout, result.stderr


def test_a_rider_travels_from_the_operator_to_the_kiosk_and_away(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    code, pinned, err = cloud_cli("keys", "init", db=db)
    assert code == 0, err
    assert "created" in err and len(pinned.strip()) == 44
    for name in ("roster-ed25519.pem", "roster-data.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600

    cloud = start_cloud(db)
    state = tmp_path / "kiosk"
    env = {
        "KIOSK_KIOSK__ID": "kiosk-cli",
        "KIOSK_KIOSK__STATE_DIR": str(state),
        "KIOSK_SYNC__CLOUD_URL": cloud.url,
        "KIOSK_ROSTER__CLOUD_ROSTER_KEY": pinned.strip(),
    }
    try:
        signing = run_cli("sync", "key", env=env).stdout.strip()
        box = run_cli("sync", "key", "--box", env=env).stdout.strip()
        assert (state / "keys" / "kiosk-x25519.pem").is_file()
        code, out, err = cloud_cli(
            "register-kiosk", "kiosk-cli", "--public-key", signing, "--box-public-key", box, db=db
        )
        assert code == 0, err
        templates = tmp_path / "ann.json"
        templates.write_text(json.dumps([template(1).tolist(), template(2).tolist()]))
        assert cloud_cli(*consent_text(tmp_path), db=db)[0] == 0
        code, out, err = cloud_cli(
            "riders", "add", "--person-id", "ann", "--name", "Ann Q", "--max-open", "2",
            "--templates", str(templates), *CONSENT_ARGS, db=db,
        )  # fmt: skip
        assert (code, out.strip()) == (0, "added ann with 2 template(s); roster version 1"), err

        pulled = run_cli("roster", "pull", env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout.strip() == (
            "roster version 0 -> 1 (full snapshot): 1 rider(s) added or changed, 0 removed"
        )
        code, out, err = cloud_cli("riders", "list", db=db)
        listed = json.loads(out)
        assert (listed["person_id"], listed["display_name"], listed["max_open_rentals"]) == (
            "ann",
            "Ann Q",
            2,
        )
        assert listed["templates"] == {MODEL: 2} and "vector" not in out

        # Rotate the data key from another process while the API runs, then delete.
        code, out, err = cloud_cli("roster", "rotate-key", db=db)
        assert code == 0 and out.startswith("1 rider(s) re-sealed under data key"), err
        new_key = out.split()[6].rstrip(";")
        assert cloud_cli("riders", "delete", "ann", db=db)[0] == 0
        pulled = run_cli("roster", "pull", "--json", env=env)
        assert pulled.returncode == 0, pulled.stderr
        result = json.loads(pulled.stdout)
        assert (result["full"], result["to_version"], result["upserts"]) == (True, 3, 0)
        with sqlite3.connect(state / "roster.sqlite") as roster:
            assert roster.execute("SELECT key_id FROM data_keys").fetchall() == [(new_key,)]
            assert roster.execute("SELECT COUNT(*) FROM riders").fetchone() == (0,)
    finally:
        cloud.stop()

    # The cloud is gone: the pull fails plainly, the roster stays, the status says why.
    failed = run_cli("roster", "pull", env=env)
    assert failed.returncode == 7 and "cannot connect" in failed.stderr
    status = json.loads(run_cli("sync", "status", "--json", env=env).stdout)
    assert status["roster"]["version"] == 3 and "cannot connect" in status["roster"]["last_error"]
    assert any(problem.startswith("roster pull:") for problem in status["problems"])


def test_riders_add_encodes_photos_here_and_refuses_unusable_ones(
    tmp_path: Path, dev_faces: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    photos = [dev_faces / "person_01" / "04.jpg", dev_faces / "_other" / "noface_01.jpg"]
    assert cloud_cli(*consent_text(tmp_path), db=db)[0] == 0
    code, out, err = cloud_cli(
        "riders", "add", "--person-id", "person_01", "--no-rent", *map(str, photos), *CONSENT_ARGS,
        db=db,
    )  # fmt: skip
    assert code == 0, err
    assert "person_01  refused  noface_01.jpg: no face found" in err
    assert out.splitlines() == [
        "added person_01 with 1 template(s); roster version 1",
        f"person_01: {ONE_PHOTO_HINT}",
    ]
    listed = json.loads(cloud_cli("riders", "list", db=db)[1])
    assert (listed["may_rent"], listed["templates"]) == (False, {MODEL: 1})
    code, out, err = cloud_cli(
        "riders", "add", "--person-id", "nobody", str(photos[1]), *CONSENT_ARGS, db=db
    )
    assert code == 4 and "no usable photo" in err


def test_reading_the_roster_creates_no_database_and_no_keys(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    for args in (("roster", "info"), ("riders", "list")):
        code, _, err = cloud_cli(*args, db=db)
        assert code != 0 and "no cloud database here" in err and "kiosk-cloud migrate" in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == []
    sqlite3.connect(tmp_path / "cloud.sqlite").close()  # a database, but no key files yet
    for args in (("roster", "info"), ("riders", "list")):
        code, _, err = cloud_cli(*args, db=db)
        assert code != 0 and "keys init" in err, err
        assert not (tmp_path / "roster-ed25519.pem").exists()
        assert not (tmp_path / "roster-data.key").exists()
    assert cloud_cli("keys", "init", db=db)[0] == 0
    code, out, err = cloud_cli("roster", "info", db=db)
    assert code == 0 and json.loads(out)["version"] == 0, err
