"""What the power-loss tests share: the appliance's processes on the LazyFS folder, and
a look at an outbox after the reboot."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tests.integration.power.lazyfs import PowerFolder

ROOT = Path(__file__).resolve().parents[3]


class Part:
    """One appliance process (``tests.integration.power.appliance``); its output lines are
    collected in a thread, so the test reads what it acknowledged up to the cut."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.power.appliance", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=[self.process.stdout])
        self._reader.start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self.lines.append(line.strip())

    def wait_for(self, line: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {line!r} from the part: {self.errors()}")
            time.sleep(0.01)

    def wait_acknowledged(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged()) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"fewer than {count} events acknowledged: {self.errors()}")
            time.sleep(0.01)

    def acknowledged(self) -> list[tuple[int, str, str]]:
        """``(seq, id, type)`` of every event the part's ``append`` returned for."""
        found = []
        for line in list(self.lines):
            if line.startswith("ack "):
                _, seq, event_id, kind = line.split()
                found.append((int(seq), event_id, kind))
        return found

    def kill(self) -> None:
        """SIGKILL: the first thing a power cut does to a process."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)

    def errors(self) -> str:
        assert self.process.stderr is not None
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stderr.read()[-3000:]


def inspect(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on a database of the appliance, opened read-only.

    Read-only on purpose: a read-write connection that closes last removes the ``-shm``
    file, and LazyFS (this build) then sometimes fails the ``ftruncate`` of the next
    process's new ``-shm`` (SQLite: "disk I/O error", SHMOPEN), which no real disk does.
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "disk I/O error" not in str(exc):
            raise
    finally:
        db.close()
    return _inspect_copy(path, sql)  # the same quirk, for this reader: read a copy off LazyFS


def _inspect_copy(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """``inspect`` on a copy of the database and its WAL in a folder off LazyFS (for a
    database no process is writing: the tests read one after a kill or a cut)."""
    with tempfile.TemporaryDirectory() as folder:
        for suffix in ("", "-wal"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                shutil.copyfile(source, Path(folder) / (path.name + suffix))
        db = sqlite3.connect(Path(folder) / path.name)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()


def outbox_rows(path: Path) -> list[tuple[int, str, str, str]]:
    """``(seq, id, type, state)`` of every event, after an integrity check of the file."""
    assert inspect(path, "PRAGMA integrity_check") == [("ok",)]
    rows = inspect(path, "SELECT seq, id, type, state FROM events ORDER BY seq")
    return [(int(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def event_bodies(state: Path) -> list[dict[str, Any]]:
    """The events in ``<state>/outbox.sqlite``, oldest first ([] when there is none yet)."""
    path = state / "outbox.sqlite"
    if not path.exists():
        return []
    return [json.loads(body) for (body,) in inspect(path, "SELECT body FROM events ORDER BY seq")]


def ejected(state: Path) -> list[dict[str, Any]]:
    """The payloads of the ``slot.ejected`` events, oldest first."""
    return [e["payload"] for e in event_bodies(state) if e["type"] == "slot.ejected"]


def types(state: Path) -> list[str]:
    return [str(e["type"]) for e in event_bodies(state)]


def wait_until(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def earlier_boot(power: PowerFolder, folder: Path) -> None:
    """What a test set up under ``folder``, as an earlier boot left it: fsynced, then the
    power cycled. The new mount has never seen the set-up's ``-shm`` files made and removed,
    so its ftruncate quirk (see ``inspect``) cannot fail the appliance's first open."""
    fsync_tree(folder)
    power.cut()
    power.mount()


def fsync_tree(folder: Path) -> None:
    """Put what a test wrote under ``folder`` on the disk (as an earlier boot left it)."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
