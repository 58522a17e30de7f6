"""``kiosk-cloud keys | riders | roster``: the cloud's roster keys, riders and data key.

Like the other administration commands they work on the database directly (and on the
roster key files named by the settings), so they need no running server. Photos given to
``riders add`` are encoded here with the face encoder and quality gate the kiosk uses
(``models``; the ``cloud-enrol`` install); only the templates are stored, sealed, and no
photo leaves this machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from cloud_sync.errors import ConfigError, InputError, WireError
from cloud_sync.server import consent
from cloud_sync.server.audit import Entry, cli_actor
from cloud_sync.server.config import CloudSettings, load_cloud_settings
from cloud_sync.server.db import open_database, quiet_pool_logs, require_database
from cloud_sync.server.migrations import migrate
from cloud_sync.server.models import PERSON_ID_PATTERN, ConsentIn, RiderIn, TemplateIn
from cloud_sync.server.problems import Problem
from cloud_sync.server.rider_terms import TermsChange
from cloud_sync.server.roster import CloudRoster, open_cloud_roster, rider_out, roster_status
from cloud_sync.server.roster_keys import RosterKeyFiles
from cloud_sync.wire_values import loads_strict, printable
from models.errors import ModelMissingError
from models.hints import ONE_PHOTO_HINT

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///FILE or postgresql://... (default: KIOSK_CLOUD_DATABASE_URL, "
        "else sqlite:///cloud.sqlite).",
        metavar="URL",
    ),
]

keys_app = typer.Typer(help="The cloud's roster keys.", no_args_is_help=True)
riders_app = typer.Typer(
    help="Add, change, delete or list the roster's riders; their consent records.",
    no_args_is_help=True,
)
roster_app = typer.Typer(help="The roster's state and its data key.", no_args_is_help=True)

_NOT_CONFIGURED = (
    "the roster key files are not set: with PostgreSQL set KIOSK_CLOUD_ROSTER_KEY_FILE and "
    "KIOSK_CLOUD_ROSTER_DATA_KEY_FILE (the same files on every replica)"
)


def _key_files(settings: CloudSettings) -> RosterKeyFiles:
    paths = settings.roster_key_paths
    if paths is None:
        raise ConfigError(_NOT_CONFIGURED)
    return RosterKeyFiles(*paths)


@contextmanager
def _roster(database_url: str | None, reading: bool = False) -> Iterator[CloudRoster]:
    """The cloud's roster. A command that only reads (``reading``) creates neither the
    SQLite database nor the key files: their absence is one line naming the fix."""
    settings = load_cloud_settings(database_url=database_url)
    if reading:
        require_database(settings.database_url)
    quiet_pool_logs()
    database = open_database(settings.database_url, pool_size=2)
    try:
        migrate(database)
        roster = open_cloud_roster(settings, database, create_keys=not reading)
        if roster is None:
            raise ConfigError(_NOT_CONFIGURED)
        yield roster
    except Problem as problem:
        raise InputError(problem.reason) from None
    finally:
        database.close()


@keys_app.command("init")
def keys_init(database_url: DatabaseUrl = None) -> None:
    """Create the roster signing key and data key files (0600) if missing; print the
    roster public key that kiosks pin (KIOSK_ROSTER__CLOUD_ROSTER_KEY)."""
    keys = _key_files(load_cloud_settings(database_url=database_url))
    for path in keys.init():
        typer.echo(f"created {path}", err=True)
    typer.echo(keys.public_key)


# -- riders ---------------------------------------------------------------------------------


#: The largest templates file read: 64 templates of 128 numbers take about 200 kB.
MAX_TEMPLATES_BYTES = 4 * 1024 * 1024


def _templates_file(path: Path, model: str) -> list[dict[str, Any]]:
    """Templates from JSON: ``[{"model": M, "vector": [128 numbers]}, ...]`` or a list of
    bare 128-number lists (of the roster's model); read at most ``MAX_TEMPLATES_BYTES``,
    strictly (``wire_values.loads_strict``, as the API reads a body)."""
    try:
        with path.open("rb") as file:  # bounded: a device or a FIFO may never end
            raw = file.read(MAX_TEMPLATES_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_TEMPLATES_BYTES:
        raise InputError(
            f"{path}: larger than {MAX_TEMPLATES_BYTES} bytes, which no templates file is"
        )
    try:
        data = loads_strict(raw)
    except WireError as exc:
        raise InputError(f"{path}: not a JSON templates file ({exc})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of templates")
    return [item if isinstance(item, dict) else {"model": model, "vector": item} for item in data]


def _encode_photos(person_id: str, images: list[Path], model: str) -> list[dict[str, Any]]:
    """One template per usable photo, encoded and checked as a kiosk with default settings
    does (``models.enrolment``: the encoder, its quality gate and the pixel cap)."""
    try:
        from models.encoder import FaceEngine
        from models.enrolment import Accepted, enrol_image
        from models.images import DEFAULT_MAX_PIXELS
        from models.quality import QualityConfig
    except ImportError as exc:  # the cloud target without its enrolment extra
        raise ModelMissingError(
            f"enrolling from photos needs the face encoder, and {exc.name} is not installed: "
            "install powerbank-kiosk[cloud-enrol] (requirements-cloud-enrol.lock), "
            "or give --templates FILE"
        ) from None

    engine = FaceEngine()
    if engine.model_version != model:
        raise InputError(
            f"this machine encodes with {engine.model_version!r} but the roster serves "
            f"{model!r} (KIOSK_CLOUD_ROSTER_MODEL)"
        )
    quality = QualityConfig()
    found = []
    for path in images:
        outcome = enrol_image(engine, path, quality, DEFAULT_MAX_PIXELS)
        if isinstance(outcome, Accepted):
            found.append({"model": model, "vector": [float(x) for x in outcome.encoding]})
        else:
            typer.echo(f"{person_id}  refused  {path.name}: {outcome.reason}", err=True)
    return found


@riders_app.command("add")
def riders_add(
    person_id: Annotated[
        str, typer.Option("--person-id", help="The rider's id (letters, digits, . _ -).")
    ],
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Photos of the rider, encoded on this machine.", metavar="IMAGE..."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Display name (stored sealed).")] = "",
    max_open: Annotated[
        int, typer.Option("--max-open", min=0, max=100, help="Most open rentals at once.")
    ] = 1,
    no_rent: Annotated[bool, typer.Option("--no-rent", help="May not rent.")] = False,
    no_boarding: Annotated[bool, typer.Option("--no-boarding", help="May not board.")] = False,
    valid_until: Annotated[
        str | None, typer.Option("--valid-until", help="Last valid day (YYYY-MM-DD).")
    ] = None,
    claim_hash: Annotated[
        str | None, typer.Option("--claim-hash", help="Hash of the rider's claim code.")
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option("--templates", help="Templates as JSON instead of photos.", metavar="FILE"),
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a rider who exists.")] = False,
    consent_version: Annotated[
        str | None,
        typer.Option(
            "--consent",
            help="The version of the consent text the rider agreed to (required; see "
            "`kiosk-cloud consent-texts`).",
            metavar="VERSION",
        ),
    ] = None,
    consent_by: Annotated[
        str | None,
        typer.Option("--consent-by", help="Who took the consent (required).", metavar="NAME"),
    ] = None,
    consent_channel: Annotated[
        str,
        typer.Option("--consent-channel", help="Where it was given: app, kiosk or desk."),
    ] = "desk",
    consent_at: Annotated[
        str | None,
        typer.Option(
            "--consent-at", help="When it was given (RFC 3339; default: now).", metavar="TIME"
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Add a rider (templates from photos or JSON) with their consent record; kiosks get
    them at their next pull."""
    if not images and templates is None:
        raise InputError("give photos of the rider (IMAGE...) or --templates FILE")
    agreed = _consent(consent_version, consent_by, consent_channel, consent_at)
    until = None
    if valid_until is not None:
        try:
            until = date.fromisoformat(valid_until)
        except ValueError:
            raise InputError(f"--valid-until {valid_until!r} is not a date (YYYY-MM-DD)") from None
    with _roster(database_url) as roster:
        found = _templates_file(templates, roster.model) if templates is not None else []
        consent.require_known(roster.db, agreed.version)  # before encoding any photo
        if images:
            found += _encode_photos(person_id, list(images), roster.model)
        if not found:
            raise InputError(f"{person_id}: no usable photo or template; nothing was stored")
        try:
            rider = RiderIn(
                person_id=person_id,
                display_name=name,
                templates=[TemplateIn.model_validate(item) for item in found],
                may_rent=not no_rent,
                max_open_rentals=max_open,
                boarding_allowed=not no_boarding,
                valid_until=until,
                claim_hash=claim_hash,
                replace=replace,
                consent=agreed,
            )
        except ValidationError as exc:
            raise _invalid(exc) from None
        action = "rider.replace" if replace else "rider.add"
        entry = Entry(cli_actor(), action, person_id, {"consent": agreed.version})
        record = consent.recorder(person_id, agreed, entry)
        version = roster.add(rider.person_id, rider.to_record(), rider.replace, record)
    typer.echo(
        f"{'stored' if replace else 'added'} {person_id} with {len(found)} template(s); "
        f"roster version {version}"
    )
    if len(found) == 1:
        typer.echo(f"{person_id}: {ONE_PHOTO_HINT}")


def _invalid(exc: ValidationError) -> InputError:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return InputError(f"{where}: {first['msg']}")


def _consent(version: str | None, by: str | None, channel: str, at: str | None) -> ConsentIn:
    """The consent record the options give; ``InputError`` naming what is missing."""
    if version is None or by is None:
        raise InputError(
            "enrolment needs the rider's consent: --consent VERSION (the consent text they "
            "agreed to) and --consent-by NAME (who took it); nothing was stored"
        )
    try:
        return ConsentIn.model_validate(
            {
                "version": version,
                "taken_by": by,
                "channel": channel,
                "given_at": at if at is not None else datetime.now(UTC),
            }
        )
    except ValidationError as exc:
        raise _invalid(exc) from None


@riders_app.command("delete")
def riders_delete(
    person_id: Annotated[str, typer.Argument(help="The rider to delete.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Delete a rider; every kiosk drops their templates at its next pull."""
    _rider_id(person_id)
    with _roster(database_url) as roster:
        version = roster.delete(
            person_id, also=Entry(cli_actor(), "rider.delete", person_id, {}).write
        )
    typer.echo(f"deleted {person_id}; roster version {version}")


@riders_app.command("consent")
def riders_consent(
    person_id: Annotated[str, typer.Argument(help="The rider.")],
    withdraw: Annotated[
        bool,
        typer.Option(
            "--withdraw",
            help="The rider withdrew their consent: delete them everywhere (every kiosk drops "
            "them at its next pull); the record keeps when and by whom.",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show the rider's consent record as JSON (text version and its SHA-256, when, how,
    who took it; withdrawal); --withdraw deletes the rider."""
    _rider_id(person_id)
    with _roster(database_url, reading=not withdraw) as roster:
        if withdraw:
            entry = Entry(cli_actor(), "rider.consent_withdraw", person_id, {})
            version, before = consent.withdraw(roster, person_id, entry)
            done = "deleted before; withdrawal recorded" if before else "deleted"
            typer.echo(f"{done} {person_id}; roster version {version}", err=True)
        found = consent.current(roster.db, person_id)
    if found is None:
        raise InputError(f"no consent record for rider {person_id!r}")
    typer.echo(found.model_dump_json(indent=2))


def _rider_id(person_id: str) -> str:
    if len(person_id) > 128 or not re.fullmatch(PERSON_ID_PATTERN, person_id):
        raise InputError(
            f"{printable(person_id, 64)!r} is not a rider id (at most 128 letters, digits, "
            "'.', '_', '-')"
        )
    return person_id


@riders_app.command("set")
def riders_set(
    person_id: Annotated[str, typer.Argument(help="The rider to change.")],
    may_rent: Annotated[
        bool | None,
        typer.Option("--may-rent/--block", help="Allow renting again, or put the rider on hold."),
    ] = None,
    max_open: Annotated[
        int | None,
        typer.Option("--max-open", min=0, max=100, help="Most powerbanks out at once, fleet-wide."),
    ] = None,
    boarding: Annotated[
        bool | None, typer.Option("--boarding/--no-boarding", help="May board, or not.")
    ] = None,
    valid_until: Annotated[
        str | None,
        typer.Option("--valid-until", help="Last valid day (YYYY-MM-DD), or 'never' to clear it."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Change a rider's entitlements without resending templates; kiosks get the change
    at their next pull as a small terms row."""
    _rider_id(person_id)
    until, clear = None, False
    if valid_until == "never":
        clear = True
    elif valid_until is not None:
        try:
            until = date.fromisoformat(valid_until)
        except ValueError:
            raise InputError(
                f"--valid-until {valid_until!r} is not a date (YYYY-MM-DD) or 'never'"
            ) from None
    change = TermsChange(may_rent, max_open, boarding, until, clear)
    if change.empty:
        raise InputError(
            "name something to change: --may-rent/--block, --max-open, "
            "--boarding/--no-boarding or --valid-until"
        )
    detail = {
        name: value
        for name, value in (
            ("may_rent", may_rent),
            ("max_open_rentals", max_open),
            ("boarding_allowed", boarding),
            ("valid_until", None if clear else until),
        )
        if value is not None or (name == "valid_until" and clear)
    }
    entry = Entry(cli_actor(), "rider.change", person_id, detail)
    with _roster(database_url) as roster:
        version, terms = roster.set_terms(person_id, change, also=entry.write)
    rights = terms.entitlements
    typer.echo(
        f"{person_id}: may rent {'yes' if rights.may_rent else 'no (blocked)'}, at most "
        f"{rights.max_open_rentals} out, boarding {'yes' if rights.boarding_allowed else 'no'}, "
        f"valid until {rights.valid_until or 'no end'}; roster version {version}"
    )


@riders_app.command("list")
def riders_list(database_url: DatabaseUrl = None) -> None:
    """List riders as JSON lines: name, entitlements, template counts (never a template)."""
    with _roster(database_url, reading=True) as roster:
        for rider in roster.riders():
            typer.echo(rider_out(rider).model_dump_json())


# -- the roster as a whole --------------------------------------------------------------------


@roster_app.command("info")
def roster_info(database_url: DatabaseUrl = None) -> None:
    """The roster's version, counts, data-key id and public key, as JSON."""
    with _roster(database_url, reading=True) as roster:
        typer.echo(roster_status(roster).model_dump_json(indent=2))


@roster_app.command("rotate-key")
def roster_rotate_key(database_url: DatabaseUrl = None) -> None:
    """Re-seal every rider under a new data key and replace the old key file; every
    kiosk's next pull is a full snapshot under the new key."""
    with _roster(database_url) as roster:
        done = roster.rotate_key()
        detail = {"version": done.version}
        Entry(cli_actor(), "roster.rotate_key", done.key_id, detail).save(roster.db)
    typer.echo(
        f"{done.riders} rider(s) re-sealed under data key {done.key_id}; roster version "
        f"{done.version} (kiosks get a full snapshot at their next pull)"
    )


# `riders erasure` lives with the erasure code; it uses this module's helpers, so it is
# imported last
from cloud_sync.server.erasure_cli import riders_erasure  # noqa: E402

riders_app.command("erasure")(riders_erasure)
