"""The ids of the remote commands this kiosk has taken on, so that each runs at most once.

One SQLite file in the kiosk's state folder (``commands.sqlite``, ``synchronous=FULL``).
An id is claimed, durably, *before* its handler runs: a kiosk that loses power in the
middle of an eject does not eject again when the broker delivers the command once more.
An id is kept until well after its command expired (an expired command is refused anyway),
then pruned. A command left ``running`` by a process that stopped before it finished is
found with ``running()`` at the next start and finished then (``CommandExecutor.recover``),
so no command stays ``running`` for ever.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
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
)
"""


@dataclass(frozen=True)
class LedgerEntry:
    id: str
    name: str
    issuer: str
    received_at: float
    status: str
    detail: str | None


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
            self._db.execute(_SCHEMA)
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

    def finish(self, command_id: str, status: str, detail: str = "") -> None:
        """Remember how a claimed command ended (for ``kiosk status`` and the logs)."""
        with self._lock:
            try:
                self._db.execute(
                    "UPDATE commands SET status = ?, detail = ? WHERE id = ?",
                    [status, detail[:500], command_id],
                )
            except sqlite3.Error as exc:
                raise MqttError(f"{self.path}: cannot record command {command_id}: {exc}") from None

    def running(self) -> list[LedgerEntry]:
        """Commands taken on and not finished, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, issuer, received_at, status, detail FROM commands "
                "WHERE status = 'running' ORDER BY received_at"
            ).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def prune(self) -> int:
        """Forget ids whose commands expired more than ``KEEP_AFTER_EXPIRY_S`` ago."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM commands WHERE expires_at < ?", [self._clock() - KEEP_AFTER_EXPIRY_S]
            )
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
