"""``kiosk-cloud rentals | powerbanks``: rentals by state, the rentals sweep, custody.

Like the other administration commands they work on the database directly, so they need
no running server; the listings only read (a missing SQLite database is one line naming
``kiosk-cloud migrate``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from cloud_sync.errors import InputError
from cloud_sync.server.config import load_cloud_settings
from cloud_sync.server.custody_views import POWERBANK_STATES, RENTAL_STATES, powerbanks
from cloud_sync.server.db import Database, open_database, quiet_pool_logs, require_database
from cloud_sync.server.migrations import migrate
from cloud_sync.server.store import Store
from cloud_sync.server.sweep import sweep

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///FILE or postgresql://... (default: KIOSK_CLOUD_DATABASE_URL, "
        "else sqlite:///cloud.sqlite).",
        metavar="URL",
    ),
]

rentals_app = typer.Typer(
    help="List rentals by state (JSON lines); mark overdue and lost ones (sweep).",
    invoke_without_command=True,
)


@contextmanager
def _database(database_url: str | None, reading: bool) -> Iterator[Database]:
    settings = load_cloud_settings(database_url=database_url)
    if reading:
        require_database(settings.database_url)
    quiet_pool_logs()
    database = open_database(settings.database_url, pool_size=2)
    try:
        migrate(database)
        yield database
    finally:
        database.close()


def _one_of(option: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"{option} must be one of {', '.join(allowed)}")
    return value


@rentals_app.callback()
def rentals(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help=f"{', '.join(RENTAL_STATES)} (default open).",
            metavar="STATE",
        ),
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="The same as --state.", metavar="STATE")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 100,
    database_url: DatabaseUrl = None,
) -> None:
    """List rentals by state (JSON lines); mark overdue and lost ones (sweep).

    Each line has the rental's kiosk, id, powerbank, rider, start, status, its return
    (returned_at, return_kiosk_id), due_at, overdue_at, lost_at and review.
    """
    if ctx.invoked_subcommand is not None:
        return
    if state is not None and status is not None and state != status:
        raise InputError("--state and --status disagree (they are the same option)")
    chosen = _one_of("--state", state or status or "open", RENTAL_STATES)
    with _database(database_url, reading=True) as database:
        for row in Store(database).rentals(None if chosen == "all" else chosen, limit):
            typer.echo(json.dumps(row))


@rentals_app.command("sweep")
def rentals_sweep(database_url: DatabaseUrl = None) -> None:
    """Mark open rentals past due as overdue, and overdue ones past the lost delay as lost,
    once (for cron; each API process also does it every KIOSK_CLOUD_SWEEP_INTERVAL_S).
    Prints what it did as JSON; "ran": false when another process was sweeping."""
    settings = load_cloud_settings(database_url=database_url)
    with _database(database_url, reading=False) as database:
        done = sweep(
            database,
            timedelta(seconds=settings.rental_due_s),
            timedelta(seconds=settings.rental_lost_after_s),
            datetime.now(UTC),
        )
    typer.echo(json.dumps(done.__dict__))


def powerbanks_command(
    state: Annotated[
        str,
        typer.Option("--state", help=f"{', '.join(POWERBANK_STATES)}.", metavar="STATE"),
    ] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 1000,
    database_url: DatabaseUrl = None,
) -> None:
    """Where each powerbank is (docked, rented, overdue, lost, maintenance), from the
    events; a flagged one names the events behind each flag."""
    _one_of("--state", state, POWERBANK_STATES)
    with _database(database_url, reading=True) as database:
        found = powerbanks(database, state, limit)
    if as_json:
        for item in found:
            typer.echo(item.model_dump_json())
        return
    typer.echo(f"{'POWERBANK':<20} {'STATE':<12} {'WHERE':<24} {'SEEN':<28} FLAGS")
    for item in found:
        if item.kiosk_id is not None:
            where = f"{item.kiosk_id}/{item.slot}"
        else:
            where = f"{item.person_id} ({item.rental_kiosk_id}/{item.rental_id})"
        typer.echo(
            f"{item.powerbank_id:<20} {item.state:<12} {where:<24} {item.seen_at:<28} "
            f"{len(item.flags)}"
        )
        for flag in item.flags:
            typer.echo(f"  {flag.kind}: {flag.detail} (events {', '.join(flag.event_ids)})")
