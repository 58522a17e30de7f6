"""Deleting a rider while another process reads the roster: the command says plainly that
the bytes are still on disk, without a long wait, and the kiosk finishes the erasure."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from cloud_sync.outbox import Outbox
from cloud_sync.roster_owed import record_owed
from tests.helpers import run_cli
from tests.vault_helpers import Cloud, open_store, record

ENV = {"KIOSK_ROSTER__ERASE_WAIT_S": "0.5"}


def reader(roster: Path) -> subprocess.Popen[str]:
    """Another process in the middle of a read of the roster until its stdin closes."""
    code = f"""
        import sqlite3, sys
        db = sqlite3.connect({str(roster)!r}, isolation_level=None)
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM riders").fetchone()
        print("reading", flush=True)
        sys.stdin.read()
        db.execute("COMMIT")
        db.close()
    """
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "reading"
    return process


def release(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=10) == 0


def on_disk(roster: Path) -> bytes:
    wal = roster.with_name(roster.name + "-wal")
    return roster.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def sealed_of(roster: Path, person: str) -> bytes:
    with sqlite3.connect(roster) as db:
        row = db.execute("SELECT sealed FROM riders WHERE person_id = ?", (person,)).fetchone()
    return bytes(row[0])


def test_a_delete_blocked_by_a_reader_says_so_and_is_finished_later(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for index, person in enumerate(("rider-a", "rider-b", "rider-c")):
        store.enrol(person, record(person, index))
    store.close()
    roster = tmp_path / "roster.sqlite"
    sealed = sealed_of(roster, "rider-b")
    held = reader(roster)
    try:
        result = run_cli("roster", "delete", "rider-b", "--roster", str(roster), env=ENV)
        assert result.returncode == 7, result.stderr
        assert "rider-b: removed from the roster, but the deleted bytes are still" in result.stderr
        assert "kiosk roster erase-pending" in result.stderr
        assert "deleted from" not in result.stdout
        assert sealed[-32:] in on_disk(roster)  # what the message says is true
        again = run_cli("roster", "erase-pending", "--roster", str(roster), env=ENV)
        assert again.returncode == 7 and "still pending" in again.stderr
    finally:
        release(held)
    # the next command that writes the roster finishes the erasure by itself
    done = run_cli("roster", "erase-pending", "--roster", str(roster), env=ENV)
    assert done.returncode == 0, done.stderr
    assert "roster.erasure_completed" in done.stderr
    raw = on_disk(roster)
    assert sealed[-32:] not in raw and b"rider-b" not in raw


def test_a_cloud_deletion_blocked_by_a_reader_is_finished_by_the_next_writer(
    tmp_path: Path,
) -> None:
    from edge.vault.keys import device_keys

    cloud = Cloud("kiosk-1", device_keys(tmp_path / "keys", create=True))
    store = open_store(tmp_path, cloud)
    from cloud_sync.roster_wire import Upsert

    store.apply_delta(
        cloud.delta(
            0, 1, [Upsert(f"rider-{i}", 1, record(f"N{i}", i)) for i in range(3)], full=True
        )
    )
    sealed = sealed_of(store.path, "rider-1")
    store.erase_wait_s = 0.2
    held = reader(store.path)
    try:
        result = store.apply_delta(cloud.delta(1, 2, deletions=["rider-1"]))
        assert result.deletions == 1
        assert store.erasure_pending and store.pending_erasure() is not None
        assert sealed[-32:] in on_disk(store.path)
    finally:
        release(held)
    store.close()
    # the running kiosk (or any writer) opening the roster finishes it and says so
    reopened = open_store(tmp_path, cloud)
    assert reopened.pending_erasure() is None and not reopened.erasure_pending
    # the rider's id stays in the receipt the roster owes until the outbox holds it, as
    # the sync pass records it after the pull
    outbox = Outbox(tmp_path / "outbox.sqlite", "kiosk-1")
    try:
        assert record_owed(reopened, outbox) == 3  # two roster.applied, one roster.erased
    finally:
        outbox.close()
    raw = on_disk(reopened.path)
    assert sealed[-32:] not in raw and b"rider-1" not in raw
