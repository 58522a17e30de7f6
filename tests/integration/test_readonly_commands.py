"""Commands that only read create nothing: no key, no roster, no outbox, no slot database.

Each runs against missing, empty or keyless state in ``tmp_path``; the folder's listing
(names and contents) must be the same afterwards, and a missing piece is one line naming
the command that makes it, exit code 4.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.vault_helpers import open_store, record


def listing(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        )
        for path in sorted(root.rglob("*"))
    }


READERS = [
    (("roster", "info"), 4, "no roster here (enrol riders with `kiosk enroll`"),
    (("roster", "verify"), 4, "no roster here"),
    (("slots", "--cached"), 4, "no slot state recorded yet (`kiosk slots` asks the board"),
    (("sync", "status"), 4, "no outbox yet (nothing was recorded here; `kiosk run` makes it)"),
    (("events", "tail"), 4, "no outbox yet"),
    (("status", "--json"), 0, ""),
    (("doctor", "--skip", "cloud", "--skip", "units", "--skip", "board"), 9, ""),
    (("config", "show"), 0, ""),
]


@pytest.mark.parametrize(("words", "code", "says"), READERS, ids=[" ".join(r[0]) for r in READERS])
def test_a_reader_on_missing_state_creates_nothing(
    tmp_path: Path, words: tuple[str, ...], code: int, says: str
) -> None:
    state = tmp_path / "state"
    env = {"KIOSK_KIOSK__STATE_DIR": str(state)}
    result = run_cli(*words, env=env, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert says in result.stderr
    assert listing(tmp_path) == {}


def kiosk_state(folder: Path) -> Path:
    """A kiosk's state as `kiosk run` leaves it: roster, keys, outbox, slot database."""
    from cloud_sync.outbox import Outbox
    from edge.cabinet.slots import Inventory

    store = open_store(folder)
    store.enrol("rider-a", record("Asha", 1))
    store.close()
    outbox = Outbox(folder / "outbox.sqlite", "kiosk-1")
    outbox.append("kiosk.started", version="1", mode="rental")
    Inventory(folder / "slots.db", 4).close()
    outbox.close()
    return folder


def test_readers_on_a_kiosk_s_state_change_nothing(tmp_path: Path) -> None:
    state = kiosk_state(tmp_path / "state")
    before = listing(tmp_path)
    env = {"KIOSK_KIOSK__STATE_DIR": str(state), "KIOSK_KIOSK__ID": "kiosk-1"}
    for words in (
        ("roster", "info"),
        ("roster", "verify"),
        ("slots", "--cached", "--json"),
        ("sync", "status"),
        ("events", "tail"),
        ("status",),
    ):
        result = run_cli(*words, env=env, cwd=tmp_path)
        assert result.returncode == 0, (words, result.stderr)
        assert listing(tmp_path) == before, words


def test_identify_refuses_an_empty_file_and_makes_no_key(tmp_path: Path) -> None:
    empty = tmp_path / "roster.sqlite"
    empty.touch()
    photo = tmp_path / "nothing.png"
    result = run_cli("faces", "identify", "--roster", str(empty), str(photo), cwd=tmp_path)
    assert result.returncode == 7
    assert "not a roster (an empty file" in result.stderr
    assert listing(tmp_path) == {"roster.sqlite": hashlib.sha256(b"").hexdigest()}


def test_a_roster_copied_without_its_keys_is_named_and_gets_no_new_keys(tmp_path: Path) -> None:
    source = kiosk_state(tmp_path / "kiosk")
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(source / "roster.sqlite", copy / "roster.sqlite")
    photo = tmp_path / "nothing.png"
    for words in (
        ("faces", "identify", "--roster", str(copy / "roster.sqlite"), str(photo)),
        ("roster", "info", "--roster", str(copy / "roster.sqlite")),
    ):
        result = run_cli(*words, cwd=tmp_path)
        assert result.returncode == 4, result.stderr
        assert "is sealed for a kiosk key that is not here" in result.stderr
        assert sorted(p.name for p in copy.iterdir()) == ["roster.sqlite"]
        assert not (tmp_path / "keys").exists()
    # a command that writes refuses too, rather than making keys it cannot use
    enrol = run_cli(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(copy / "roster.sqlite"),
        "--person-id",
        "b",
        str(photo),
    )
    assert enrol.returncode == 4 and "sealed for a kiosk key that is not here" in enrol.stderr
    assert sorted(p.name for p in copy.iterdir()) == ["roster.sqlite"]
