"""A careless technician: state files that are not what they should be, bad settings, bad
arguments. Every case is one line naming the file or value and the fix, a documented exit
code (never 1, "unexpected error"), and nothing written or lost.

The commands run in this process (``run_app``), many small cases per test, to stay fast.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from edge.cli.main import app
from edge.cli.runner import run_app
from tests.helpers import REPO

pytestmark = pytest.mark.timeout(120)

STATE_FILES = ("roster.sqlite", "outbox.sqlite", "slots.db")


def kiosk(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_app(app, "kiosk", ["--log-format", "json", *args])
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if line.strip() and not line.startswith("{")]
    return code, out, "\n".join(said)  # what the person is told, without the JSON log lines


def listing(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        )
        for path in sorted(root.rglob("*"))
    }


def spoil(path: Path, kind: str) -> None:
    if kind == "empty":
        path.touch()
    elif kind == "garbage":
        path.write_bytes(b"\x8b\x00not sqlite at all\xff" * 300)
    elif kind == "truncated":  # the first page of a real database, the rest cut off
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE t (x)")
        db.executemany("INSERT INTO t VALUES (?)", [(os.urandom(500),) for _ in range(50)])
        db.commit()
        db.close()
        path.write_bytes(path.read_bytes()[:1500])
    else:  # another kind of database
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE foo (x)")
        db.commit()
        db.close()


READERS = (
    ("roster", "info"),
    ("roster", "verify"),
    ("slots", "--cached"),
    ("sync", "status"),
    ("events", "tail"),
    ("events", "export"),
)


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated", "other"])
def test_readers_name_a_state_file_that_is_not_theirs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for name in STATE_FILES:
        spoil(state / name, kind)
    (state / "keys").mkdir()
    monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(state))
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    for words in READERS:
        code, _, err = kiosk(capsys, *words)
        assert code == 7, (words, err)
        assert "unexpected" not in err and err.startswith("kiosk: error: "), (words, err)
        assert str(state) in err and "not a" in err, (words, err)
        assert listing(tmp_path) == before, words
    code, out, err = kiosk(capsys, "status", "--json")
    assert "unexpected" not in err and code in (0, 9), err
    assert '"ok": false' in out.replace('":false', '": false')
    assert listing(tmp_path) == before
    photo = tmp_path / "nobody.png"
    code, _, err = kiosk(
        capsys, "faces", "identify", "--roster", str(state / "roster.sqlite"), str(photo)
    )
    assert code == 7 and "not a roster" in err, err
    assert listing(tmp_path) == before


def test_bad_settings_are_exit_3_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    for name, value, says in (
        ("KIOSK_BOARD", "not json", "KIOSK_<SECTION>__<FIELD>"),
        ("KIOSK_BOARD__SLOTS", "abc", "board.slots"),
        ("KIOSK_BOARD__TIMEOUT_S", "nan", "board.timeout_s"),
        ("KIOSK_KIOSK__ID", "a/b", "kiosk.id"),
    ):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            code, _, err = kiosk(capsys, "status")
        assert code == 3 and says in err and "unexpected" not in err, (name, err)
    settings = tmp_path / "kiosk.toml"
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block forever
    for path, text, says in (
        (settings, "kiosk = 5\n", "kiosk: must be a table ([kiosk])"),
        (settings, "[kiosk]\nbogus = 1\n", "kiosk.bogus: unknown setting"),
        (fifo, None, "not a regular file"),
        (Path("/dev/zero"), None, "not a regular file"),
        (tmp_path / "missing.toml", None, "no such file"),
    ):
        if text is not None:
            path.write_text(text)
        for words in (("--config", str(path), "status"), ("config", "check", str(path))):
            code, _, err = kiosk(capsys, *words)
            assert code == 3 and says in err, (words, text, err)
    assert not (tmp_path / "state").exists()


def test_text_that_no_store_keeps_is_refused_before_anything_happens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hardware.sim import BoardSimulator
    from hardware.sim_board import SimConfig

    state = tmp_path / "state"
    with BoardSimulator(SimConfig(slots=4, eject_s=0.05, seed=3)) as sim:
        for name, value in (
            ("KIOSK_KIOSK__STATE_DIR", str(state)),
            ("KIOSK_BOARD__URL", sim.path),
            ("KIOSK_BOARD__SLOTS", "4"),
            ("KIOSK_BOARD__TIMEOUT_S", "0.1"),
        ):
            monkeypatch.setenv(name, value)
        banks = [slot.powerbank_id for slot in sim.cabinet.slots]
        for reason in ("jam\x00med", "line\nbreak", "\x1b[2Jcleared", "bad \ud800", "x" * 201):
            code, _, err = kiosk(capsys, "eject", "2", "--reason", reason)
            assert code == 4 and "--reason" in err, (reason, err)
            code, _, err = kiosk(capsys, "maintenance", "on", "--reason", reason)
            assert code == 4 and "--reason" in err, (reason, err)
        assert [slot.powerbank_id for slot in sim.cabinet.slots] == banks  # nothing ejected
        assert not state.exists() or not (state / "maintenance").exists()
        code, _, err = kiosk(capsys, "sync", "requeue", "--seq", str(2**64))
        assert code == 2 and "--seq" in err, err


FAULTS: tuple[dict[str, object], ...] = (
    {"silent": True},
    {"garbage": True},
    {"lie": "hello_version"},
    {"lie": "status_total"},
    {"lie": "outcome_slot"},
    {"corrupt_next": 2},
    {"drop_next": 2},
)


def test_a_broken_cable_is_exit_6_naming_the_board_and_never_two_ejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloud_sync.events import SlotEjected
    from cloud_sync.outbox import Outbox
    from hardware.sim import BoardSimulator
    from hardware.sim_board import SimConfig

    for number, faults in enumerate(FAULTS):
        state = tmp_path / f"state-{number}"
        with (
            BoardSimulator(SimConfig(slots=4, eject_s=0.05, seed=3)) as sim,
            monkeypatch.context() as env,
        ):
            for name, value in (
                ("KIOSK_KIOSK__STATE_DIR", str(state)),
                ("KIOSK_BOARD__URL", sim.path),
                ("KIOSK_BOARD__SLOTS", "4"),
                ("KIOSK_BOARD__TIMEOUT_S", "0.1"),
            ):
                env.setenv(name, value)
            for field, fault in faults.items():
                setattr(sim.faults, field, fault)
            code, _, err = kiosk(capsys, "slots")
            assert code in (0, 6) and "unexpected" not in err, (faults, err)
            if code == 6:  # the board's own error, never "run kiosk slots" again
                assert "no slot state recorded yet" not in err, (faults, err)
                assert err.splitlines()[-1].startswith("kiosk: error: "), (faults, err)
            code, _, err = kiosk(capsys, "eject", "2", "--reason", "cable test")
            assert code in (0, 6) and "unexpected" not in err, (faults, err)
            physical = [record.slot for record in sim.ejects]
            assert physical in ([], [2]), (faults, physical)
            events = Outbox(state / "outbox.sqlite", "kiosk-1").events()
            ejected = [e.payload for e in events if isinstance(e.payload, SlotEjected)]
            assert len(ejected) == 1, (faults, ejected)
            assert (ejected[0].outcome == "presented") == (code == 0), (faults, ejected, err)


def test_a_writer_given_another_kind_of_file_writes_nothing_into_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloud_sync.outbox import Outbox
    from edge.cabinet.slots import Inventory
    from hardware.sim import BoardSimulator
    from hardware.sim_board import SimConfig

    state = tmp_path / "state"
    state.mkdir()
    outbox = Outbox(state / "outbox.sqlite", "kiosk-1")
    outbox.append("kiosk.started", version="1", mode="rental")
    outbox.close()
    Inventory(state / "slots.db", 4).close()
    (state / "garbage.bin").write_bytes(b"\x00\x01 not a database " * 200)
    monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(state))
    monkeypatch.chdir(tmp_path)
    photo = str(REPO.parent / "shared" / "faces" / "dev" / "person_01" / "01.jpg")
    before = listing(tmp_path)
    for name in ("outbox.sqlite", "slots.db", "garbage.bin"):
        roster = str(state / name)
        for words in (
            ("enroll", "--consent", "test-1", "--roster", roster, "--person-id", "p1", photo),
            ("roster", "delete", "--roster", roster, "p1"),
            ("roster", "rotate-key", "--roster", roster),
            ("roster", "erase-pending", "--roster", roster),
        ):
            code, _, err = kiosk(capsys, *words)
            assert code == 7 and "not a roster" in err and "unexpected" not in err, (words, err)
            assert listing(tmp_path) == before, words  # no key, no side file, no table
    # an outbox where the slot database belongs is never given a slots table
    (state / "slots.db").unlink()
    (state / "slots.db").write_bytes((state / "outbox.sqlite").read_bytes())
    before = listing(tmp_path)
    with BoardSimulator(SimConfig(slots=4, eject_s=0.05, seed=3)) as sim:
        monkeypatch.setenv("KIOSK_BOARD__URL", sim.path)
        monkeypatch.setenv("KIOSK_BOARD__SLOTS", "4")
        code, _, err = kiosk(capsys, "slots")
    assert code == 7 and "not a slot database" in err, err
    assert listing(tmp_path) == before


def test_an_export_never_overwrites_the_kiosk_s_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from cloud_sync.outbox import Outbox

    state = tmp_path / "state"
    state.mkdir()
    outbox = Outbox(state / "outbox.sqlite", "kiosk-1")
    outbox.append("kiosk.started", version="1", mode="rental")
    outbox.close()
    (state / "runtime.json").write_text("{}")
    shutil.copy(state / "outbox.sqlite", tmp_path / "copy.sqlite")
    (tmp_path / "link").symlink_to(state / "outbox.sqlite")
    monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(state))
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    for target in (
        state / "outbox.sqlite",
        state / "runtime.json",
        tmp_path / "copy.sqlite",
        tmp_path / "link",
        Path("state/outbox.sqlite"),
    ):
        code, _, err = kiosk(capsys, "events", "export", "--output", str(target))
        assert code == 4 and "nothing was written" in err, (target, err)
        assert listing(tmp_path) == before, target
    code, _, err = kiosk(capsys, "events", "export", "--output", str(tmp_path / "events.jsonl"))
    assert code == 0 and "exported 1 events" in err, err
    code, _, err = kiosk(capsys, "events", "export", "--output", str(tmp_path / "events.jsonl"))
    assert code == 0, err  # an export of its own may be written again


def test_a_pipe_or_a_device_given_as_a_file_is_refused_not_read_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state, updates = tmp_path / "state", tmp_path / "opt"
    monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(state))
    monkeypatch.setenv("KIOSK_UPDATE__ROOT", str(updates))
    monkeypatch.chdir(tmp_path)
    fifo = tmp_path / "nobody-writes.fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "bundle"
    folder.mkdir()
    os.mkfifo(folder / "manifest.json")
    (tmp_path / "huge.toml").write_bytes(b"# " + b"x" * 200_000 + b"\n")
    for source in (fifo, Path("/dev/zero"), tmp_path / "huge.toml"):
        code, _, err = kiosk(
            capsys, "provision", "--from", str(source), "--etc", str(tmp_path / "etc"),
            "--root", str(tmp_path / "root"),
        )  # fmt: skip
        assert code == 4 and "not a provisioning file" in err, (source, err)
    for source in (fifo, Path("/dev/zero"), folder):
        for words in (("update", "verify", str(source)), ("update", "apply", str(source))):
            code, _, err = kiosk(capsys, *words)
            assert code == 4 and "not a bundle" in err and "unexpected" not in err, (words, err)
    for listen in ("localhost:99999", "localhost:http", "no-such-host.invalid:9999"):
        code, _, err = kiosk(capsys, "board-sim", "--listen", listen)
        assert code == 4 and "board-sim: error: " in err, (listen, err)
    code, _, err = kiosk(capsys, "sync", "requeue")
    assert code == 4 and "no outbox yet" in err, err
    assert not state.exists() and not (tmp_path / "etc").exists()


@pytest.mark.parametrize("kind", ["garbage", "fifo", "folder", "device"])
def test_a_damaged_flag_or_runtime_file_is_reported_not_a_crash_or_a_hang(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for name in ("maintenance", "runtime.json"):
        path = state / name
        if kind == "garbage":
            path.write_bytes(b"\x83\xff{not json" * 50)
        elif kind == "fifo":
            os.mkfifo(path)  # nobody writes to it: a plain read would block forever
        elif kind == "folder":
            path.mkdir()
        else:
            path.symlink_to("/dev/zero")  # a plain read would never end
    monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(state))
    monkeypatch.chdir(tmp_path)
    code, out, err = kiosk(capsys, "maintenance", "status", "--json")
    assert code == 0 and "unexpected" not in err, err
    assert '"on": true' in out.replace('":true', '": true'), out  # out of service: the safe side
    code, out, err = kiosk(capsys, "status", "--json")
    assert code in (0, 9) and "unexpected" not in err, err
    assert "maintenance" in out


def test_a_roster_or_slot_database_in_the_outbox_s_place_is_never_written_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cabinet.slots import Inventory

    state = tmp_path / "state"
    state.mkdir()
    Inventory(state / "slots.db", 4).close()
    (state / "outbox.sqlite").write_bytes((state / "slots.db").read_bytes())
    monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(state))
    before = listing(tmp_path)
    code, _, err = kiosk(capsys, "maintenance", "on", "--reason", "cleaning")
    assert code == 7 and "not an outbox" in err and "slots table" in err, err
    assert "move it aside" in err and "unexpected" not in err
    assert listing(tmp_path) == before  # no events table, no flag, no side file


def test_an_encodings_cache_is_never_written_into_the_kiosk_s_own_folders(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    dev_faces: Path,
) -> None:
    """``faces eval --encodings`` keeps face templates in clear: a new cache file inside
    the state or key folder is refused before any photo is encoded, not only an existing
    file there."""
    state = tmp_path / "state"
    (state / "keys").mkdir(parents=True)
    monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(state))
    for target in (state / "enc.npz", state / "keys" / "enc.npz"):
        code, _, err = kiosk(capsys, "faces", "eval", str(dev_faces), "--encodings", str(target))
        assert code == 4, err
        assert "would keep face templates in clear inside the kiosk's own folder" in err
        assert not target.exists()
