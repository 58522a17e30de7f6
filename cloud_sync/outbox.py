"""The durable outbox: every event the kiosk records, kept until the cloud acknowledges it.

One SQLite file (WAL, ``synchronous=FULL``): an event is committed to disk before
``append`` returns. ``seq`` increases by one per event and is never reused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils
from ulid import ULID

from cloud_sync.errors import OutboxError
from cloud_sync.events import Event, payload_for

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Outbox:
    """Append-only event store with a pending/sent state per event."""

    def __init__(self, path: Path, kiosk_id: str, clock: Clock = utc_now) -> None:
        self.path = path
        self.kiosk_id = kiosk_id
        self._clock = clock
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            self._db = sqlite_utils.Database(connection)
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"{path}: cannot open the outbox ({exc})") from None

    def _migrate(self) -> None:
        if "events" not in self._db.table_names():
            self._db.execute(
                """
                CREATE TABLE events (
                    seq INTEGER PRIMARY KEY,
                    id TEXT NOT NULL UNIQUE,
                    type TEXT NOT NULL,
                    occurred_at TEXT NOT NULL,
                    body TEXT NOT NULL,
                    state TEXT NOT NULL DEFAULT 'pending'
                )
                """
            )
            self._db.execute("CREATE INDEX events_state ON events (state, seq)")

    def append(self, event_type: str, **payload: Any) -> Event:
        """Validate, number and durably store one event; return it."""
        body = payload_for(event_type, **payload)
        occurred_at = self._clock()
        event_id = str(ULID.from_datetime(occurred_at))
        try:
            with self._db.conn:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events").fetchone()
                event = Event(
                    id=event_id,
                    kiosk_id=self.kiosk_id,
                    seq=int(row[0]),
                    type=event_type,
                    occurred_at=occurred_at,
                    payload=body,
                )
                self._db.execute(
                    "INSERT INTO events (seq, id, type, occurred_at, body) VALUES (?, ?, ?, ?, ?)",
                    [
                        event.seq,
                        event.id,
                        event.type,
                        event.occurred_at.isoformat(),
                        event.to_json(),
                    ],
                )
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: cannot store {event_type} event ({exc})") from None
        return event

    def events(self, state: str | None = None, limit: int = 1000) -> list[Event]:
        """Stored events in ``seq`` order, optionally only those in ``state``."""
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        rows = self._db.execute(
            f"SELECT body FROM events {where} ORDER BY seq LIMIT ?",  # noqa: S608
            [*args, limit],
        ).fetchall()
        return [Event.model_validate_json(body) for (body,) in rows]

    def count(self, state: str | None = None) -> int:
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        row = self._db.execute(f"SELECT COUNT(*) FROM events {where}", args).fetchone()  # noqa: S608
        return int(row[0])

    def close(self) -> None:
        self._db.conn.close()
