"""``kiosk-cloud riders erasure ID``: which kiosks confirmed that a deleted rider is gone."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from cloud_sync.errors import InputError
from cloud_sync.server.erasure import erasure_status
from cloud_sync.server.models import PERSON_ID_PATTERN
from cloud_sync.server.roster_cli import DatabaseUrl, _roster
from cloud_sync.wire_values import printable


def riders_erasure(
    person_id: Annotated[str, typer.Argument(help="The deleted rider.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show a deleted rider's erasure: when and why, their pseudonym in the records, and
    for each kiosk whether it confirmed (roster.erased), holds a roster past the deletion,
    never held them, or has not yet (with when it was last seen). Only reads."""
    if len(person_id) > 128 or not re.fullmatch(PERSON_ID_PATTERN, person_id):
        raise InputError(f"{printable(person_id, 64)!r} is not a rider id")
    with _roster(database_url, reading=True) as roster, roster.db.transaction() as tx:
        found = erasure_status(tx, person_id)
    if found is None:
        raise InputError(f"no deletion of rider {person_id} is on record")
    if as_json:
        typer.echo(json.dumps(found))
        return
    typer.echo(
        f"{person_id}: deleted {found['deleted_at']} ({found['reason']}), roster version "
        f"{found['roster_version']}, recorded as {found['pseudonym']}"
        + ("; kept by id until their open rentals close" if found["kept_for_open_rentals"] else "")
    )
    for kiosk in found["kiosks"]:
        when = kiosk["erased_at"] or ""
        seen = f"last seen {kiosk['last_seen']}" if kiosk["last_seen"] else "never seen"
        typer.echo(f"  {kiosk['kiosk_id']:<24} {kiosk['state']:<11} {when:<28} {seen}")
    waiting = found["waiting"]
    typer.echo(
        f"{found['erased']} of {len(found['kiosks'])} kiosk(s) erased"
        + (f"; waiting for {', '.join(waiting)}" if waiting else "")
    )
