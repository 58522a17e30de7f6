"""The outbox's file and tables, their named migrations, and the plain values the outbox
returns.

Migrations are numbered, run in order inside one ``BEGIN IMMEDIATE`` each, and recorded in
``PRAGMA user_version``; an outbox written by an older kiosk version is upgraded in place.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cloud_sync.errors import OutboxError, OutboxMissingError
from cloud_sync.events import CLASS_OF, EVENT_CLASSES
from cloud_sync.outbox_seq import skip_reserved
from cloud_sync.private_files import connect_read_only, foreign_table, open_private_db

#: Bytes counted per stored event on top of its JSON body (row header, id and seq indexes).
ROW_OVERHEAD = 160

#: ``meta`` keys of the fetch of rentals closed in the cloud (``cloud_sync.closed_pull``).
CLOSED_CURSOR_KEY = "closed_rentals_cursor"
CLOSED_FETCHED_AT_KEY = "closed_rentals_fetched_at"  # the last fetch, whatever its outcome
CLOSED_COUNT_KEY = "closed_rentals_closed"  # rentals the last fetch closed here
CLOSED_SUCCESS_AT_KEY = "closed_rentals_success_at"  # the last fetch that ended without error
CLOSED_ERROR_KEY = "closed_rentals_error"  # the last fetch's error; NULL after a success
CLOSED_ERROR_AT_KEY = "closed_rentals_error_at"

_CLASS_CASE = """
    CASE
        WHEN type IN ('rental.started', 'rental.failed', 'rental.returned',
                      'boarding.recorded', 'slot.ejected') THEN 'money'
        WHEN type IN ('face.recognised', 'face.unrecognised') THEN 'telemetry'
        ELSE 'ops'
    END
"""

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "events",
        """
        CREATE TABLE IF NOT EXISTS events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            occurred_at TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending'
        );
        CREATE INDEX IF NOT EXISTS events_state ON events (state, seq);
        """,
    ),
    (
        "classes, sizes, budget and sync status",
        f"""
        ALTER TABLE events ADD COLUMN class TEXT NOT NULL DEFAULT 'ops';
        ALTER TABLE events ADD COLUMN created_at REAL NOT NULL DEFAULT 0;
        ALTER TABLE events ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE events ADD COLUMN sent_at REAL;
        ALTER TABLE events ADD COLUMN reason TEXT;
        UPDATE events SET
            class = {_CLASS_CASE},
            size = length(CAST(body AS BLOB)) + {ROW_OVERHEAD},
            created_at = (julianday(occurred_at) - 2440587.5) * 86400.0;
        CREATE INDEX events_live ON events (state, created_at);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value);
        INSERT INTO meta (key, value) VALUES
            ('last_seq', (SELECT COALESCE(MAX(seq), 0) FROM events)),
            ('bytes_used', (SELECT COALESCE(SUM(size), 0) FROM events)),
            ('dropped_telemetry', 0),
            ('dropped_ops', 0),
            ('last_success_at', NULL),
            ('last_error', NULL),
            ('last_error_at', NULL);
        """,  # noqa: S608 - constants only
    ),
    (
        "the fetch of rentals closed in the cloud",
        f"""
        INSERT OR IGNORE INTO meta (key, value) VALUES
            ('{CLOSED_CURSOR_KEY}', 0),
            ('{CLOSED_FETCHED_AT_KEY}', NULL),
            ('{CLOSED_COUNT_KEY}', 0),
            ('{CLOSED_SUCCESS_AT_KEY}', NULL),
            ('{CLOSED_ERROR_KEY}', NULL),
            ('{CLOSED_ERROR_AT_KEY}', NULL);
        """,  # noqa: S608 - constants only
    ),
    (
        "events that fail alone",
        """
        ALTER TABLE events ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE events ADD COLUMN last_failure TEXT;
        CREATE INDEX events_failing ON events (state, seq) WHERE failures > 0;
        """,
    ),
    (
        "events of one type",  # Outbox.recent_of: the learner's limits after a restart
        """
        CREATE INDEX events_type ON events (type, seq);
        """,
    ),
)


def migrate(connection: sqlite3.Connection) -> None:
    """Bring the outbox tables to the latest version (each step atomic)."""
    for version, (_name, script) in enumerate(MIGRATIONS, start=1):
        (current,) = connection.execute("PRAGMA user_version").fetchone()
        if current >= version:
            continue
        connection.execute("BEGIN IMMEDIATE")
        try:
            (current,) = connection.execute("PRAGMA user_version").fetchone()
            if current < version:  # another process may have migrated meanwhile
                for statement in _statements(script):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {version}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


@dataclass(frozen=True)
class Pending:
    """A pending event as the sync daemon sends it: its stored JSON, untouched."""

    seq: int
    id: str
    type: str
    body: str


class Failing(NamedTuple):
    """A pending event that failed alone (``failures`` times, the last with ``last_failure``)
    while the cloud took other events; it is sent alone until it goes through or is
    quarantined."""

    seq: int
    id: str
    type: str
    failures: int
    last_failure: str

    @property
    def money(self) -> bool:
        return CLASS_OF.get(self.type) == "money"


class Quarantined(NamedTuple):
    """An event the cloud refused, set aside with the reason until a technician requeues it."""

    seq: int
    id: str
    type: str
    reason: str

    @property
    def money(self) -> bool:
        return CLASS_OF.get(self.type) == "money"


@dataclass(frozen=True)
class Stats:
    """What ``kiosk sync status`` shows about the outbox."""

    pending: dict[str, int]
    oldest_pending_age_s: float | None
    sent: int
    quarantined: int
    dropped: dict[str, int]
    bytes_used: int
    max_bytes: int
    last_seq: int
    last_success_at: str | None
    last_error: str | None
    last_error_at: str | None
    quarantined_money: int = 0  # of ``quarantined``: events of the money class
    failing: int = 0  # pending events that failed alone (see ``Failing``)

    @property
    def pending_total(self) -> int:
        return sum(self.pending.values())


def counts_failures(db: sqlite3.Connection) -> bool:
    """Whether the outbox has the failure counts (an older one opened read-only has not)."""
    return any(row[1] == "failures" for row in db.execute("PRAGMA table_info(events)"))


def read_stats(db: sqlite3.Connection, max_bytes: int) -> Stats:
    """The outbox's ``Stats``, read from its tables."""
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    depth: dict[str, int] = dict.fromkeys(EVENT_CLASSES, 0)
    for event_class, count in db.execute(
        "SELECT class, COUNT(*) FROM events WHERE state = 'pending' GROUP BY class"
    ):
        depth[event_class] = int(count)
    (oldest,) = db.execute("SELECT MIN(created_at) FROM events WHERE state = 'pending'").fetchone()
    counts = dict(db.execute("SELECT state, COUNT(*) FROM events GROUP BY state"))
    (money,) = db.execute(
        "SELECT COUNT(*) FROM events WHERE state = 'quarantined' AND class = 'money'"
    ).fetchone()
    failing = 0
    if counts_failures(db):
        (failing,) = db.execute(
            "SELECT COUNT(*) FROM events WHERE state = 'pending' AND failures > 0"
        ).fetchone()
    return Stats(
        pending=depth,
        oldest_pending_age_s=None if oldest is None else max(0.0, time.time() - oldest),
        sent=int(counts.get("sent", 0)),
        quarantined=int(counts.get("quarantined", 0)),
        dropped={c: int(meta.get(f"dropped_{c}", 0)) for c in ("telemetry", "ops")},
        bytes_used=int(meta["bytes_used"]),
        max_bytes=max_bytes,
        last_seq=int(meta["last_seq"]),
        last_success_at=meta.get("last_success_at"),
        last_error=meta.get("last_error"),
        last_error_at=meta.get("last_error_at"),
        quarantined_money=int(money),
        failing=int(failing),
    )


