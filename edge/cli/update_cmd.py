"""``kiosk update apply | status | rollback | verify``: new versions of the kiosk software.

``apply`` and ``rollback`` change what the kiosk runs: they need a technician
(``edge.cli.auth``) and, to write ``/opt/kiosk`` and restart the services, root. The bundle
is checked (signature, then every file's sha256) before anything is written; the switch
waits for no rental to be under way; a version that does not report healthy in time is
rolled back by itself. See docs/installing.md ("Updates").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edge.cli.auth import require_technician
from edge.cli.context import state
from edge.settings import Settings
from edge.update.hooks import (
    VenvInstaller,
    command_health,
    http_health,
    rental_in_progress,
    restart_with,
)
from edge.update.updater import CURRENT, PREVIOUS, Hooks, Layout, Outcome, Policy, Updater

app = typer.Typer(
    help="Install a new version of the kiosk software from a bundle, or go back to the last one.",
    no_args_is_help=True,
)

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root", help="Where versions are installed (default update.root).", metavar="DIR"
    ),
]
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        max=3600,
        help="Wait up to this many seconds for a rental under way to end (default: refuse).",
        metavar="SECONDS",
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Switch even though an eject intent is recorded (only with kiosk-edge stopped: "
        "an intent left by a crash).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def updater(settings: Settings, root: Path | None) -> Updater:
    """The updater for this kiosk's settings, with the real installer, restart and probes."""
    section = settings.update
    if section.health_command:
        health = command_health(section.health_command)
    else:
        host = "127.0.0.1" if settings.ui.host in ("", "0.0.0.0", "::") else settings.ui.host  # noqa: S104
        health = http_health(section.health_url or f"http://{host}:{settings.ui.port}/healthz")
    hooks = Hooks(
        install=VenvInstaller(section.python, section.system_site_packages),
        restart=restart_with(section.restart_commands),
        health=health,
        rental=lambda: rental_in_progress(settings.outbox_path, settings.kiosk.state_dir),
    )
    policy = Policy(
        public_key=section.release_public_key,
        require_signature=section.require_signature,
        health_timeout_s=section.health_timeout_s,
        health_interval_s=section.health_interval_s,
        health_passes=section.health_passes,
        keep_versions=section.keep_versions,
        unit_dir=section.unit_dir,
    )
    return Updater(root or section.root, hooks, policy)


def _say(outcome: Outcome) -> None:
    if outcome.action == "already-current":
        typer.echo(f"version {outcome.version} is already the current one: nothing to do")
        return
    since = f" (was {outcome.previous})" if outcome.previous else ""
    typer.echo(f"now running version {outcome.version}{since}: healthy, {outcome.detail}")


@app.command("apply")
def apply(
    ctx: typer.Context,
    bundle: Annotated[
        Path, typer.Argument(help="The update bundle: a folder, .tar or .tar.gz.", metavar="BUNDLE")
    ],
    root: RootOption = None,
    wait: WaitOption = 0.0,
    force: ForceOption = False,
) -> None:
    """Check BUNDLE, install it as a new version, switch to it when no rental is under way,
    restart the services, and go back by itself if it does not report healthy in time."""
    settings = state(ctx).settings()
    require_technician(settings.kiosk.state_dir, "kiosk update apply")
    _say(updater(settings, root).apply(bundle, wait_s=wait, force=force))


@app.command("rollback")
def rollback(
    ctx: typer.Context, root: RootOption = None, wait: WaitOption = 0.0, force: ForceOption = False
) -> None:
    """Go back to the previous version (the one before the last update), and restart."""
    settings = state(ctx).settings()
    require_technician(settings.kiosk.state_dir, "kiosk update rollback")
    _say(updater(settings, root).rollback(wait_s=wait, force=force))


@app.command("verify")
def verify(ctx: typer.Context, bundle: Annotated[Path, typer.Argument(metavar="BUNDLE")]) -> None:
    """Check BUNDLE's signature and every file's checksum, without installing anything."""
    settings = state(ctx).settings()
    manifest = updater(settings, None).verify(bundle)
    arches = ", ".join(sorted(manifest.requirements))
    typer.echo(
        f"{bundle}: version {manifest.version}, {len(manifest.files)} files, for {arches}: "
        "signature and checksums ok"
    )


@app.command("status")
def status(ctx: typer.Context, root: RootOption = None, as_json: JsonOption = False) -> None:
    """The current and previous versions, and every version installed."""
    settings = state(ctx).settings()
    layout = Layout(root or settings.update.root)
    current, previous = layout.link(CURRENT), layout.link(PREVIOUS)
    data: dict[str, Any] = {
        "root": str(layout.root),
        "current": current,
        "previous": previous,
        "available": [
            {
                "version": item.version,
                "created_at": item.created_at.isoformat(),
                "current": item.version == current,
                "previous": item.version == previous,
                "failed": item.failed,
            }
            for item in layout.installed()
        ],
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"current:  {current or 'none'}")
    if current is not None and (problem := layout.damaged(current)) is not None:
        typer.echo(
            f"  damaged ({problem}): the next kiosk update run goes back to the other version"
        )
    typer.echo(f"previous: {previous or 'none'}")
    typer.echo(f"installed in {layout.root}:")
    for item in data["available"]:
        mark = "current" if item["current"] else "previous" if item["previous"] else ""
        failed = f"  failed its health check: {item['failed']}" if item["failed"] else ""
        typer.echo(f"  {item['version']:<16} built {item['created_at'][:16]}  {mark}{failed}")
    if not data["available"]:
        typer.echo("  (none)")


def register(root_app: typer.Typer) -> None:
    """Add ``kiosk update`` to the ``kiosk`` app."""
    root_app.add_typer(app, name="update")
