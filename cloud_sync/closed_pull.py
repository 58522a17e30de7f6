"""Rentals closed elsewhere: ask the cloud which of this kiosk's rentals it closed.

A powerbank rented here and returned at another kiosk closes the rental in the cloud; the
kiosk learns it from ``GET /v1/rentals:closed?since=CURSOR`` and hands the ids to a
callback (``edge.cabinet.rentals.Ledger.close_confirmed``: cloud_sync does not know the ledger).
The cursor lives in the outbox's ``meta`` table and advances only after the callback
returned, so a crash in between sends the same ids again, which the ledger ignores.

Every fetch also leaves its outcome in ``meta`` (when, how many rentals it closed, its
error or the time of its success; keys in ``outbox_schema``), which ``kiosk sync status``
reads without the network (``read_fetch_state``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from cloud_sync.errors import OutboxError, SyncError
from cloud_sync.outbox import Clock, Outbox, utc_now
from cloud_sync.outbox_schema import (
    CLOSED_COUNT_KEY,
    CLOSED_CURSOR_KEY,
    CLOSED_ERROR_AT_KEY,
    CLOSED_ERROR_KEY,
    CLOSED_FETCHED_AT_KEY,
    CLOSED_SUCCESS_AT_KEY,
)

if TYPE_CHECKING:  # ``kiosk sync status`` reads the state without loading the HTTP stack
    from cloud_sync.client import CloudClient

log = structlog.get_logger("cloud_sync.daemon")

CURSOR_KEY = CLOSED_CURSOR_KEY
MAX_PAGES = 20  # per pull; the rest waits for the next pass
_UPSERT = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


@dataclass
class ClosedPull:
    """What one pull of closed rentals did."""

    from_cursor: int
    to_cursor: int
    confirmed: int = 0  # ids the cloud sent
    closed: int = 0  # rentals the callback closed (still open here until now)
    error: str | None = None
    retry_after: float | None = None  # the cloud's Retry-After, when it failed with one


@dataclass(frozen=True)
class FetchState:
    """How the last fetches of closed rentals went, for ``kiosk sync status``."""

    cursor: int
    fetched_at: str | None  # the last fetch, whatever its outcome
    closed: int  # rentals that fetch closed here
    success_at: str | None  # the last fetch that ended without an error
    error: str | None  # the last fetch's error; None once one succeeds again
    error_at: str | None


def closed_cursor(outbox: Outbox) -> int:
    row = outbox.connection.execute(
        "SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)
    ).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def read_fetch_state(outbox: Outbox) -> FetchState:
    """The cursor and the outcome of the last fetch, as recorded in the outbox."""
    keys = (
        CLOSED_CURSOR_KEY,
        CLOSED_FETCHED_AT_KEY,
        CLOSED_COUNT_KEY,
        CLOSED_SUCCESS_AT_KEY,
        CLOSED_ERROR_KEY,
        CLOSED_ERROR_AT_KEY,
    )
    marks = ", ".join("?" * len(keys))
    rows = outbox.connection.execute(
        f"SELECT key, value FROM meta WHERE key IN ({marks})",  # noqa: S608
        keys,
    ).fetchall()
    meta: dict[str, Any] = dict(rows)
    return FetchState(
        cursor=int(meta.get(CLOSED_CURSOR_KEY) or 0),
        fetched_at=meta.get(CLOSED_FETCHED_AT_KEY),
        closed=int(meta.get(CLOSED_COUNT_KEY) or 0),
        success_at=meta.get(CLOSED_SUCCESS_AT_KEY),
        error=meta.get(CLOSED_ERROR_KEY) or None,
        error_at=meta.get(CLOSED_ERROR_AT_KEY),
    )


def _save_cursor(outbox: Outbox, cursor: int) -> None:
    with outbox.transaction() as tx:
        tx.execute(_UPSERT, (CURSOR_KEY, cursor))


def _record(outbox: Outbox, result: ClosedPull, now: datetime) -> None:
    """Keep the outcome for ``kiosk sync status``; the error stays until a fetch succeeds."""
    when = now.isoformat()
    values: list[tuple[str, Any]] = [
        (CLOSED_FETCHED_AT_KEY, when),
        (CLOSED_COUNT_KEY, result.closed),
    ]
    if result.error is None:
        values += [(CLOSED_SUCCESS_AT_KEY, when), (CLOSED_ERROR_KEY, None)]
    else:
        values += [(CLOSED_ERROR_KEY, result.error[:1000]), (CLOSED_ERROR_AT_KEY, when)]
    with outbox.transaction() as tx:
        for key, value in values:
            tx.execute(_UPSERT, (key, value))


def pull_closed(
    outbox: Outbox,
    client: CloudClient,
    close_rentals: Callable[[list[str]], int],
    stopping: Callable[[], bool] = lambda: False,
    clock: Clock = utc_now,
) -> ClosedPull:
    """Pages of closed rentals until the cloud has no more (at most ``MAX_PAGES``); never
    raises for an unreachable cloud or a busy outbox: nothing more changes, the error is
    logged, recorded and returned."""
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
        result.retry_after = getattr(exc, "retry_after", None)
    try:
        _record(outbox, result, clock())
    except (OutboxError, sqlite3.Error) as exc:  # the rentals are closed; only the note is lost
        log.warning("rentals.closed_pull_not_recorded", error=str(exc))
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