_OUTBOX_FIX = (
    "nothing was written; move it aside (its events may still be read from it), then "
    "`kiosk run` starts a new outbox"
)


def open_outbox_db(path: Path, busy_timeout_s: float, read_only: bool) -> sqlite3.Connection:
    """The outbox file at ``path``, open in autocommit mode. A writer creates it (0600),
    refuses another kind of database in its place, sets WAL and ``synchronous=FULL`` and
    migrates it; ``read_only`` needs it to exist (``OutboxMissingError``) and writes
    nothing. ``OutboxError`` says what to do with a file that is no outbox."""
    try:
        if read_only:
            connection = connect_read_only(path, timeout=busy_timeout_s)
            connection.isolation_level = None
            return connection
        connection = open_private_db(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
        )
        other = foreign_table(connection, "events")
        if other is not None:
            connection.close()
            raise OutboxError(
                f"{path}: not an outbox (another kind of database, with a {other} table); "
                f"{_OUTBOX_FIX}"
            )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        migrate(connection)
        connection.execute("BEGIN IMMEDIATE")
        try:
            skip_reserved(connection)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return connection
    except FileNotFoundError:
        raise OutboxMissingError(
            f"{path}: no outbox yet (nothing was recorded here; `kiosk run` makes it)"
        ) from None
    except (sqlite3.Error, OSError) as exc:
        if _busy(exc):  # a live outbox another process is writing: never "move it aside"
            raise OutboxError(
                f"{path}: the outbox is busy: another process held its write lock for "
                f"{busy_timeout_s:g} s ({exc}); nothing was written; try again"
            ) from None
        raise OutboxError(f"{path}: cannot open the outbox ({exc}); {_OUTBOX_FIX}") from None


def _busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite waiting out another connection's lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and (
        code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)
    )
