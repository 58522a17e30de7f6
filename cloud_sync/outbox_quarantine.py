"""The outbox's events the cloud will not take: failures counted per event, quarantine,
requeue.

Functions on the outbox's connection; the ``Outbox`` runs the writes inside its own write
transaction (one lock, ``BEGIN IMMEDIATE``). Nothing here deletes an event:

- ``record_failure``: an event failed alone (a 5xx, a timeout, a reset) while the cloud took
  other events; its ``failures`` count goes up, with the reason, and the sync daemon sends it
  alone from then on;
- ``quarantine``: the cloud refused an event (a 4xx naming it, or ``failures`` reached
  ``sync.quarantine_after``): it is set aside with the reason and no longer sent;
- ``requeue``: a technician puts quarantined events back to pending, their count reset.

A quarantined money event (a rental the cloud does not know of) is logged at error level.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Set

import structlog

from cloud_sync.outbox_schema import Failing, Pending, Quarantined, counts_failures

log = structlog.get_logger("cloud_sync.outbox")

REASON_MAX = 500


def record_failure(db: sqlite3.Connection, seq: int, reason: str) -> int:
    """Count one more failure of the pending event ``seq``; its count (0: not pending)."""
    row = db.execute(
        "UPDATE events SET failures = failures + 1, last_failure = ? "
        "WHERE seq = ? AND state = 'pending' RETURNING failures",
        [reason[:REASON_MAX], seq],
    ).fetchone()
    return 0 if row is None else int(row[0])


def quarantine(db: sqlite3.Connection, reasons: dict[int, str]) -> list[Quarantined]:
    """Set pending events (by ``seq``) aside with their reason; those that changed."""
    changed = []
    for seq, reason in reasons.items():
        row = db.execute(
            "UPDATE events SET state = 'quarantined', reason = ? "
            "WHERE seq = ? AND state = 'pending' RETURNING seq, id, type, reason",
            [reason[:REASON_MAX], seq],
        ).fetchone()
        if row is not None:
            changed.append(Quarantined(int(row[0]), str(row[1]), str(row[2]), str(row[3])))
    return changed


def log_quarantined(events: list[Quarantined]) -> None:
    """One warning for the lot; an error for each money event (the cloud has no record of
    that rental or return until a technician requeues it)."""
    if not events:
        return
    log.warning(
        "outbox.quarantined",
        count=len(events),
        reasons=sorted({event.reason for event in events}),
    )
    for event in events:
        if event.money:
            log.error(
                "outbox.quarantined_money",
                seq=event.seq,
                id=event.id,
                type=event.type,
                reason=event.reason,
                fix="see docs/operations.md (quarantined events); kiosk sync requeue",
            )


def requeue(db: sqlite3.Connection, seqs: Iterable[int] | None) -> int:
    """Quarantined events (all, or those in ``seqs``) back to pending, failures reset."""
    reset = "state = 'pending', reason = NULL, failures = 0, last_failure = NULL"
    if seqs is None:
        cursor = db.execute(
            f"UPDATE events SET {reset} WHERE state = 'quarantined'"  # noqa: S608 - constant
        )
        return cursor.rowcount
    changed = 0
    for seq in seqs:
        cursor = db.execute(
            f"UPDATE events SET {reset} WHERE seq = ? AND state = 'quarantined'",  # noqa: S608
            [seq],
        )
        changed += cursor.rowcount
    return changed


def quarantined(db: sqlite3.Connection, limit: int) -> list[Quarantined]:
    """Quarantined events, oldest first."""
    rows = db.execute(
        "SELECT seq, id, type, reason FROM events WHERE state = 'quarantined' ORDER BY seq LIMIT ?",
        [limit],
    ).fetchall()
    return [Quarantined(int(a), str(b), str(c), str(d or "")) for a, b, c, d in rows]


def failing(db: sqlite3.Connection, limit: int) -> list[Failing]:
    """Pending events that failed alone, oldest first."""
    if not counts_failures(db):
        return []
    rows = db.execute(
        "SELECT seq, id, type, failures, last_failure FROM events "
        "WHERE state = 'pending' AND failures > 0 ORDER BY seq LIMIT ?",
        [limit],
    ).fetchall()
    return [Failing(int(a), str(b), str(c), int(d), str(e or "")) for a, b, c, d, e in rows]


def failing_pending(db: sqlite3.Connection, limit: int, exclude: Set[int]) -> list[Pending]:
    """Up to ``limit`` pending events that failed alone, oldest first, as the daemon sends
    them (one at a time), leaving out ``exclude``."""
    rows = db.execute(
        "SELECT seq, id, type, body FROM events WHERE state = 'pending' AND failures > 0 "
        "ORDER BY seq LIMIT ?",
        [limit + len(exclude)],
    ).fetchall()
    found = [Pending(int(a), str(b), str(c), str(d)) for a, b, c, d in rows if a not in exclude]
    return found[:limit]


def last_acknowledged(db: sqlite3.Connection) -> Pending | None:
    """The newest event the cloud acknowledged and the outbox still keeps: sent again, the
    cloud answers "duplicate" and stores nothing, which shows that it takes events."""
    row = db.execute(
        "SELECT seq, id, type, body FROM events WHERE state = 'sent' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    return None if row is None else Pending(int(row[0]), str(row[1]), str(row[2]), str(row[3]))
