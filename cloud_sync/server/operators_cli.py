"""``kiosk-cloud operators | audit | consent-texts``: operator accounts, the audit log and
the consent texts riders agree to.

Like the other administration commands they work on the database directly, so they need
no running server and no token: whoever may run them may read the database anyway. The
audit log names their actor ``cli:USER`` (the local user). ``operators add`` is also how
the first admin is made when the bootstrap token is not used, and how access comes back
when every admin lost their token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from cloud_sync.errors import InputError
from cloud_sync.server import audit, consent, operators
from cloud_sync.server.audit import Entry, cli_actor
from cloud_sync.server.config import load_cloud_settings
from cloud_sync.server.db import Database, open_database, quiet_pool_logs, require_database
from cloud_sync.server.migrations import migrate
from cloud_sync.server.models import rfc3339
from cloud_sync.server.problems import Problem
from cloud_sync.server.roster_cli import DatabaseUrl

operators_app = typer.Typer(
    help="Named operators with roles (admin, support, installer) and their tokens.",
    no_args_is_help=True,
)
consent_texts_app = typer.Typer(
    help="The consent texts riders agree to, by version.", no_args_is_help=True
)

#: The largest consent text file read.
MAX_TEXT_BYTES = 1024 * 1024


@contextmanager
def _database(database_url: str | None, reading: bool = False) -> Iterator[Database]:
    settings = load_cloud_settings(database_url=database_url)
    if reading:
        require_database(settings.database_url)
    quiet_pool_logs()
    database = open_database(settings.database_url, pool_size=2)
    try:
        migrate(database)
        yield database
    except Problem as problem:
        raise InputError(problem.reason) from None
    finally:
        database.close()


@operators_app.command("add")
def operators_add(
    name: Annotated[str, typer.Argument(help="The operator's name (lowercase, . _ -).")],
    role: Annotated[str, typer.Option("--role", help="admin, support or installer.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Add an operator and print their token, once (only its hash is stored)."""
    with _database(database_url) as database:
        entry = Entry(cli_actor(), "operator.add", name, {"role": role})
        token = operators.add(database, name, role, entry)
    typer.echo(token)
    typer.echo(f"added operator {name} ({role}); the token above is shown only now", err=True)


@operators_app.command("list")
def operators_list(database_url: DatabaseUrl = None) -> None:
    """List operators as JSON lines (revoked ones too); never a token."""
    with _database(database_url, reading=True) as database:
        for item in operators.listed(database):
            typer.echo(item.model_dump_json())


@operators_app.command("revoke")
def operators_revoke(
    name: Annotated[str, typer.Argument(help="The operator to revoke.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an operator: their token is refused from now on (not the last admin)."""
    with _database(database_url) as database:
        operators.revoke(database, name, Entry(cli_actor(), "operator.revoke", name, {}))
    typer.echo(f"revoked operator {name}")


def audit_command(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Entries at or after this time (RFC 3339).", metavar="TIME"),
    ] = None,
    operator: Annotated[
        str | None,
        typer.Option("--operator", help="Only this actor's entries.", metavar="NAME"),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=audit.MAX_ENTRIES)] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """The audit log: every administrative action, who, on whom, when, request id."""
    moment: datetime | None = None
    if since is not None:
        try:
            moment = rfc3339(since)
        except ValueError as exc:
            raise InputError(f"--since: {exc}") from None
    with _database(database_url, reading=True) as database:
        found = audit.entries(database, moment, operator, limit)
    for item in found:
        if as_json:
            typer.echo(item.model_dump_json())
        else:
            detail = " ".join(f"{k}={v}" for k, v in item.detail.items())
            typer.echo(
                f"{item.at}  {item.actor:<16} {item.action:<24} {item.target}  {detail}".rstrip()
            )


@consent_texts_app.command("add")
def consent_texts_add(
    version: Annotated[str, typer.Argument(help="The text's version (e.g. 2026-01).")],
    text_file: Annotated[
        Path, typer.Option("--file", help="The consent text (UTF-8).", metavar="TEXT")
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Accept a consent text under a version; prints its SHA-256. Texts never change: the
    same text again is no change, another text under that version is refused."""
    try:
        with text_file.open("rb") as file:  # bounded: a device or a FIFO may never end
            raw = file.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{text_file}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_TEXT_BYTES:
        raise InputError(f"{text_file}: larger than {MAX_TEXT_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{text_file}: not UTF-8 text") from None
    if len(text) > consent.MAX_TEXT_CHARS:
        raise InputError(f"{text_file}: longer than {consent.MAX_TEXT_CHARS} characters")
    with _database(database_url) as database:
        entry = Entry(cli_actor(), "consent_text.add", version, {})
        added, digest = consent.add_text(database, version, text, entry)
    typer.echo(digest)
    typer.echo(f"consent text {version} {'added' if added else 'unchanged'}", err=True)


@consent_texts_app.command("list")
def consent_texts_list(database_url: DatabaseUrl = None) -> None:
    """List the consent texts as JSON lines: version, SHA-256, length, when added."""
    with _database(database_url, reading=True) as database:
        for item in consent.texts(database):
            typer.echo(item.model_dump_json())
