"""``kiosk-cloud fleet``: every kiosk's latest status, as a table or JSON.

Like the other administration commands it reads the database directly (no running server
needed) and only reads: a missing SQLite database is one line naming ``kiosk-cloud
migrate``. The same rows are served at ``GET /v1/admin/fleet``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cloud_sync.server.config import load_cloud_settings
from cloud_sync.server.db import open_database, quiet_pool_logs, require_database
from cloud_sync.server.fleet_status import DEFAULT_OFFLINE_AFTER_S, FleetKiosk, read_fleet
from cloud_sync.server.migrations import migrate

SUMMARY = (
    "Every kiosk's latest status: last seen, online, free slots, charged powerbanks, "
    "backlog, roster lag, version; flagged batteries."
)
_COLUMNS = (
    ("KIOSK", 20),
    ("LAST SEEN", 20),
    ("ONLINE", 7),
    ("FREE", 5),
    ("CHARGED", 8),
    ("BACKLOG", 8),
    ("ROSTER LAG", 11),
    ("VERSION", 12),
)


def fleet(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON array with every field, slots included.")
    ] = False,
    offline_after_s: Annotated[
        float,
        typer.Option(
            "--offline-after",
            min=1,
            max=30 * 86400,
            metavar="S",
            help="A kiosk whose latest status arrived longer ago than S seconds is offline "
            f"(default {DEFAULT_OFFLINE_AFTER_S:g}: three of the kiosks' default "
            "sync.status_interval_s).",
        ),
    ] = DEFAULT_OFFLINE_AFTER_S,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="sqlite:///FILE or postgresql://... (default: KIOSK_CLOUD_DATABASE_URL, "
            "else sqlite:///cloud.sqlite).",
            metavar="URL",
        ),
    ] = None,
) -> None:
    """Every kiosk's latest status: last seen, online, free slots, charged powerbanks,
    backlog, roster lag, version; flagged batteries.

    A kiosk reports a kiosk.status every sync.status_interval_s (300 s by default); one
    that never reported shows "never". Below the table, each powerbank a kiosk stopped
    renting (too hot, or not charging) is named with its slot.
    """
    settings = load_cloud_settings(database_url=database_url)
    require_database(settings.database_url)
    quiet_pool_logs()
    database = open_database(settings.database_url, pool_size=1)
    try:
        migrate(database)
        kiosks = read_fleet(database, offline_after_s)
    finally:
        database.close()
    if as_json:
        typer.echo(json.dumps([kiosk.model_dump(mode="json") for kiosk in kiosks], indent=2))
        return
    typer.echo(_line([title for title, _ in _COLUMNS]))
    for kiosk in kiosks:
        typer.echo(_line(_cells(kiosk)))
    for kiosk in kiosks:
        for bank in kiosk.flagged:
            where = f"{kiosk.kiosk_id} slot {bank.slot}"
            heat = "" if bank.temperature is None else f", {bank.temperature} C"
            charge = "" if bank.charge is None else f", {bank.charge} %"
            typer.echo(f"flagged: {bank.powerbank_id} at {where}: {bank.health}{heat}{charge}")


def _cells(kiosk: FleetKiosk) -> list[str]:
    def shown(value: object) -> str:
        return "-" if value is None else str(value)

    seen = "never" if kiosk.last_seen is None else kiosk.last_seen[:19].replace("T", " ")
    return [
        kiosk.kiosk_id,
        seen,
        "yes" if kiosk.online else "no",
        shown(kiosk.free_slots),
        shown(kiosk.charged),
        shown(kiosk.backlog),
        shown(kiosk.roster_lag),
        shown(kiosk.version),
    ]


def _line(cells: list[str]) -> str:
    return " ".join(
        cell.ljust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True)
    ).rstrip()
