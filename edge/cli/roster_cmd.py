"""``kiosk roster``: what the encrypted roster holds, whether it is intact, local changes, and
a pull from the cloud now."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloud_sync.errors import CloudError, DeltaError, OutboxError
from cloud_sync.outbox import Outbox
from cloud_sync.roster_owed import record_owed
from edge.cli.auth import require_technician
from edge.cli.context import state
from edge.cli.progress import spinner
from edge.settings import Settings
from edge.vault.errors import ErasurePendingError, StoreError
from edge.vault.live import open_roster
from edge.vault.owed import Edit
from edge.vault.store import RosterStore
from edge.vision import setup

app = typer.Typer(help="Show, verify or change the encrypted roster.", no_args_is_help=True)

RosterOption = Annotated[
    Path | None,
    typer.Option(
        "--roster", help="Roster file (default: <state_dir>/roster.sqlite).", metavar="PATH"
    ),
]


def hand_edit(settings: Settings, store: RosterStore, action: str, operator: str) -> Edit | None:
    """The ``Edit`` a technician's command on ``store`` owes as a ``roster.edited`` event
    naming the operator, when ``store`` is this kiosk's own roster (a roster file elsewhere,
    say a test enrolment, is nobody's business here); the store owes it in the transaction
    that makes the change, so a power cut cannot keep the change and lose its record."""
    if store.path.resolve() != settings.roster_path.resolve():
        return None
    return Edit(action, operator)


def record_edit(settings: Settings, store: RosterStore, edit: Edit | None) -> None:
    """Move what the roster owes (``edit``'s event, and any other left by an earlier cut)
    into the outbox now; an outbox that cannot take it leaves it owed, and the next sync
    records it."""
    if edit is None:
        return
    try:
        outbox = Outbox(
            settings.outbox_path, settings.kiosk.id, max_bytes=settings.outbox.max_bytes
        )
    except OutboxError as exc:
        typer.echo(f"kiosk: warning: {exc}; the roster.edited event stays owed", err=True)
        return
    try:
        record_owed(store, outbox)
    finally:
        outbox.close()


def _state_of(settings: Settings, path: Path | None) -> Path:
    """Whose roster it is, for the permission check: the kiosk's state, or the file's folder."""
    return settings.kiosk.state_dir if path is None else path.parent


def roster_store(settings: Settings, path: Path | None, read_only: bool = False) -> RosterStore:
    """The roster at ``path`` (keys beside it) or the kiosk's own (keys in the key folder).

    ``read_only`` for commands that only look: a missing roster or key is an error naming
    the command that makes it, and nothing is created or written."""
    return open_roster(
        settings.roster_path if path is None else path,
        settings.keys_dir if path is None else path.parent / "keys",
        settings.kiosk.id,
        settings.roster.cloud_roster_key,
        read_only=read_only,
        erase_wait_s=settings.roster.erase_wait_s,
    )


def existing_roster(settings: Settings, path: Path | None) -> RosterStore:
    """The roster a command changes, which must exist: a missing one is the read-only open's
    one line naming the command that makes it, and nothing (no roster, no keys) is made."""
    roster_store(settings, path, read_only=True).close()
    return roster_store(settings, path)


def erasure_not_finished(store: RosterStore, what: str) -> ErasurePendingError:
    """The error a command ends with when its deletion's bytes are still on disk."""
    # One line of at most 400 characters is shown: the fix comes before the details.
    return ErasurePendingError(
        f"{what}, but the deleted bytes are still in {store.path}: another process reads "
        "the roster. To finish now, stop the reader and run `kiosk roster erase-pending`; "
        "otherwise the kiosk erases them by itself when the reader lets go (logged as "
        f"roster.erasure_completed; waited {store.erase_wait_s:g} s, roster.erase_wait_s)"
    )


@app.command("info")
def info(
    ctx: typer.Context,
    roster: RosterOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Roster version, age, riders and templates per encoder model, re-enrolment needs, how
    many riders are flagged as lookalikes (they confirm a claim at the kiosk), how many
    were enrolled from one photo only (a second one recognises them more often), and up
    to how many riders the face policy decides without a claim."""
    settings = state(ctx).settings()
    store = roster_store(settings, roster, read_only=True)
    found = store.info()
    loaded = store.load()
    lookalikes = sum(rider.lookalike for rider in loaded.riders.values())
    per_rider = Counter(person for person, _ in loaded.templates.get(found.encoder_model, []))
    one_photo = sum(count == 1 for count in per_rider.values())
    too_old = found.age_s is not None and found.age_s > settings.roster.max_age_h * 3600
    limit = setup.automatic_up_to(settings.vision)
    beyond = setup.beyond_automatic(found.riders, limit)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    **asdict(found),
                    "lookalikes_flagged": lookalikes,
                    "one_photo_riders": one_photo,
                    "automatic_up_to": limit,
                    "claim_for_everyone": beyond is not None,
                    "max_age_h": settings.roster.max_age_h,
                    "too_old": too_old,
                },
                indent=2,
            )
        )
        return
    changed = (
        datetime.fromtimestamp(found.changed_at, UTC).isoformat(timespec="seconds")
        if found.changed_at
        else "-"
    )
    rows = {
        "roster": found.path,
        "version": found.version,
        "source": found.source,
        "riders": found.riders,
        "templates by model": ", ".join(f"{m}: {n}" for m, n in found.templates_by_model.items())
        or "-",
        "encoder model": found.encoder_model,
        "need re-enrolment": found.needs_reenrolment,
        "lookalikes flagged": lookalikes,
        "enrolled from one photo": one_photo,
        "automatic decisions": beyond
        or ("no roster limit" if limit is None else f"for rosters up to {limit} riders"),
        "last change": changed,
        "too old": f"yes (older than {settings.roster.max_age_h:g} h)" if too_old else "no",
    }
    table = Table(show_header=False, box=None)
    for key, value in rows.items():
        table.add_row(key, str(value))
    Console().print(table)


@app.command("verify")
def verify(ctx: typer.Context, roster: RosterOption = None) -> None:
    """Open every rider row with this kiosk's keys, without writing anything; name the rider
    and the kind of damage of every row that fails (exit 7 when one does)."""
    store = roster_store(state(ctx).settings(), roster, read_only=True)
    try:
        report = store.verify()
        version = store.version
    finally:
        store.close()
    if report.damaged:
        lines = [damage.line() for damage in report.damaged]
        raise StoreError(
            "\n".join([*lines, f"{store.path}: {len(lines)} of {report.rows} rider row(s) damaged"])
        )
    typer.echo(f"{store.path}: {report.rows} rider(s) verified, version {version}")


@app.command("delete")
def delete(
    ctx: typer.Context,
    person_id: Annotated[str, typer.Argument(help="The rider to remove.")],
    roster: RosterOption = None,
) -> None:
    """Remove a rider from a local roster, leaving none of their bytes on disk (needs root
    or kiosk-tech; on the kiosk's own roster it records a roster.edited event)."""
    settings = state(ctx).settings()
    who = require_technician(_state_of(settings, roster), "kiosk roster delete")
    store = existing_roster(settings, roster)
    edit = hand_edit(settings, store, "delete", who)
    if not store.delete(person_id, edit):
        raise typer.BadParameter(f"no rider {person_id!r} in {store.path}", param_hint="PERSON_ID")
    record_edit(settings, store, edit)
    if store.erasure_pending:
        raise erasure_not_finished(store, f"{person_id}: removed from the roster")
    typer.echo(f"{person_id}: deleted from {store.path}")


@app.command("erase-pending")
def erase_pending(ctx: typer.Context, roster: RosterOption = None) -> None:
    """Finish erasing deleted riders' bytes that a reader kept on disk (needs root or
    kiosk-tech; exit 7 while another process still reads the roster)."""
    settings = state(ctx).settings()
    require_technician(_state_of(settings, roster), "kiosk roster erase-pending")
    store = existing_roster(settings, roster)
    try:
        if store.pending_erasure() is not None and not store.finish_erasure():
            raise erasure_not_finished(store, "the erasure is still pending")
    finally:
        store.close()
    typer.echo(f"{store.path}: no deleted rider's bytes are left on disk")


@app.command("rotate-key")
def rotate_key(ctx: typer.Context, roster: RosterOption = None) -> None:
    """Re-seal every row of a local roster under a new data key and forget the old key
    (needs root or kiosk-tech; on the kiosk's own roster it records a roster.edited event)."""
    settings = state(ctx).settings()
    who = require_technician(_state_of(settings, roster), "kiosk roster rotate-key")
    store = existing_roster(settings, roster)
    edit = hand_edit(settings, store, "rotate_key", who)
    new = store.rotate_key(edit)
    record_edit(settings, store, edit)
    if store.erasure_pending:
        raise erasure_not_finished(store, f"rows re-sealed under data key {new}")
    typer.echo(f"{store.path}: rows re-sealed under data key {new}")


@app.command("pull")
def pull(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pull the roster from the cloud now and apply it (exit 7 when refused or unreachable;
    the roster held is then kept)."""
    from edge.cli.sync_cmd import build_daemon, open_cloud_roster, open_outbox

    settings = state(ctx).settings()
    store = open_cloud_roster(settings)
    try:
        outbox = open_outbox(settings)
        try:
            daemon = build_daemon(settings, outbox, roster=store)
            try:
                with spinner("pulling the roster from the cloud"):
                    result = daemon.pull_roster()
            finally:
                daemon.client.close()
        finally:
            outbox.close()
    finally:
        store.close()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "from_version": result.from_version,
                    "to_version": result.to_version,
                    "full": result.full,
                    "upserts": result.upserts,
                    "deletions": result.deletions,
                    "error": result.error,
                    "seconds": round(result.seconds, 3),
                }
            )
        )
    elif result.error is None and not result.changed:
        typer.echo(f"roster up to date at version {result.to_version}")
    elif result.error is None:
        kind = "full snapshot" if result.full else "delta"
        typer.echo(
            f"roster version {result.from_version} -> {result.to_version} ({kind}): "
            f"{result.upserts} rider(s) added or changed, {result.deletions} removed"
        )
    if store.erasure_pending:
        raise erasure_not_finished(store, f"{result.deletions} rider(s) removed by the pull")
    if result.failure is not None:
        message = f"{result.error} (roster version {result.from_version} kept)"
        if isinstance(result.failure, CloudError):
            raise CloudError(message)
        raise DeltaError(message)
