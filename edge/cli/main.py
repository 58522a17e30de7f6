"""The ``kiosk`` command: services, the demo and the technician's tools.

The commands are listed in ``COMMANDS`` by name, module and first sentence of their help,
so ``kiosk --help`` and ``kiosk --version`` answer without importing any command module
(numpy, OpenCV, the roster and the database layers load only for the commands that use
them; ``cloud_sync.lazy_cli``). ``load_all()`` builds every command, as one eager app would.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cloud_sync.lazy_cli import LazyCommand, lazy_group
from cloud_sync.lazy_cli import load_all as _load_all
from cloud_sync.no_dumps import forbid_core_dumps
from edge.cli.context import CliState
from edge.cli.runner import run_app

HELP = "Powerbank kiosk: recognise a rider, hand out a powerbank, sync events to the cloud."

# In the order ``kiosk --help`` lists them: commands first, then groups.
COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand(
        "demo",
        "edge.cli.demo_cmd:demo",
        "Run the whole appliance here: cloud API, board simulator, kiosk, sync, rider page.",
    ),
    LazyCommand(
        "run",
        "edge.cli.run_cmd:run",
        "Run the kiosk: camera, face pipeline, rental flow, slot board, outbox, rider page.",
    ),
    LazyCommand(
        "eject",
        "edge.cli.slots_cmd:register",
        "Eject the powerbank in one slot, recording who asked, why and how it ended "
        "(a slot.ejected event, also when the eject fails: then the exit code is 6).",
        kind="register",
    ),
    LazyCommand(
        "board-sim",
        "edge.cli.slots_cmd:register",
        "Simulate the slot board on a pty (prints its path); "
        "'kiosk board-sim --help' lists faults.",
        kind="register",
    ),
    LazyCommand(
        "enroll",
        "edge.cli.enroll_cmd:enroll",
        "Enrol riders from photos: one template per usable photo, a reason for each refused one.",
    ),
    LazyCommand(
        "status",
        "edge.cli.ops_cmd:register",
        "Show the kiosk's health at a glance: runtime, camera, board, roster, outbox, MQTT, "
        "disk, clock, versions (exit 0 even when something is wrong; see problems).",
        kind="register",
    ),
    LazyCommand(
        "doctor",
        "edge.cli.ops_cmd:register",
        "Check everything the kiosk needs, each with pass/fail and a one-line fix "
        "(exit 9 when a check fails).",
        kind="register",
    ),
    LazyCommand(
        "logs",
        "edge.cli.ops_cmd:register",
        "Show the kiosk services' logs (journalctl -u kiosk-edge -u kiosk-sync).",
        kind="register",
    ),
    LazyCommand(
        "provision",
        "edge.cli.provision_cmd:provision",
        "Create this kiosk's keys, register them with the cloud using the one-time token, "
        "pin the cloud's roster key and write kiosk.toml; resumes after an interruption, "
        "does nothing once done.",
    ),
    LazyCommand(
        "config",
        "edge.cli.config_cmd:app",
        "Show the effective settings or check a settings file.",
        kind="group",
    ),
    LazyCommand(
        "slots",
        "edge.cli.slots_cmd:register",
        "List the cabinet's slots, or enable and disable one.",
        kind="register",
    ),
    LazyCommand(
        "sync",
        "edge.cli.sync_cmd:app",
        "Run the sync daemon, sync now, or show the sync status.",
        kind="group",
    ),
    LazyCommand(
        "faces",
        "edge.cli.faces_cmd:app",
        "Identify or verify faces against a roster, or measure accuracy on labelled photos.",
        kind="group",
    ),
    LazyCommand(
        "roster",
        "edge.cli.roster_cmd:app",
        "Show, verify or change the encrypted roster.",
        kind="group",
    ),
    LazyCommand(
        "maintenance",
        "edge.cli.ops_cmd:register",
        "Take the kiosk out of service for maintenance, or put it back.",
        kind="register",
    ),
    LazyCommand(
        "events",
        "edge.cli.events_cmd:app",
        "Tail or export the events in the outbox.",
        kind="group",
    ),
    LazyCommand(
        "screen",
        "edge.cli.screen_cmd:app",
        "The rider screen's browser (kiosk-ui.service).",
        kind="group",
    ),
    LazyCommand(
        "update",
        "edge.cli.update_cmd:register",
        "Install a new version of the kiosk software from a bundle, or go back to the last one.",
        kind="register",
    ),
)

app = typer.Typer(
    name="kiosk",
    help=HELP,
    cls=lazy_group(COMMANDS),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from edge import __version__

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


def load_all() -> dict[str, object]:
    """Build every ``kiosk`` command (importing every command module); for tests and the
    CLI benchmark's baseline."""
    return dict(_load_all(app))


def main() -> None:
    if sys.argv[1:] == ["--version"]:  # the common case, answered before the app is built
        from edge import __version__

        print(f"kiosk {__version__}")
        raise SystemExit(0)
    forbid_core_dumps()  # the roster, frames and keys in memory never reach a core file
    raise SystemExit(run_app(app, "kiosk"))
