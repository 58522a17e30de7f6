"""Rentals closed elsewhere: ask the cloud which of this kiosk's rentals it closed.

A powerbank rented here and returned at another kiosk closes the rental in the cloud; the
kiosk learns it from ``GET /v1/rentals:closed?since=CURSOR`` and hands the ids to a
callback (``edge.rentals.Ledger.close_confirmed``: cloud_sync does not know the ledger).
The cursor lives in the outbox's ``meta`` table and advances only after the callback
returned, so a crash in between sends the same ids again, which the ledger ignores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from cloud_sync.client import CloudClient
from cloud_sync.errors import SyncError
from cloud_sync.outbox import Outbox

log = structlog.get_logger("cloud_sync.daemon")

CURSOR_KEY = "closed_rentals_cursor"
MAX_PAGES = 20  # per pull; the rest waits for the next pass


@dataclass
class ClosedPull:
    """What one pull of closed rentals did."""

    from_cursor: int
    to_cursor: int
    confirmed: int = 0  # ids the cloud sent
    closed: int = 0  # rentals the callback closed (still open here until now)
    error: str | None = None


def closed_cursor(outbox: Outbox) -> int:
    row = outbox.connection.execute(
        "SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)
    ).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def _save_cursor(outbox: Outbox, cursor: int) -> None:
    with outbox.transaction() as tx:
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (CURSOR_KEY, cursor),
        )


def pull_closed(
    outbox: Outbox,
    client: CloudClient,
    close_rentals: Callable[[list[str]], int],
    stopping: Callable[[], bool] = lambda: False,
) -> ClosedPull:
    """Pages of closed rentals until the cloud has no more (at most ``MAX_PAGES``); never
    raises for an unreachable cloud or a busy outbox: nothing more changes, the error is
    logged and returned."""
    result = ClosedPull(0, 0)
    try:
        result.from_cursor = result.to_cursor = closed_cursor(outbox)
        for _ in range(MAX_PAGES):
            page = client.get_closed_rentals(result.to_cursor)
            ids = [rental.rental_id for rental in page.rentals]
            if ids:
                result.closed += close_rentals(ids)
                result.confirmed += len(ids)
            if page.cursor != result.to_cursor:
                _save_cursor(outbox, page.cursor)  # after the ledger: a crash resends
                result.to_cursor = page.cursor
            if not page.more or not ids or stopping():
                break
    except (SyncError, sqlite3.Error) as exc:
        result.error = str(exc)
    if result.confirmed or result.error:
        log.info(
            "rentals.closed_pull",
            from_cursor=result.from_cursor,
            to_cursor=result.to_cursor,
            confirmed=result.confirmed,
            closed=result.closed,
            error=result.error,
        )
    return result
