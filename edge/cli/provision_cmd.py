"""``kiosk provision``: give this kiosk its identity from the installer's provisioning file.

Run once by ``kiosk-provision.service`` on first boot (``--from
/boot/firmware/kiosk-provision.toml``), and by hand when needed: it is idempotent, resumes
where a power cut or an unreachable cloud stopped it, and does nothing once done. See
``edge.provision`` and docs/provisioning.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloud_sync.logs import configure_logging
from edge.cli.context import state


def provision(
    ctx: typer.Context,
    source: Annotated[
        Path,
        typer.Option(
            "--from",
            help="The provisioning file (kiosk-provision.toml on the boot partition); "
            "deleted, token and all, once provisioning is done.",
            metavar="FILE",
        ),
    ],
    etc: Annotated[
        Path | None,
        typer.Option(
            "--etc",
            help="Where to write kiosk.toml and first-boot/ (default <root>/etc/kiosk).",
            metavar="DIR",
        ),
    ] = None,
    root: Annotated[
        Path,
        typer.Option(
            "--root",
            help="A folder standing for / (tests, image work): the settings go to "
            "<root>/etc/kiosk and the state to <root>/var/lib/kiosk.",
            metavar="DIR",
        ),
    ] = Path("/"),
    retry_for: Annotated[
        float,
        typer.Option(
            "--retry-for",
            min=0,
            max=86400,
            help="Seconds to keep retrying while the cloud is unreachable.",
            metavar="SECONDS",
        ),
    ] = 120.0,
) -> None:
    """Create this kiosk's keys, register them with the cloud using the one-time token,
    pin the cloud's roster key and write kiosk.toml; resumes after an interruption, does
    nothing once done. Exit 4 on a bad provisioning file, 7 when the cloud refuses the
    token or stays unreachable."""
    from edge.provision.apply import Locations
    from edge.provision.apply import provision as run_provision

    cli = state(ctx)
    configure_logging(
        "unprovisioned",
        level="debug" if cli.debug else "info",
        fmt=cli.log_format,  # type: ignore[arg-type]
    )
    where = Locations(source=source, etc=etc or root / "etc" / "kiosk", root=root)
    outcome = run_provision(where, retry_for_s=retry_for, say=typer.echo)
    if not outcome.done:
        typer.echo(f"{outcome.kiosk_id} is already provisioned ({outcome.config}); nothing to do")
        return
    how = "provisioned (resumed)" if outcome.resumed else "provisioned"
    roster = "" if outcome.roster_pinned else "; no roster key pinned (this cloud serves none)"
    typer.echo(f"{outcome.kiosk_id} {how}: settings in {outcome.config}{roster}")
