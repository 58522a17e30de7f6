"""``kiosk status``, ``kiosk doctor``, ``kiosk logs`` and ``kiosk maintenance``.

Read commands take ``--json`` (one JSON document on standard output, the shape described
by ``edge/ops/schemas/*.json``); people get rich tables. ``maintenance on|off`` changes
state: it needs a technician (``edge.cli.auth``) and records a ``kiosk.maintenance`` event.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cloud_sync.errors import InputError
from edge.cli.auth import require_technician
from edge.cli.context import state
from edge.cli.exits import CHECK_FAILED
from edge.cli.interrupts import finishing
from edge.cli.text_input import checked_reason
from edge.errors import NotAvailableError
from edge.ops.doctor import CHECKS, run_checks
from edge.ops.maintenance import read_maintenance, set_maintenance
from edge.ops.status import Part, StatusReport, collect_status

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
STYLE = {True: "green", False: "bold red", None: "yellow"}
MARK = {True: "ok", False: "FAIL", None: "?"}
OUTCOME_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the kiosk's health at a glance: runtime, camera, board, roster, outbox, MQTT,
    disk, clock, versions (exit 0 even when something is wrong; see problems)."""
    settings = state(ctx).settings()
    report = collect_status(settings)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    _print_status(report)


def _print_status(report: StatusReport) -> None:
    title = f"kiosk {report.kiosk_id}" + (f" — {report.site}" if report.site else "")
    table = Table(title=title, show_header=True)
    table.add_column("part")
    table.add_column("state")
    table.add_column("detail", overflow="fold")
    parts: list[tuple[str, Part]] = [
        ("runtime", report.runtime),
        ("maintenance", report.maintenance),
        ("camera", report.camera),
        ("board", report.board),
        ("roster", report.roster),
        ("outbox", report.outbox),
        ("mqtt", report.mqtt),
        ("disk", report.disk),
        ("clock", report.clock),
    ]
    for name, part in parts:
        style = STYLE[part.ok]
        table.add_row(name, f"[{style}]{MARK[part.ok]}[/]", part.detail)
    table.add_row("versions", "", ", ".join(f"{k} {v}" for k, v in report.versions.items()))
    console = Console()
    console.print(table)
    if report.problems:
        console.print(
            f"[bold red]{len(report.problems)} problem(s)[/]: kiosk doctor suggests fixes"
        )


def doctor(
    ctx: typer.Context,
    as_json: JsonOption = False,
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", help=f"Leave out a check (repeat): {', '.join(CHECKS)}."),
    ] = None,
) -> None:
    """Check everything the kiosk needs, each with pass/fail and a one-line fix
    (exit 9 when a check fails)."""
    unknown = sorted(set(skip or ()) - set(CHECKS))
    if unknown:
        raise InputError(f"--skip {unknown[0]}: no such check (one of {', '.join(CHECKS)})")
    settings = state(ctx).settings()
    results = run_checks(settings, frozenset(skip or ()))
    failed = [result for result in results if result.outcome == "fail"]
    if as_json:
        data = {
            "kiosk_id": settings.kiosk.id,
            "ok": not failed,
            "checks": [
                {"name": r.name, "outcome": r.outcome, "detail": r.detail, "fix": r.fix}
                for r in results
            ],
        }
        typer.echo(json.dumps(data, indent=2))
    else:
        table = Table(title=f"kiosk doctor — {settings.kiosk.id}")
        for column in ("check", "result", "detail", "fix"):
            table.add_column(column, overflow="fold")
        for r in results:
            style = OUTCOME_STYLE[r.outcome]
            table.add_row(r.name, f"[{style}]{r.outcome}[/]", r.detail, r.fix)
        Console().print(table)
    if failed:
        if not as_json:
            print(
                f"kiosk: {len(failed)} check(s) failed: {', '.join(r.name for r in failed)}",
                file=sys.stderr,
            )
        raise typer.Exit(CHECK_FAILED)


def logs(
    lines: Annotated[
        int, typer.Option("-n", "--lines", min=1, max=100_000, help="How many lines.")
    ] = 100,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="journalctl time, e.g. '1 hour ago', today.")
    ] = None,
) -> None:
    """Show the kiosk services' logs (journalctl -u kiosk-edge -u kiosk-sync)."""
    if shutil.which("journalctl") is None:
        raise NotAvailableError(
            "journalctl is not available on this machine: the services log to the systemd "
            "journal on the kiosk; elsewhere `kiosk run` and `kiosk sync run` log to standard error"
        )
    command = [
        "journalctl",
        "-u",
        "kiosk-edge",
        "-u",
        "kiosk-sync",
        "--no-pager",
        "-o",
        "short-iso",
        "-n",
        str(lines),
    ]
    if follow:
        command.append("--follow")
    if since:
        command += ["--since", since]
    try:
        code = subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        code = 0
    if code != 0:
        raise NotAvailableError(
            f"journalctl failed (exit {code}): is the systemd journal running here? "
            "(on a kiosk: sudo journalctl -u kiosk-edge)"
        )


maintenance_app = typer.Typer(
    help="Take the kiosk out of service for maintenance, or put it back.", no_args_is_help=True
)

ReasonOption = Annotated[
    str,
    typer.Option(
        "--reason", help="Why (kept in the event and shown by kiosk status).", metavar="TEXT"
    ),
]


def _set(ctx: typer.Context, on: bool, reason: str) -> None:
    settings = state(ctx).settings()
    state_dir = settings.kiosk.state_dir
    who = require_technician(state_dir, f"kiosk maintenance {'on' if on else 'off'}")
    reason = checked_reason(reason, required=False)
    from cloud_sync.outbox import Outbox  # here only: status and doctor need no sqlite_utils

    outbox = Outbox(settings.outbox_path, settings.kiosk.id, max_bytes=settings.outbox.max_bytes)
    with finishing():  # the flag and its event, both, whatever comes in between
        try:
            _, event = set_maintenance(state_dir, outbox, on, who, reason)
        finally:
            outbox.close()
        recorded = f"event {event.seq}" if event is not None else "no event (the outbox is full)"
        word = (
            "on: no rental starts, the screen shows out of service"
            if on
            else "off: back in service"
        )
        typer.echo(f"maintenance {word}; {recorded}, operator {who}")


@maintenance_app.command("on")
def maintenance_on(ctx: typer.Context, reason: ReasonOption = "") -> None:
    """Out of service: the rider screen says so and no rental starts (returns still work)."""
    _set(ctx, True, reason)


@maintenance_app.command("off")
def maintenance_off(ctx: typer.Context, reason: ReasonOption = "") -> None:
    """Back in service."""
    _set(ctx, False, reason)


@maintenance_app.command("status")
def maintenance_status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Whether maintenance mode is on, since when, by whom and why."""
    settings = state(ctx).settings()
    flag = read_maintenance(settings.kiosk.state_dir)
    data: dict[str, Any] = {"on": flag is not None}
    if flag is not None:
        data.update(flag.model_dump(mode="json"))
    if as_json:
        typer.echo(json.dumps(data))
    elif flag is None:
        typer.echo("maintenance off")
    else:
        typer.echo(
            f"maintenance on since {flag.since:%Y-%m-%d %H:%M} UTC by {flag.operator}"
            + (f": {flag.reason}" if flag.reason else "")
        )


def register(app: typer.Typer) -> None:
    """Add these commands to the ``kiosk`` app."""
    app.command("status")(status)
    app.command("doctor")(doctor)
    app.command("logs")(logs)
    app.add_typer(maintenance_app, name="maintenance")
