"""The outbox's disk budget: what goes when an event does not fit.

Called inside the append transaction. Room is made by deleting, oldest first:
acknowledged (``sent``) events, then pending ``telemetry``, then pending ``ops`` events;
an event never evicts a class above its own and money events are never evicted. Every
evicted pending event is counted in ``meta`` (``dropped_<class>``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import structlog

log = structlog.get_logger("cloud_sync.outbox")

#: Which pending classes an appended event may evict, in eviction order.
EVICTS = {"money": ("telemetry", "ops"), "ops": ("telemetry", "ops"), "telemetry": ("telemetry",)}


def used_bytes(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'bytes_used'").fetchone()
    return int(row[0])


def make_room(db: sqlite3.Connection, size: int, event_class: str, max_bytes: int) -> bool:
    """Free space for ``size`` more bytes by the class policy; False when impossible."""
    need = used_bytes(db) + size - max_bytes
    if need <= 0:
        return True
    need -= _delete_oldest(db, "state = 'sent'", need)
    for victim in EVICTS[event_class]:
        if need <= 0:
            break
        freed = _delete_oldest(db, "state = 'pending' AND class = ?", need, [victim])
        if freed:
            log.warning("outbox.evicted", event_class=victim, bytes=freed)
        need -= freed
    return need <= 0


def could_hold(db: sqlite3.Connection, size: int, event_class: str, max_bytes: int) -> bool:
    """Whether ``make_room`` would succeed for ``size`` bytes: one read, nothing changed."""
    need = used_bytes(db) + size - max_bytes
    if need <= 0:
        return True
    victims = EVICTS[event_class]
    marks = ",".join("?" * len(victims))
    row = db.execute(
        "SELECT COALESCE(SUM(size), 0) FROM events WHERE state = 'sent' "  # noqa: S608
        f"OR (state = 'pending' AND class IN ({marks}))",
        list(victims),
    ).fetchone()
    return int(row[0]) >= need


def reserve(db: sqlite3.Connection, size: int, event_class: str, max_bytes: int) -> bool:
    """Hold ``size`` bytes of the budget for an event not written yet (counted as used until
    ``release``); False, and nothing held, when the room cannot be made."""
    if not make_room(db, size, event_class, max_bytes):
        return False
    db.execute("UPDATE meta SET value = value + ? WHERE key = 'bytes_used'", [size])
    return True


def release(db: sqlite3.Connection, size: int) -> None:
    """Give back bytes held by ``reserve`` (just before the event they were held for)."""
    db.execute("UPDATE meta SET value = value - ? WHERE key = 'bytes_used'", [size])


def count_dropped(db: sqlite3.Connection, event_class: str, count: int) -> None:
    db.execute("UPDATE meta SET value = value + ? WHERE key = ?", [count, f"dropped_{event_class}"])


def _delete_oldest(
    db: sqlite3.Connection, where: str, need: int, args: list[Any] | None = None
) -> int:
    freed = 0
    dropped: dict[str, int] = {}
    while freed < need:
        rows = db.execute(
            f"SELECT seq, size, class, state FROM events WHERE {where} ORDER BY seq LIMIT 256",  # noqa: S608
            args or [],
        ).fetchall()
        if not rows:
            break
        take = []
        for seq, size, event_class, state in rows:
            take.append(seq)
            freed += size
            if state == "pending":
                dropped[event_class] = dropped.get(event_class, 0) + 1
            if freed >= need:
                break
        db.execute(
            f"DELETE FROM events WHERE seq IN ({','.join('?' * len(take))})",  # noqa: S608
            take,
        )
    db.execute("UPDATE meta SET value = value - ? WHERE key = 'bytes_used'", [freed])
    for event_class, count in dropped.items():
        count_dropped(db, event_class, count)
    return freed
