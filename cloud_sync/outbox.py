"""The durable outbox: every event the kiosk records, kept until the cloud acknowledges it.

One SQLite file (WAL, ``synchronous=FULL``): an event is on disk before ``append`` returns
(telemetry events alone are committed with ``synchronous=NORMAL``: a power cut may lose
the last few of those, never a money event, and never one that was sent: a batch is made
durable before it is read for sending, see ``cloud_sync.outbox_seq``). ``seq`` comes from a counter that is never
reused, even after acknowledged events are pruned.

An event is appended in the same transaction as the state change that caused it::

    with outbox.transaction() as tx:
        tx.execute("UPDATE slots SET powerbank_id = NULL WHERE slot = ?", [3])
        tx.append("rental.started", rental_id=..., slot=3, ...)

If the block raises (``OutboxFullError`` included), neither is stored. Other parts keep
their own tables in this same file (``outbox.db`` is the sqlite-utils ``Database``).

States: ``pending`` -> ``sent`` (acknowledged by the cloud, pruned after
``keep_sent_s``) or ``quarantined`` (refused by the cloud, kept with the reason until a
technician requeues it). One writer at a time: every write runs under this object's
lock and ``BEGIN IMMEDIATE``; another process waits up to ``busy_timeout``.

Disk budget (``max_bytes``, counted over stored event bodies plus a fixed row overhead):
when an event does not fit, sent events are pruned first, then pending ``telemetry``
events, then pending ``ops`` events, oldest first. An event never evicts a class above its
own. A telemetry or ops event that still does not fit is dropped (and counted); a money
event that does not fit raises ``OutboxFullError``, and the kiosk stops renting. A write
the file system refuses for lack of space raises it too, and sets ``disk_full`` until a
later write commits (the kiosk's service check reads it: ``edge.cabinet.disk``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Set
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils
import structlog
from ulid import ULID

from cloud_sync import outbox_quarantine as refused
from cloud_sync import outbox_seq
from cloud_sync.batching import BatchLimits, Candidate, plan_batch
from cloud_sync.errors import OutboxError, OutboxFullError
from cloud_sync.events import CLASS_OF, Event, payload_for
from cloud_sync.outbox_budget import count_dropped, make_room, used_bytes
from cloud_sync.outbox_schema import (
    ROW_OVERHEAD,
    Failing,
    Pending,
    Quarantined,
    Stats,
    open_outbox_db,
    read_stats,
)

Clock = Callable[[], datetime]
log = structlog.get_logger("cloud_sync.outbox")

_SQLITE_FULL = 13


def utc_now() -> datetime:
    return datetime.now(UTC)


class OutboxTransaction:
    """One write transaction on the outbox database: the caller's changes and its events."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self.events: list[Event] = []

    @property
    def connection(self) -> sqlite3.Connection:
        return self._outbox.connection

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        """Run one statement of the caller's state change inside this transaction."""
        return self._outbox.connection.execute(sql, parameters)

    def append(self, event_type: str, **payload: Any) -> Event | None:
        """Validate, number and store one event; None when a low-value event was dropped."""
        event = self._outbox._insert(event_type, payload)
        if event is not None:
            self.events.append(event)
        return event


