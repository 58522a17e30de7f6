"""The ``kiosk`` command: services, the demo and the technician's tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge import __version__
from edge.cli import (
    config_cmd,
    demo_cmd,
    enroll_cmd,
    events_cmd,
    faces_cmd,
    ops_cmd,
    provision_cmd,
    roster_cmd,
    run_cmd,
    screen_cmd,
    slots_cmd,
    sync_cmd,
    update_cmd,
)
from edge.cli.context import CliState
from edge.cli.runner import run_app

app = typer.Typer(
    name="kiosk",
    help="Powerbank kiosk: recognise a rider, hand out a powerbank, sync events to the cloud.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kiosk {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings file (default /etc/kiosk/kiosk.toml when it exists).",
            metavar="PATH",
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Debug logs, and a traceback on errors.")
    ] = False,
    log_format: Annotated[
        str, typer.Option("--log-format", help="auto (JSON unless a terminal), json or console.")
    ] = "auto",
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Powerbank kiosk: recognise a rider, hand out a powerbank, sync events to the cloud."""
    if log_format not in ("auto", "json", "console"):
        raise typer.BadParameter("must be auto, json or console", param_hint="--log-format")
    ctx.obj = CliState(config=config, debug=debug, log_format=log_format)


app.command("demo")(demo_cmd.demo)
app.add_typer(config_cmd.app, name="config")
app.command("run")(run_cmd.run)
slots_cmd.register(app)
app.add_typer(sync_cmd.app, name="sync")
app.add_typer(faces_cmd.app, name="faces")
app.command("enroll")(enroll_cmd.enroll)
app.add_typer(roster_cmd.app, name="roster")
ops_cmd.register(app)  # status, doctor, logs, maintenance
app.add_typer(events_cmd.app, name="events")
app.add_typer(screen_cmd.app, name="screen")
update_cmd.register(app)


app.command("provision")(provision_cmd.provision)


def main() -> None:
    raise SystemExit(run_app(app, "kiosk"))
