"""Reading the outbox's events for people: the last few, new ones as they come, a range.

Rows are read straight from the outbox's ``events`` table (``seq``, ``state``, the stored
JSON ``body``), a page at a time, so an export of a year of events never holds them all in
memory. Each row becomes the event's own JSON with its outbox ``state`` added (and the
cloud's ``reason`` when it was quarantined).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cloud_sync.errors import InputError
from cloud_sync.outbox import Outbox

PAGE = 1000
_RELATIVE = re.compile(r"^(\d{1,6})\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _row(seq: int, state: str, body: str, reason: str | None) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(body)
    except ValueError:
        data = {"seq": seq, "unreadable": True}
    data["state"] = state
    if reason:
        data["reason"] = reason
    return data


def tail(outbox: Outbox, count: int) -> list[dict[str, Any]]:
    """The last ``count`` events, oldest first."""
    rows = outbox.connection.execute(
        "SELECT seq, state, body, reason FROM events ORDER BY seq DESC LIMIT ?", [count]
    ).fetchall()
    return [_row(*row) for row in reversed(rows)]


def after(outbox: Outbox, seq: int, limit: int = PAGE) -> list[dict[str, Any]]:
    """Events with a ``seq`` above ``seq``, oldest first."""
    rows = outbox.connection.execute(
        "SELECT seq, state, body, reason FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
        [seq, limit],
    ).fetchall()
    return [_row(*row) for row in rows]


def _bounds(since: datetime | None, until: datetime | None) -> tuple[str, str]:
    low = since.astimezone(UTC).isoformat() if since else ""
    high = until.astimezone(UTC).isoformat() if until else "9999"
    return low, high


def count_between(outbox: Outbox, since: datetime | None, until: datetime | None) -> int:
    low, high = _bounds(since, until)
    (count,) = outbox.connection.execute(
        "SELECT COUNT(*) FROM events WHERE occurred_at >= ? AND occurred_at < ?", [low, high]
    ).fetchone()
    return int(count)


def between(
    outbox: Outbox, since: datetime | None, until: datetime | None, page: int = PAGE
) -> Iterator[dict[str, Any]]:
    """Events that occurred in ``[since, until)``, in ``seq`` order, a page at a time.

    ``occurred_at`` is stored as UTC ISO 8601 text, so text order is time order.
    """
    low, high = _bounds(since, until)
    last = 0
    while True:
        rows = outbox.connection.execute(
            "SELECT seq, state, body, reason FROM events "
            "WHERE seq > ? AND occurred_at >= ? AND occurred_at < ? ORDER BY seq LIMIT ?",
            [last, low, high, page],
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield _row(*row)
        last = int(rows[-1][0])


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``2025-06-01``, ``2025-06-01T08:00``, ``...+02:00`` (no zone means UTC), or an age
    before ``now``: ``90m``, ``24h``, ``7d``, ``2w``."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative.group(1)), _UNITS[relative.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{text!r} is not a date: use 2025-06-01, 2025-06-01T08:00[+02:00] or 24h, 7d"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


CSV_COLUMNS = ("seq", "id", "type", "occurred_at", "state", "kiosk_id", "payload", "reason")


def csv_row(event: dict[str, Any]) -> list[str]:
    return [
        str(event.get("seq", "")),
        str(event.get("id", "")),
        str(event.get("type", "")),
        str(event.get("occurred_at", "")),
        str(event.get("state", "")),
        str(event.get("kiosk_id", "")),
        json.dumps(event.get("payload", {}), sort_keys=True),
        str(event.get("reason", "")),
    ]
