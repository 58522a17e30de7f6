"""The ``kiosk`` command: services, the demo and the technician's tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge import __version__
from edge.cli import (
    config_cmd,
    enroll_cmd,
    events_cmd,
    faces_cmd,
    ops_cmd,
    provision_cmd,
    roster_cmd,
    run_cmd,
    slots_cmd,
    sync_cmd,
)
from edge.cli.context import CliState, state
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


@app.command()
def demo(
    ctx: typer.Context,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images", help="Folder of frames to replay (default: bundled samples).", metavar="DIR"
        ),
    ] = None,
    enroll: Annotated[
        Path | None,
        typer.Option(
            "--enroll",
            help="Riders to enrol: one sub-folder per rider, or images named by rider id (default: bundled sample).",
            metavar="DIR",
        ),
    ] = None,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir", help="Where the demo keeps its outbox and samples.", metavar="DIR"
        ),
    ] = Path("demo-state"),
    fps: Annotated[
        float, typer.Option("--fps", min=0.1, max=120.0, help="Replay speed in frames per second.")
    ] = 5.0,
) -> None:
    """Run the appliance on this machine: replayed frames, the real face model, the outbox."""
    from edge.demo import run_demo

    settings = state(ctx).settings(kiosk={"state_dir": str(state_dir)}, camera={"fps": fps})
    summary = run_demo(settings, images, enroll, say=typer.echo)
    typer.echo(
        f"done: {summary.frames} frames, {summary.recognised} recognised, {summary.unrecognised} not recognised, "
        f"{summary.no_face} without a face; {summary.events} events in {summary.outbox}"
    )


app.add_typer(config_cmd.app, name="config")
app.command("run")(run_cmd.run)
slots_cmd.register(app)
app.add_typer(sync_cmd.app, name="sync")
app.add_typer(faces_cmd.app, name="faces")
app.command("enroll")(enroll_cmd.enroll)
app.add_typer(roster_cmd.app, name="roster")
ops_cmd.register(app)  # status, doctor, logs, maintenance
app.add_typer(events_cmd.app, name="events")


app.command("provision")(provision_cmd.provision)


def main() -> None:
    raise SystemExit(run_app(app, "kiosk"))
