"""The ``kiosk-cloud`` command: the thin cloud API and its administration.

Settings come from ``KIOSK_CLOUD_*`` variables (see ``cloud_sync.server.config``); the
options below override them. Admin commands work on the database directly, so they need
no running server and no operator token; the audit log names them ``cli:USER``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloud_sync.cli_runner import run_app
from cloud_sync.errors import InputError, SignatureError
from cloud_sync.exits import CLOUD_EXIT_CODES
from cloud_sync.lazy_cli import LazyCommand, lazy_group
from cloud_sync.no_dumps import forbid_core_dumps
from cloud_sync.wire_values import MAX_INT64

if TYPE_CHECKING:  # the server's modules load in the commands that use them
    from cloud_sync.server.config import CloudSettings
    from cloud_sync.server.store import Store

# The sub-command groups, listed after the commands below; the roster's import the face
# encoder, so they load only when used (cloud_sync.lazy_cli).
COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand(
        "keys", "cloud_sync.server.roster_cli:keys_app", "The cloud's roster keys.", kind="group"
    ),
    LazyCommand(
        "riders",
        "cloud_sync.server.roster_cli:riders_app",
        "Add, change, delete or list the roster's riders; their consent records.",
        kind="group",
    ),
    LazyCommand(
        "consent-texts",
        "cloud_sync.server.operators_cli:consent_texts_app",
        "The consent texts riders agree to, by version.",
        kind="group",
    ),
    LazyCommand(
        "operators",
        "cloud_sync.server.operators_cli:operators_app",
        "Named operators with roles (admin, support, installer) and their tokens.",
        kind="group",
    ),
    LazyCommand(
        "audit",
        "cloud_sync.server.operators_cli:audit_command",
        "The audit log: every administrative action, who, on whom, when, request id.",
    ),
    LazyCommand(
        "kiosks",
        "cloud_sync.server.kiosks_cli:kiosks_app",
        "List registered kiosks (JSON lines); revoke one.",
        kind="group",
    ),
    LazyCommand(
        "roster",
        "cloud_sync.server.roster_cli:roster_app",
        "The roster's state and its data key.",
        kind="group",
    ),
    LazyCommand(
        "rentals",
        "cloud_sync.server.rentals_cli:rentals_app",
        "List rentals by state (JSON lines); mark overdue and lost ones (sweep).",
        kind="group",
    ),
    LazyCommand(
        "powerbanks",
        "cloud_sync.server.rentals_cli:powerbanks_command",
        "Where each powerbank is (docked, rented, overdue, lost, maintenance), from the "
        "events; a flagged one names the events behind each flag.",
    ),
    LazyCommand(
        "fleet",
        "cloud_sync.server.fleet_cli:fleet",
        "Every kiosk's latest status: last seen, online, free slots, charged powerbanks, "
        "backlog, roster lag, version; flagged batteries.",
    ),
    LazyCommand(
        "command",
        "cloud_sync.cli:command_app",
        "Sign and send remote commands to kiosks over MQTT; make the command key.",
        kind="group",
    ),
)

app = typer.Typer(
    name="kiosk-cloud",
    help="The thin cloud API that receives kiosk events and serves rosters.",
    cls=lazy_group(COMMANDS),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///FILE or postgresql://... (default: KIOSK_CLOUD_DATABASE_URL, "
        "else sqlite:///cloud.sqlite).",
        metavar="URL",
    ),
]


@app.callback()
def root() -> None:
    """The thin cloud API that receives kiosk events and serves rosters."""


def _settings(**overrides: Any) -> CloudSettings:
    from cloud_sync.server.config import load_cloud_settings

    return load_cloud_settings(**overrides)


@contextmanager
def _store(database_url: str | None, reading: bool = False) -> Iterator[Store]:
    """The cloud's store. A command that only reads (``reading``) makes no SQLite database
    (nor its folder) where there is none: a mistyped URL is one line naming the fix."""
    from cloud_sync.server.db import open_database, quiet_pool_logs, require_database
    from cloud_sync.server.migrations import migrate
    from cloud_sync.server.store import Store

    settings = _settings(database_url=database_url)
    if reading:
        require_database(settings.database_url)
    quiet_pool_logs()
    database = open_database(settings.database_url, pool_size=2)
    try:
        migrate(database)
        yield Store(database)
    finally:
        database.close()


@app.command()
def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port (default 8000).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Worker processes on this host (default: KIOSK_CLOUD_WORKERS, else 1).",
        ),
    ] = None,
) -> None:
    """Serve the cloud API (events ingest, kiosk registry, provisioning, metrics).

    Half-sent requests are closed: headers must arrive within KIOSK_CLOUD_HEADER_TIMEOUT_S
    (default 10 s), a body within KIOSK_CLOUD_BODY_TIMEOUT_S (default 30 s, else 408), and
    past KIOSK_CLOUD_LIMIT_CONCURRENCY connections (default 1000) a process answers 503. In
    production put a buffering proxy in front (docs/cloud.md).
    """
    import os
    import resource

    import structlog
    import uvicorn

    from cloud_sync.server.serving import uvicorn_options
    from cloud_sync.server.workers import start_logging

    given = {"database_url": database_url, "host": host, "port": port, "workers": workers}
    settings = _settings(**given)
    start_logging(settings)
    served: dict[str, Any] = {}
    if settings.workers > 1:
        # each worker builds its app from the environment: it gets these options there
        for name, value in given.items():
            if value is not None:
                os.environ[f"KIOSK_CLOUD_{name.upper()}"] = str(value)
        served.update(factory=True, workers=settings.workers)
        target: Any = "cloud_sync.server.workers:app_from_environment"
    else:
        from cloud_sync.server.app import create_app

        target = create_app(settings)
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    options = uvicorn_options(settings, open_files)
    if options["limit_concurrency"] < settings.limit_concurrency:
        structlog.get_logger("cloud_sync.server").warning(
            "cloud.limit_concurrency_lowered",
            limit_concurrency=options["limit_concurrency"],
            open_file_limit=open_files,
            hint="raise the open-file limit (LimitNOFILE=, ulimit -n)",
        )
    uvicorn.run(target, **options, **served)


@app.command("migrate")
def migrate_db(database_url: DatabaseUrl = None) -> None:
    """Create or upgrade the database schema (serve does this too)."""
    from cloud_sync.server.db import open_database
    from cloud_sync.server.migrations import migrate

    settings = _settings(database_url=database_url)
    database = open_database(settings.database_url, pool_size=1)
    try:
        applied = migrate(database)
    finally:
        database.close()
    typer.echo(f"applied migrations {applied}" if applied else "the schema is up to date")


def _check_kiosk_id(kiosk_id: str, option: str = "") -> None:
    """``InputError`` unless ``kiosk_id`` is a kiosk id as the API takes one."""
    from cloud_sync.events import KIOSK_ID_PATTERN

    if not re.fullmatch(KIOSK_ID_PATTERN, kiosk_id):
        where = f"{option}: " if option else ""
        raise InputError(f"{where}{kiosk_id!r} is not a kiosk id (lowercase letters, digits, '-')")


@app.command("register-kiosk")
def register_kiosk(
    kiosk_id: Annotated[str, typer.Argument(help="The kiosk's id (kiosk.id in its settings).")],
    public_key: Annotated[
        str, typer.Option("--public-key", help="Its key, as printed by `kiosk sync key`.")
    ],
    box_public_key: Annotated[
        str | None,
        typer.Option(
            "--box-public-key",
            help="Its X25519 key for the roster, as printed by `kiosk sync key --box` "
            "(kept when omitted; without one the kiosk gets no roster).",
        ),
    ] = None,
    site: Annotated[str, typer.Option("--site", help="Where it stands.")] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Register a kiosk and its public keys (or replace them)."""
    from cloud_sync.server.roster import box_public_key as roster_box_key
    from cloud_sync.signing import parse_public_key

    _check_kiosk_id(kiosk_id)
    try:
        parse_public_key(public_key)
    except SignatureError as exc:
        raise InputError(f"--public-key: {exc}") from None
    if box_public_key is not None:
        try:
            roster_box_key(box_public_key)
        except ValueError as exc:
            raise InputError(f"--box-public-key: {exc}") from None
    from cloud_sync.server.audit import Entry, cli_actor

    with _store(database_url) as store:
        created = store.register_kiosk(kiosk_id, public_key, site, box_public_key)
        Entry(cli_actor(), "kiosk.register", kiosk_id, {"site": site}).save(store.db)
    typer.echo(f"{'registered' if created else 'updated'} {kiosk_id}")


