"""The ``kiosk-cloud`` command: the thin cloud API and its administration."""

from __future__ import annotations

import typer

from edge.cli.runner import run_app
from edge.errors import NotAvailableError

app = typer.Typer(
    name="kiosk-cloud",
    help="The thin cloud API that receives kiosk events and serves rosters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def root() -> None:
    """The thin cloud API that receives kiosk events and serves rosters."""


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve() -> None:
    """Serve the cloud API (events ingest, roster, kiosk registry). [not built yet]"""
    raise NotAvailableError(
        "'kiosk-cloud serve' is not built in this version yet (store-and-forward sync)"
    )


def main() -> None:
    raise SystemExit(run_app(app, "kiosk-cloud"))
