"""``kiosk config``: show the effective settings, check a settings file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import tomli_w
import typer

from edge.cli.context import state
from edge.settings import load_settings, redacted

app = typer.Typer(
    help="Show the effective settings or check a settings file.", no_args_is_help=True
)


def _drop_none(value: object) -> object:
    if isinstance(value, dict):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    return value


@app.command("show")
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of TOML.")] = False,
) -> None:
    """Print the effective settings (file, environment and defaults), secrets redacted."""
    data = redacted(state(ctx).settings())
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(tomli_w.dumps(_drop_none(data)).rstrip())  # type: ignore[arg-type]


@app.command("check")
def check(
    path: Annotated[Path, typer.Argument(help="The settings file to check (TOML).")],
) -> None:
    """Check a settings file; exit 3 naming each bad field and why, 0 when it is valid."""
    load_settings(path)
    typer.echo(f"{path}: valid")
