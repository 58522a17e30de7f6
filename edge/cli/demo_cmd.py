"""``kiosk demo``: the whole appliance on this machine, walked through a short scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli.context import state


def demo(
    ctx: typer.Context,
    enroll: Annotated[
        Path | None,
        typer.Option(
            "--enroll",
            help="Riders the operator adds in the cloud: one sub-folder per rider, or images "
            "named by rider id (default: the bundled sample rider). The first one rents.",
            metavar="DIR",
        ),
    ] = None,
    stranger: Annotated[
        Path | None,
        typer.Option(
            "--stranger",
            help="A photo of somebody not enrolled, for the unknown face (default: the rider "
            "is deleted in the cloud and shows their face again).",
            metavar="PHOTO",
        ),
    ] = None,
    rounds: Annotated[
        int,
        typer.Option("--rounds", min=1, max=1000, help="Rounds of the scenario to run."),
    ] = 1,
    loop: Annotated[
        bool, typer.Option("--loop", help="Repeat the scenario until interrupted (Ctrl-C).")
    ] = False,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            help="Where the demo keeps its state (made fresh in DIR/appliance on each run).",
            metavar="DIR",
        ),
    ] = Path("demo-state"),
    fps: Annotated[
        float, typer.Option("--fps", min=1.0, max=60.0, help="Camera frames per second.")
    ] = 8.0,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="The rider page's port (default ui.port, 8080, or a free one when that is "
            "taken; a port given here must be free).",
        ),
    ] = None,
    pause: Annotated[
        float,
        typer.Option(
            "--pause",
            min=0.0,
            max=3600.0,
            help="Seconds to wait between steps, to follow them on the rider page and with "
            "the CLI (Enter goes on sooner).",
            metavar="SECONDS",
        ),
    ] = 0.0,
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet",
            help="Run two kiosks against one cloud instead: the fleet's rules (a rental at one "
            "kiosk counts at the other, a return anywhere closes it, an overdue then lost "
            "powerbank blocks the rider everywhere), rental times compressed to seconds.",
        ),
    ] = False,
) -> None:
    """Run the whole appliance here: cloud API, board simulator, kiosk, sync, rider page.

    One round: the sample rider rents a powerbank, returns it into another slot, and an
    unknown face is refused; each step prints what the rider screen says and what reached
    the cloud. Liveness is off (the camera shows still photos). Logs below warning level
    appear only with --debug. With --fleet: two kiosks, one cloud (docs/fleet.md).

    Like `kiosk run`, the demo writes runtime.json and serves /healthz and /metrics beside
    the rider page; it prints the --config to give `kiosk status`, `kiosk slots --cached`
    and `kiosk events tail` to look inside it while it runs.
    """
    from cloud_sync.errors import InputError
    from edge.demo.scenario import run_demo

    cli = state(ctx)
    if fleet and (stranger is not None or loop or rounds != 1 or port is not None):
        raise InputError("--fleet runs one round on free ports: drop --stranger, --rounds, "
                         "--loop and --port")  # fmt: skip
    quiet = {} if cli.debug else {"log": {"level": "warning"}}  # the scenario speaks on stdout
    ui = {} if port is None else {"ui": {"port": port}}
    kiosk = {"state_dir": str(state_dir.absolute())}  # the CLI may look from another folder
    settings = cli.settings(kiosk=kiosk, camera={"fps": fps}, **quiet, **ui)
    if fleet:
        from edge.demo.fleet import run_fleet_demo

        done = run_fleet_demo(settings, say=typer.echo, enroll=enroll, pause_s=pause)
        typer.echo(
            f"done in {done.seconds:.1f} s: 2 kiosks, {done.rentals} rental(s), {done.returns} "
            f"return(s), {done.refused} refusal(s); {done.cloud_events} events in the cloud; "
            f"state in {done.state_dir}"
        )
        return
    summary = run_demo(
        settings,
        say=typer.echo,
        enroll=enroll,
        stranger=stranger,
        rounds=0 if loop else rounds,
        pause_s=pause,
        any_port=port is None,
    )
    typer.echo(
        f"done in {summary.seconds:.1f} s: {summary.rounds} round(s), {summary.rentals} "
        f"rental(s), {summary.returns} return(s), {summary.refused} unknown face(s) refused; "
        f"{summary.cloud_events} events in the cloud; state in {summary.state_dir}"
    )
