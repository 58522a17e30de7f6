"""``kiosk-cloud kiosks``: list the registered kiosks; ``kiosks revoke ID`` revokes one.

Like the other administration commands they work on the database directly (and on the
roster key files named by the settings), so they need no running server; the audit log
names them ``cli:USER``. What revoking does is ``revocation``'s. A running API refuses
the revoked kiosk's roster pulls at once (it reads the registry afresh for them) and its
other requests within a few seconds (the time it caches a kiosk's key).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated

import typer

from cloud_sync.errors import InputError
from cloud_sync.server.audit import Entry, cli_actor
from cloud_sync.server.config import load_cloud_settings
from cloud_sync.server.db import open_database, quiet_pool_logs, require_database
from cloud_sync.server.migrations import migrate
from cloud_sync.server.problems import Problem
from cloud_sync.server.revocation import revoke
from cloud_sync.server.roster import open_cloud_roster
from cloud_sync.server.store import KioskRecord, Store

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///FILE or postgresql://... (default: KIOSK_CLOUD_DATABASE_URL, "
        "else sqlite:///cloud.sqlite).",
        metavar="URL",
    ),
]

kiosks_app = typer.Typer(
    help="List registered kiosks (JSON lines); revoke one.",
    invoke_without_command=True,
)


@kiosks_app.callback()
def kiosks(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """List registered kiosks (JSON lines); revoke one."""
    if ctx.invoked_subcommand is not None:
        return
    settings = load_cloud_settings(database_url=database_url)
    require_database(settings.database_url)
    quiet_pool_logs()
    database = open_database(settings.database_url, pool_size=2)
    try:
        migrate(database)
        for record in Store(database).kiosks():
            typer.echo(json.dumps(record.__dict__))
    finally:
        database.close()


@kiosks_app.command("revoke")
def kiosks_revoke(
    kiosk_id: Annotated[str, typer.Argument(metavar="ID", help="The kiosk to revoke.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a kiosk (stolen, or its SD card copied): the cloud refuses its requests,
    re-seals the roster under a new data key for every other kiosk, and orders it to wipe
    its roster at its next pull. Revoking it again changes nothing and says so."""
    settings = load_cloud_settings(database_url=database_url)
    require_database(settings.database_url)
    quiet_pool_logs()
    database = open_database(settings.database_url, pool_size=2)
    try:
        migrate(database)
        roster = open_cloud_roster(settings, database)
        entry = Entry(cli_actor(), "kiosk.revoke", kiosk_id, {})
        done = revoke(Store(database), roster, kiosk_id, audit=entry.write)
    except Problem as problem:
        raise InputError(problem.reason) from None
    finally:
        database.close()
    if done.already:
        typer.echo(f"kiosk {kiosk_id} was already revoked; nothing changed")
    elif done.data_key_id is None:
        typer.echo(f"revoked {kiosk_id} (this cloud serves no roster: no key to rotate)")
    else:
        typer.echo(
            f"revoked {kiosk_id}; {done.riders} rider(s) re-sealed under data key "
            f"{done.data_key_id} (roster version {done.roster_version}): every other kiosk "
            "gets a full snapshot at its next pull, and this one an order to wipe its roster"
        )


def registry_lookup(database_url: str | None) -> Callable[[str], KioskRecord | None] | None:
    """For ``kiosk-cloud command send``: a function reading a kiosk's record (revoked or
    not, its public key) from the cloud's database; None when no database is configured
    (neither ``--database-url`` nor ``KIOSK_CLOUD_DATABASE_URL``) and the default one is
    absent."""
    settings = load_cloud_settings(database_url=database_url)
    named = database_url is not None or "KIOSK_CLOUD_DATABASE_URL" in os.environ
    if not named:
        try:
            require_database(settings.database_url)
        except ValueError:
            return None
    require_database(settings.database_url)
    url = settings.database_url

    def lookup(kiosk_id: str) -> KioskRecord | None:
        quiet_pool_logs()
        database = open_database(url, pool_size=1)
        try:
            return Store(database).kiosk(kiosk_id)
        finally:
            database.close()

    return lookup
