"""Run the ``kiosk`` command: the shared runner (``cloud_sync.cli_runner``) with the kiosk's
table of exit codes (``edge.cli.exits``)."""

from __future__ import annotations

from collections.abc import Sequence

import typer

from cloud_sync import cli_runner
from edge.cli.exits import EXIT_CODES


def run_app(app: typer.Typer, prog: str, argv: Sequence[str] | None = None) -> int:
    """Invoke ``app`` (with umask 077) and return the process exit code."""
    return cli_runner.run_app(app, prog, EXIT_CODES, argv)