class Outbox:
    """Append-only event store with a pending/sent/quarantined state per event."""

    def __init__(
        self,
        path: Path,
        kiosk_id: str,
        clock: Clock = utc_now,
        max_bytes: int = 512 * 1024 * 1024,
        busy_timeout_s: float = 10.0,
        *,
        read_only: bool = False,
    ) -> None:
        """Open (creating it, 0600) the outbox at ``path``. ``read_only``, for commands that
        only look: the outbox must exist (``OutboxMissingError`` otherwise) and nothing is
        created or written."""
        self.path = path
        self.kiosk_id = kiosk_id
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._in_tx = False
        self._sync_full = True
        # the last write failed because the disk was full; cleared by the next that commits
        self.disk_full = False
        self.connection = open_outbox_db(path, busy_timeout_s, read_only)
        self.db = sqlite_utils.Database(self.connection)

    # -- writing ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[OutboxTransaction]:
        """A write transaction (``BEGIN IMMEDIATE``, durable commit) for state + events."""
        with self._lock:
            if self._in_tx:
                raise OutboxError("outbox transactions do not nest")
            try:
                self._set_sync(full=True)
                self.connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: cannot start a transaction ({exc})") from None
            self._in_tx = True
            tx = OutboxTransaction(self)
            try:
                yield tx
                self.connection.execute("COMMIT")
                self.disk_full = False
            except BaseException as exc:
                if self.connection.in_transaction:
                    self.connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc, "commit") from None
                raise
            finally:
                self._in_tx = False

    def append(self, event_type: str, **payload: Any) -> Event | None:
        """Validate, number and durably store one event in a transaction of its own.

        Returns None when a telemetry or ops event was dropped for lack of room.
        """
        telemetry = CLASS_OF.get(event_type) == "telemetry"
        with self._lock:
            self._set_sync(full=not telemetry)
            try:
                self.connection.execute("BEGIN IMMEDIATE")
                self._in_tx = True
                event = self._insert(event_type, payload)
                reserved = (
                    telemetry
                    and event is not None
                    and outbox_seq.reserve(self.connection, event.seq)
                )
                self.connection.execute("COMMIT")
                self.disk_full = False
            except BaseException as exc:
                if self.connection.in_transaction:
                    self.connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc, f"store a {event_type} event") from None
                raise
            finally:
                self._in_tx = False
            if reserved:  # the new mark is on the disk before the number can be lost
                with self._write("reserve sequence numbers") as db:
                    outbox_seq.barrier(db)
        return event

    def _set_sync(self, full: bool) -> None:
        if full != self._sync_full:
            self.connection.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._sync_full = full

    def _translate(self, exc: sqlite3.Error, what: str) -> OutboxError:
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL:
            self.disk_full = True
            return OutboxFullError(f"{self.path}: the disk is full; cannot {what}")
        return OutboxError(f"{self.path}: cannot {what} ({exc})")

    def _insert(self, event_type: str, fields: dict[str, Any]) -> Event | None:
        """Inside an open transaction: number, budget-check and insert one event."""
        if not self._in_tx:
            raise OutboxError("append inside outbox.transaction() only")
        body = payload_for(event_type, **fields)
        occurred_at = self._clock()
        db = self.connection
        (seq,) = db.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'last_seq' RETURNING value"
        ).fetchone()
        event = Event(
            id=str(ULID.from_datetime(occurred_at)),
            kiosk_id=self.kiosk_id,
            seq=int(seq),
            type=event_type,
            occurred_at=occurred_at,
            payload=body,
        )
        text = event.to_json()
        size = len(text.encode("utf-8")) + ROW_OVERHEAD
        event_class = CLASS_OF[event_type]
        if not make_room(db, size, event_class, self.max_bytes):
            if event_class == "money":
                raise OutboxFullError(
                    f"{self.path}: no room for a {event_type} event: the outbox holds "
                    f"{used_bytes(db)} of {self.max_bytes} bytes in events the cloud has not "
                    "acknowledged; rentals stop until the kiosk syncs"
                )
            count_dropped(db, event_class, 1)
            log.warning("outbox.dropped", type=event_type, seq=event.seq, reason="outbox full")
            return None
        try:
            db.execute(
                "INSERT INTO events (seq, id, type, class, occurred_at, created_at, size, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    event.seq,
                    event.id,
                    event_type,
                    event_class,
                    event.occurred_at.isoformat(),
                    time.time(),
                    size,
                    text,
                ],
            )
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'bytes_used'", [size])
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL and event_class != "money":
                count_dropped(db, event_class, 1)
                return None
            raise
        return event

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._set_sync(full=True)
                self.connection.execute("BEGIN IMMEDIATE")
                yield self.connection
                self.connection.execute("COMMIT")
                self.disk_full = False
            except BaseException as exc:
                if self.connection.in_transaction:
                    self.connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc, what) from None
                raise

    # -- the sync daemon's side -------------------------------------------------------------

    def next_batch(
        self, limits: BatchLimits, live_window_s: float, exclude: Set[int] = frozenset()
    ) -> list[Pending]:
        """The next events to send, live first (see ``cloud_sync.batching``), leaving out
        ``exclude`` and the events that failed alone (``failing_pending`` has those)."""
        cutoff = time.time() - live_window_s
        with self._lock:
            live = self.connection.execute(
                "SELECT seq, size FROM events WHERE state = 'pending' AND created_at >= ? "
                "AND failures = 0 ORDER BY created_at, seq LIMIT ?",
                [cutoff, limits.max_events + len(exclude)],
            ).fetchall()
            backlog = self.connection.execute(
                "SELECT seq, size FROM events WHERE state = 'pending' AND failures = 0 "
                "ORDER BY seq LIMIT ?",
                [limits.max_events + len(exclude)],
            ).fetchall()
            seqs = plan_batch(
                [Candidate(s, z) for s, z in live if s not in exclude],
                [Candidate(s, z) for s, z in backlog if s not in exclude],
                limits,
            )
            if not seqs:
                return []
            rows = self.connection.execute(
                f"SELECT seq, id, type, body FROM events WHERE seq IN ({','.join('?' * len(seqs))}) "  # noqa: S608
                "ORDER BY seq",
                seqs,
            ).fetchall()
        return self._durable(
            [Pending(seq, event_id, kind, body) for seq, event_id, kind, body in rows]
        )

    def _durable(self, batch: list[Pending]) -> list[Pending]:
        """``batch``, once every event in it is on disk (``outbox_seq``: telemetry events
        are committed at NORMAL; one FULL commit fsyncs the WAL they are in)."""
        if any(CLASS_OF.get(item.type) == "telemetry" for item in batch):
            with self._write("make the batch durable") as db:
                outbox_seq.barrier(db)
        return batch

    def renumber(self, conflicts: dict[int, int]) -> dict[int, int]:
        """Give the pending events whose seq the cloud holds for another event (``{seq:
        the cloud's highest seq}``) new numbers above it, keeping their ids."""
        if not conflicts:
            return {}
        with self._write("renumber events") as db:
            moved = outbox_seq.renumber(db, list(conflicts), max(conflicts.values()))
        if moved:
            log.warning("outbox.renumbered", moved=moved)
        return moved

    def mark_sent(self, ids: list[str]) -> int:
        """The cloud acknowledged these events (accepted or duplicate)."""
        if not ids:
            return 0
        now = time.time()
        changed = 0
        with self._write("mark events sent") as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                cursor = db.execute(
                    f"UPDATE events SET state = 'sent', sent_at = ? WHERE state = 'pending' "  # noqa: S608
                    f"AND id IN ({','.join('?' * len(chunk))})",
                    [now, *chunk],
                )
                changed += cursor.rowcount
        return changed

    def quarantine(self, reasons: dict[int, str]) -> list[Quarantined]:
        """Set pending events (by ``seq``) aside with the cloud's reason; they are not
        resent. Returns those that were pending."""
        with self._write("quarantine events") as db:
            changed = refused.quarantine(db, reasons)
        refused.log_quarantined(changed)
        return changed

    def record_failure(self, seq: int, reason: str) -> int:
        """The event failed alone while the cloud took others; its failure count."""
        with self._write("count a failed event") as db:
            return refused.record_failure(db, seq, reason)

    def requeue(self, seqs: list[int] | None = None) -> int:
        """Put quarantined events (all, or those in ``seqs``) back to pending."""
        with self._write("requeue events") as db:
            return refused.requeue(db, seqs)

    def prune_sent(self, older_than_s: float) -> int:
        """Delete acknowledged events sent more than ``older_than_s`` seconds ago."""
        cutoff = time.time() - older_than_s
        with self._write("prune sent events") as db:
            (freed, count) = db.execute(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM events "
                "WHERE state = 'sent' AND sent_at < ?",
                [cutoff],
            ).fetchone()
            db.execute("DELETE FROM events WHERE state = 'sent' AND sent_at < ?", [cutoff])
            db.execute("UPDATE meta SET value = value - ? WHERE key = 'bytes_used'", [freed])
        return int(count)

    def record_attempt(self, error: str | None) -> None:
        """Remember how the last exchange with the cloud went (for ``kiosk sync status``)."""
        now = self._clock().isoformat()
        with self._write("record the sync result") as db:
            if error is None:
                db.execute("UPDATE meta SET value = ? WHERE key = 'last_success_at'", [now])
                db.execute("UPDATE meta SET value = NULL WHERE key = 'last_error'")
            else:
                db.execute("UPDATE meta SET value = ? WHERE key = 'last_error'", [error[:1000]])
                db.execute("UPDATE meta SET value = ? WHERE key = 'last_error_at'", [now])

    # -- reading ------------------------------------------------------------------------------

    def events(self, state: str | None = None, limit: int = 1000) -> list[Event]:
        """Stored events in ``seq`` order, optionally only those in ``state``."""
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        with self._lock:
            rows = self.connection.execute(
                f"SELECT body FROM events {where} ORDER BY seq LIMIT ?",  # noqa: S608
                [*args, limit],
            ).fetchall()
        return [Event.model_validate_json(body) for (body,) in rows]

    def count(self, state: str | None = None) -> int:
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        with self._lock:
            row = self.connection.execute(
                f"SELECT COUNT(*) FROM events {where}",  # noqa: S608
                args,
            ).fetchone()
        return int(row[0])

    def pending_of(self, event_type: str) -> int:
        """How many events of ``event_type`` wait for the cloud."""
        with self._lock:
            row = self.connection.execute(
                "SELECT COUNT(*) FROM events WHERE state = 'pending' AND type = ?", [event_type]
            ).fetchone()
        return int(row[0])

    def recent_of(self, event_type: str, since: float) -> list[Event]:
        """Stored events of ``event_type``, in any state, that occurred at or after
        ``since`` (epoch seconds), in ``seq`` order (sent events stay until ``keep_sent_s``)."""
        with self._lock:
            rows = self.connection.execute(
                "SELECT body FROM events WHERE type = ? "
                "AND (julianday(occurred_at) - 2440587.5) * 86400.0 >= ? ORDER BY seq",
                [event_type, since],
            ).fetchall()
        return [Event.model_validate_json(body) for (body,) in rows]

    def quarantined(self, limit: int = 100) -> list[Quarantined]:
        """``(seq, id, type, reason)`` of quarantined events, oldest first."""
        with self._lock:
            return refused.quarantined(self.connection, limit)

    def failing(self, limit: int = 100) -> list[Failing]:
        """Pending events that failed alone (see ``outbox_quarantine``), oldest first."""
        with self._lock:
            return refused.failing(self.connection, limit)

    def failing_pending(self, limit: int, exclude: Set[int] = frozenset()) -> list[Pending]:
        with self._lock:
            found = refused.failing_pending(self.connection, limit, exclude)
        return self._durable(found)

    def last_acknowledged(self) -> Pending | None:
        with self._lock:
            return refused.last_acknowledged(self.connection)

    def stats(self) -> Stats:
        """Depth per class, oldest pending age, quarantine, drops, last success and error."""
        with self._lock:
            return read_stats(self.connection, self.max_bytes)

    def scrub_wal(self) -> bool:
        """Checkpoint and truncate the WAL, so that deleted rows leave it too; False when a
        reader of another process is in the way (SQLite's next checkpoint does it)."""
        with self._lock:
            row = self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not row[0]

    def close(self) -> None:
        with self._lock:
            self.connection.close()
