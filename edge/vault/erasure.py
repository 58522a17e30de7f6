"""Erasing deleted riders' bytes from the roster's files, with a bounded wait.

``secure_delete`` zeroes a deleted row in the pages SQLite writes, but in WAL mode those
pages first go to the ``-wal`` file: the database file keeps the old page, with the rider's
sealed row and id, until a checkpoint copies the new one back, and the WAL keeps earlier
copies until it is truncated. ``wal_checkpoint(TRUNCATE)`` does both, but it cannot finish
while another connection (``kiosk run`` looking at the roster, a copy being read) is in
the middle of a read.

So a deletion that cannot be checkpointed within ``wait_s`` is remembered in the roster's
``meta`` table (``erase_pending_at``), said plainly by the command that asked for it, and
finished later by whichever writer opens the roster next (the running kiosk, the sync
service, the next roster command), which logs ``roster.erasure_completed``.
"""

from __future__ import annotations

import sqlite3
import time

PENDING_KEY = "erase_pending_at"
#: How long a deletion waits for readers by default (setting ``roster.erase_wait_s``).
DEFAULT_WAIT_S = 3.0
#: SQLite's own wait for a lock, restored after each attempt.
BUSY_TIMEOUT_MS = 5000


def truncate_wal(db: sqlite3.Connection, wait_s: float) -> bool:
    """Checkpoint the WAL into the database and truncate it, trying for at most ``wait_s``
    seconds (at least once). True when done: no deleted byte is left in either file."""
    deadline = time.monotonic() + max(wait_s, 0.0)
    pause = 0.02
    db.execute("PRAGMA busy_timeout=50")
    try:
        while True:
            try:
                busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError:  # locked by a writer right now
                busy = 1
            if not busy:
                return True
            if time.monotonic() + pause > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
    finally:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def pending_since(db: sqlite3.Connection) -> float | None:
    """When a deletion started waiting for its bytes to leave the disk; None if none waits."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (PENDING_KEY,)).fetchone()
    except sqlite3.Error:
        return None
    try:
        return float(row[0]) if row and row[0] else None
    except ValueError:
        return None
