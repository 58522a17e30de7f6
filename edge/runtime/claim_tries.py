"""The claim step's wrong tries that outlive a face track and a restart: ``claims.sqlite``.

One SQLite file in the kiosk's state folder (WAL, ``synchronous=FULL``), one row per wrong
try per subject: ``rider:<person id>`` for each rider the face could have been, ``kiosk``
for the kiosk. A row holds the subject and the time (wall-clock seconds), nothing else:
never the typed code, a hash of it, or anything about the face. Rows older than the
longest window (or further ahead than it, after the clock was set back) are deleted.

A try is recorded *before* its code is checked (``add``) and taken back (``take_back``)
when it turns out not to be wrong, so a kiosk killed or cut off in the middle of a check
has counted it. ``ClaimLockout.rider`` and ``ClaimLockout.kiosk`` (``TryLimit``) say what
the counts mean.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cloud_sync.private_files import open_private_db

FILENAME = "claims.sqlite"
KIOSK = "kiosk"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wrong_tries (
    id INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS wrong_tries_subject ON wrong_tries (subject, at);
"""


class ClaimTriesError(Exception):
    """The wrong-tries file cannot be opened or written."""


def rider(person_id: str) -> str:
    """The subject standing for a rider."""
    return f"rider:{person_id}"


class ClaimTries:
    """Wrong claim tries by subject, kept ``keep_s``; thread-safe, one connection.

    ``path`` is a file, or ``":memory:"`` (counts that end with the process).
    """

    def __init__(
        self,
        path: Path | str = ":memory:",
        keep_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.keep_s = keep_s
        self._clock = clock
        self._lock = threading.Lock()
        try:
            if isinstance(path, Path):
                self._db = open_private_db(
                    path, isolation_level=None, check_same_thread=False, timeout=10.0
                )
                self._db.execute("PRAGMA journal_mode=WAL")
            else:
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ClaimTriesError(f"{path}: cannot open the claim tries ({exc})") from None
        self.prune()

    def now(self) -> float:
        return self._clock()

    def times(self, subjects: Iterable[str]) -> dict[str, list[float]]:
        """The kept wrong tries' times of each of ``subjects`` (none: an empty list)."""
        found: dict[str, list[float]] = {}
        with self._lock:
            try:
                for subject in dict.fromkeys(subjects):
                    rows = self._db.execute(
                        "SELECT at FROM wrong_tries WHERE subject = ?", [subject]
                    ).fetchall()
                    found[subject] = [at for (at,) in rows]
            except sqlite3.Error as exc:
                raise ClaimTriesError(f"{self.path}: cannot read the tries ({exc})") from None
        return found

    def add(self, subjects: Iterable[str], at: float) -> list[int]:
        """Record one wrong try against each of ``subjects``, durably; the rows' ids."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                ids = [
                    int(
                        self._db.execute(
                            "INSERT INTO wrong_tries (subject, at) VALUES (?, ?)", [s, at]
                        ).lastrowid
                        or 0
                    )
                    for s in dict.fromkeys(subjects)
                ]
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise ClaimTriesError(f"{self.path}: cannot record a wrong try ({exc})") from None
        return ids

    def take_back(self, ids: Iterable[int]) -> None:
        """Forget the rows ``add`` returned (the try was not a wrong one)."""
        rows = [[i] for i in ids]
        with self._lock:
            try:
                self._db.executemany("DELETE FROM wrong_tries WHERE id = ?", rows)
            except sqlite3.Error as exc:
                raise ClaimTriesError(f"{self.path}: cannot take a try back ({exc})") from None

    def prune(self) -> None:
        """Delete the rows no window reaches any more."""
        now = self._clock()
        with self._lock:
            try:
                self._db.execute(
                    "DELETE FROM wrong_tries WHERE at <= ? OR at > ?",
                    [now - self.keep_s, now + self.keep_s],
                )
            except sqlite3.Error as exc:
                raise ClaimTriesError(f"{self.path}: cannot prune ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
