"""``kiosk roster verify`` names the rider and the kind of damage of every damaged row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.helpers import run_cli
from tests.vault_helpers import open_store, record

RIDERS = ["ok-1", "nonce", "cipher", "keyid", "version", "renamed", "nulls", "types", "short"]


def make_roster(folder: Path) -> Path:
    store = open_store(folder)
    for index, person in enumerate(RIDERS):
        store.enrol(person, record(f"Name {index}", index))
    store.close()
    return folder / "roster.sqlite"


def damage(roster: Path) -> None:
    with sqlite3.connect(roster) as db:
        # a copy of the table without NOT NULL, so a NULL can be stored as a hand edit would
        db.executescript(
            """
            CREATE TABLE loose (person_id TEXT PRIMARY KEY, version INTEGER, key_id TEXT,
                                models TEXT, sealed BLOB);
            INSERT INTO loose SELECT person_id, version, key_id, models, sealed FROM riders;
            DROP TABLE riders;
            ALTER TABLE loose RENAME TO riders;
            """
        )

        def sealed(person: str) -> bytes:
            row = db.execute("SELECT sealed FROM riders WHERE person_id = ?", (person,))
            return bytes(row.fetchone()[0])

        def flip(blob: bytes, at: int) -> bytes:
            return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]

        update = "UPDATE riders SET {} WHERE person_id = ?"
        db.execute(update.format("sealed = ?"), (flip(sealed("nonce"), 3), "nonce"))
        db.execute(update.format("sealed = ?"), (flip(sealed("cipher"), 40), "cipher"))
        db.execute(update.format("key_id = 'k-forged'"), ("keyid",))
        db.execute(update.format("version = version + 1"), ("version",))
        db.execute(update.format("person_id = 'renamed-2'"), ("renamed",))
        db.execute(update.format("sealed = NULL"), ("nulls",))
        db.execute(update.format("version = 'two'"), ("types",))
        db.execute(update.format("sealed = ?"), (sealed("short")[:10], "short"))


def test_every_damaged_row_is_named_with_its_kind(tmp_path: Path) -> None:
    roster = make_roster(tmp_path)
    damage(roster)
    before = roster.read_bytes()
    result = run_cli("roster", "verify", "--roster", str(roster))
    assert result.returncode == 7, result.stderr
    lines = result.stderr.splitlines()
    expected = {
        "nonce": "fails authentication",
        "cipher": "fails authentication",
        "keyid": "key_id changed",
        "version": "version changed",
        "renamed-2": "fails authentication",
        "nulls": "null value",
        "types": "wrong type",
        "short": "truncated",
    }
    for person, kind in expected.items():
        assert any(f"rider {person}: {kind}" in line for line in lines), (person, lines)
    assert "rider keyid: key_id changed: the row says key_id k-forged" in result.stderr
    assert "rider version: version changed: the row says version 2" in result.stderr
    assert not any("rider ok-1" in line for line in lines)
    assert lines[-1].endswith("8 of 9 rider row(s) damaged")
    assert roster.read_bytes() == before  # verify writes nothing


def test_a_missing_column_names_every_rider(tmp_path: Path) -> None:
    roster = make_roster(tmp_path)
    with sqlite3.connect(roster) as db:
        db.execute("ALTER TABLE riders DROP COLUMN models")
    result = run_cli("roster", "verify", "--roster", str(roster))
    assert result.returncode == 7
    for person in RIDERS:
        assert f"rider {person}: missing column: no models column" in result.stderr


def test_a_key_id_no_key_fits_is_named_as_unknown(tmp_path: Path) -> None:
    roster = make_roster(tmp_path)
    with sqlite3.connect(roster) as db:
        (held,) = db.execute("SELECT key_id FROM data_keys").fetchone()
        db.execute("DELETE FROM data_keys WHERE key_id = ?", (held,))
        db.execute("UPDATE riders SET key_id = 'k-other' WHERE person_id = 'keyid'")
    result = run_cli("roster", "verify", "--roster", str(roster))
    assert result.returncode == 7
    assert "rider keyid: unknown data key: key_id k-other" in result.stderr