@app.command("issue-token")
def issue_token(
    kiosk_id: Annotated[
        str | None, typer.Option("--kiosk-id", help="Only this kiosk may use the token.")
    ] = None,
    site: Annotated[str, typer.Option("--site", help="Site recorded for the kiosk.")] = "",
    ttl_s: Annotated[
        float, typer.Option("--ttl", min=60, max=30 * 86400, help="Seconds it stays valid.")
    ] = 86400,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a one-time provisioning token (printed once, stored hashed)."""
    if kiosk_id is not None:
        _check_kiosk_id(kiosk_id, "--kiosk-id")
    from cloud_sync.server.audit import Entry, cli_actor

    with _store(database_url) as store:
        token, expires = store.issue_token(ttl_s, kiosk_id, site)
        detail = {"expires_at": expires}
        Entry(cli_actor(), "token.issue", kiosk_id or "*", detail).save(store.db)
    typer.echo(token)
    typer.echo(f"valid until {expires}", err=True)


@app.command("events")
def events(
    kiosk_id: Annotated[str | None, typer.Option("--kiosk-id", help="Only this kiosk.")] = None,
    after_seq: Annotated[int, typer.Option("--after-seq", min=0, max=MAX_INT64)] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 100,
    database_url: DatabaseUrl = None,
) -> None:
    """List stored events as JSON lines, in (kiosk, seq) order."""
    if kiosk_id is not None:
        _check_kiosk_id(kiosk_id, "--kiosk-id")
    with _store(database_url, reading=True) as store:
        for row in store.events(kiosk_id, after_seq, limit):
            typer.echo(json.dumps(row))


@app.command("openapi")
def openapi(
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the OpenAPI document of the cloud API (docs/openapi.json is this output)."""
    from cloud_sync.server.openapi import render_openapi

    text = render_openapi()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


# -- remote commands over MQTT (kiosk-cloud command ...) ------------------------------------

command_app = typer.Typer(
    help="Sign and send remote commands to kiosks over MQTT; make the command key.",
    no_args_is_help=True,
)


@command_app.command("send")
def command_send(
    kiosk: Annotated[str, typer.Option("--kiosk", help="The kiosk's id.", metavar="ID")],
    name: Annotated[
        str,
        typer.Option(
            "--name",
            help="eject, sync-now, maintenance-on, maintenance-off, reload-roster or ping.",
        ),
    ],
    broker: Annotated[str, typer.Option("--broker", help="The MQTT broker.", metavar="HOST:PORT")],
    key: Annotated[
        Path, typer.Option("--key", help="The command key (kiosk-cloud command keygen).")
    ],
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", help="An argument, KEY=VALUE (repeat), e.g. slot=3.", metavar="K=V"),
    ] = None,
    ttl_s: Annotated[
        int, typer.Option("--ttl", min=5, max=7 * 86400, help="Seconds the command stays valid.")
    ] = 60,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1, max=3600, help="Seconds to wait for the result.")
    ] = 30,
    issuer: Annotated[
        str, typer.Option("--issuer", help="Who sends it (named in the kiosk's events).")
    ] = "cloud",
    tls: Annotated[bool, typer.Option("--tls", help="Connect with TLS.")] = False,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA bundle for the broker's certificate.")
    ] = None,
    username: Annotated[str | None, typer.Option("--username", help="Broker user.")] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="File holding the broker password.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Sign a command, publish it to one kiosk and print its result (JSON); exit 7 unless
    the kiosk answers ok. With the cloud's database (--database-url, or
    KIOSK_CLOUD_DATABASE_URL, or the default one when it exists) a revoked kiosk is
    refused and nothing is published, and only a result signed by the kiosk's registered
    key is taken."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from pydantic import ValidationError

    from cloud_sync import keyfiles
    from cloud_sync.events import KIOSK_ID_PATTERN
    from cloud_sync.mqtt.commands import ARGS
    from cloud_sync.mqtt.errors import CommandFailedError
    from cloud_sync.mqtt.sender import broker_config, parse_arg, send_command

    if not re.fullmatch(KIOSK_ID_PATTERN, kiosk):
        raise InputError(f"--kiosk {kiosk!r} is not a kiosk id")
    if name not in ARGS:
        raise InputError(f"--name {name!r}: one of {', '.join(ARGS)}")
    try:
        args = dict(parse_arg(item) for item in arg or ())
        password = (
            keyfiles.read_small_file(password_file).decode("utf-8").strip()
            if password_file
            else None
        )
        config = broker_config(broker, tls, ca_file, username, password)
    except ValidationError as exc:  # the broker's settings: name the first one wrong
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(f"--broker {broker!r}: {where}: {first['msg']}") from None
    except (ValueError, OSError) as exc:
        raise InputError(str(exc)) from None
    signing_key = keyfiles.load_or_create(key, Ed25519PrivateKey, create=False)  # type: ignore[type-abstract]
    from cloud_sync.server.kiosks_cli import registry_lookup
    from cloud_sync.signing import parse_public_key

    lookup = registry_lookup(database_url)
    record = lookup(kiosk) if lookup is not None else None
    sent = send_command(
        config,
        signing_key,
        kiosk,
        name,
        args,
        ttl_s,
        timeout_s,
        issuer[:64],
        is_revoked=lambda _kiosk: record is not None and record.disabled,
        kiosk_public_key=None if record is None else parse_public_key(record.public_key),
    )
    typer.echo(sent.result.model_dump_json())
    if sent.result.status != "ok":
        why = sent.result.reason or sent.result.detail or sent.result.status
        raise CommandFailedError(f"{kiosk} answered {sent.result.status}: {why}")


