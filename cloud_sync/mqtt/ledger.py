"""The ids of the remote commands this kiosk has taken on, so that each runs at most once.

One SQLite file in the kiosk's state folder (``commands.sqlite``, ``synchronous=FULL``).
An id is claimed, durably, *before* its handler runs: a kiosk that loses power in the
middle of an eject does not eject again when the broker delivers the command once more.
An id is kept until well after its command expired (an expired command is refused anyway),
then pruned. A command left ``running`` by a process that stopped before it finished is
found with ``running()`` at the next start and finished then (``CommandExecutor.recover``),
so no command stays ``running`` for ever.

An authentic command that is refused without running (expired, busy, unsupported, ...)
is taken on too, as ``rejected``, in the same transaction that owes its rejection
(``refuse``): it is answered once, and a copy delivered again (its acknowledgement lost to a
power cut or a dropped connection) is never run after it was answered "busy".

The ledger also holds the answers the kiosk owes (table ``results``): a command's result
is written in the same transaction that finishes it (and a rejection of an authentic
command before its message is acknowledged to the broker), and stays owed until the broker
acknowledged its publication (``answered``). The link publishes every owed result at each
connection, so a result is never lost to a restart or a broker that was away; it may be
published twice (the sender takes the first result with its command's id). Results are
pruned with their commands; an owed result older than ``KEEP_AFTER_EXPIRY_S`` is given up.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cloud_sync.mqtt.errors import MqttError
from cloud_sync.private_files import open_private_db

FILENAME = "commands.sqlite"
#: Ids are kept this long after their command expired (covers a clock stepped back).
KEEP_AFTER_EXPIRY_S = 2 * 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    issuer TEXT NOT NULL,
    received_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    detail TEXT
);
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    answered_at REAL
);
CREATE INDEX IF NOT EXISTS results_owed ON results (seq) WHERE answered_at IS NULL;
"""


@dataclass(frozen=True)
class LedgerEntry:
    id: str
    name: str
    issuer: str
    received_at: float
    status: str
    detail: str | None


@dataclass(frozen=True)
class OwedResult:
    """A result not yet acknowledged by the broker: ``payload`` is its JSON, as published."""

    seq: int
    command_id: str
    payload: str


class CommandLedger:
    """Command ids already taken on; thread-safe, one connection."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = open_private_db(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise MqttError(f"{path}: cannot open the command ledger ({exc})") from None
        self.prune()

    def claim(self, command_id: str, name: str, issuer: str, expires_at: float) -> bool:
        """Record ``command_id`` as taken on; False when it was already (a replay)."""
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO commands (id, name, issuer, received_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [command_id, name, issuer, self._clock(), expires_at],
                )
            except sqlite3.Error as exc:
                raise MqttError(f"{self.path}: cannot record command {command_id}: {exc}") from None
            return cursor.rowcount == 1

    def finish(self, command_id: str, status: str, detail: str = "", result: str = "") -> None:
        """Remember how a claimed command ended and, with ``result``, owe that answer
        (one transaction: a command never ends without its answer owed)."""
        with self._transaction(command_id):
            self._db.execute(
                "UPDATE commands SET status = ?, detail = ? WHERE id = ?",
                [status, detail[:500], command_id],
            )
            if result:
                self._owe(command_id, result)

    def refuse(
        self, command_id: str, name: str, issuer: str, expires_at: float, reason: str, result: str
    ) -> bool:
        """Take ``command_id`` on as refused (``reason``) and owe ``result``, its rejection,
        in one transaction; False (nothing written) when the id was taken on already. A
        refused id is answered once, like one that ran: a copy the broker delivers again
        after a power cut or a lost acknowledgement is neither run nor answered anew."""
        with self._transaction(command_id):
            taken = self._db.execute(
                "INSERT OR IGNORE INTO commands (id, name, issuer, received_at, "
                "expires_at, status, detail) VALUES (?, ?, ?, ?, ?, 'rejected', ?)",
                [command_id, name, issuer, self._clock(), expires_at, reason[:500]],
            ).rowcount
            if taken:
                self._owe(command_id, result)
        return taken == 1

    @contextmanager
    def _transaction(self, command_id: str) -> Iterator[None]:
        """One write transaction under the ledger's lock; ``MqttError`` naming the command
        when SQLite fails (nothing of it written)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise MqttError(f"{self.path}: cannot record command {command_id}: {exc}") from None

    def owe(self, command_id: str, result: str) -> None:
        """Owe ``result`` (a rejection's JSON) until the broker acknowledges it."""
        with self._lock:
            try:
                self._owe(command_id, result)
            except sqlite3.Error as exc:
                raise MqttError(f"{self.path}: cannot record command {command_id}: {exc}") from None

    def _owe(self, command_id: str, result: str) -> None:
        self._db.execute(
            "INSERT INTO results (command_id, payload, created_at) VALUES (?, ?, ?)",
            [command_id, result, self._clock()],
        )

    def owed(self) -> list[OwedResult]:
        """The results not yet acknowledged by the broker, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, command_id, payload FROM results WHERE answered_at IS NULL "
                "ORDER BY seq"
            ).fetchall()
        return [OwedResult(*row) for row in rows]

    def answered(self, seqs: list[int]) -> None:
        """The broker acknowledged these results: they are no longer owed."""
        if not seqs:
            return
        with self._lock:
            try:
                self._db.executemany(
                    "UPDATE results SET answered_at = ? WHERE seq = ?",
                    [(self._clock(), seq) for seq in seqs],
                )
            except sqlite3.Error as exc:
                raise MqttError(f"{self.path}: cannot record answered results: {exc}") from None

    def running(self) -> list[LedgerEntry]:
        """Commands taken on and not finished, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, issuer, received_at, status, detail FROM commands "
                "WHERE status = 'running' ORDER BY received_at"
            ).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def prune(self) -> int:
        """Forget ids whose commands expired more than ``KEEP_AFTER_EXPIRY_S`` ago, and
        results older than that (an owed one is given up: no sender waits that long)."""
        with self._lock:
            cutoff = self._clock() - KEEP_AFTER_EXPIRY_S
            cursor = self._db.execute("DELETE FROM commands WHERE expires_at < ?", [cutoff])
            self._db.execute("DELETE FROM results WHERE created_at < ?", [cutoff])
            return cursor.rowcount

    def recent(self, limit: int = 10) -> list[LedgerEntry]:
        """The last commands taken on, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, issuer, received_at, status, detail FROM commands "
                "ORDER BY received_at DESC LIMIT ?",
                [limit],
            ).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
