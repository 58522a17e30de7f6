"""``kiosk screen env``: the rider screen's settings for kiosk-ui.service (``edge.ui.launch``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from edge.cli.context import state
from edge.ui.launch import env_file_text, screen_env

app = typer.Typer(help="The rider screen's browser (kiosk-ui.service).", no_args_is_help=True)


@app.command("env")
def env(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write to this file (readable by all: it holds no secret) instead of printing.",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """The screen's settings as KEY=value lines (SCREEN_URL, SCREEN_START, SCREEN_ROTATION,
    SCREEN_BLANK_AFTER_S) for kiosk-screen; kiosk-ui.service runs this before the browser."""
    text = env_file_text(screen_env(state(ctx).settings().ui))
    if out is None:
        typer.echo(text, nl=False)
        return
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(out)