@command_app.command("keygen")
def command_keygen(
    key: Annotated[Path, typer.Option("--key", help="Where to write the private key (0600).")],
) -> None:
    """Create the cloud's command key; prints the public key to pin in each kiosk's
    mqtt.command_public_key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cloud_sync import keyfiles
    from cloud_sync.signing import public_key_text

    if key.exists():
        raise InputError(f"{key}: already exists (kiosk-cloud command public-key prints its key)")
    signing_key = Ed25519PrivateKey.generate()
    if not keyfiles.write_private_key(key, signing_key):
        raise InputError(f"{key}: already exists")
    typer.echo(public_key_text(signing_key))


@command_app.command("public-key")
def command_public_key(
    key: Annotated[Path, typer.Option("--key", help="The command key's file.")],
) -> None:
    """Print the public half of the command key (for mqtt.command_public_key)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cloud_sync import keyfiles
    from cloud_sync.signing import public_key_text

    signing_key = keyfiles.load_or_create(key, Ed25519PrivateKey, create=False)  # type: ignore[type-abstract]
    typer.echo(public_key_text(signing_key))


def load_all() -> dict[str, object]:
    """Build every ``kiosk-cloud`` command (importing every module they use at their top);
    for tests and the CLI benchmark's baseline."""
    from cloud_sync.lazy_cli import load_all as build_all

    return dict(build_all(app))


def main() -> None:
    forbid_core_dumps()  # templates, claim hashes and keys in memory never reach a core file
    raise SystemExit(run_app(app, "kiosk-cloud", CLOUD_EXIT_CODES))
