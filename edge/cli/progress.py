"""Progress for long commands, shown on a terminal only (standard error, gone when done).

Scripts and the journal see nothing of it: when standard error is not a terminal the bar
and the spinner are disabled.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def bar(label: str, total: int, min_total: int = 1) -> Progress:
    """A bar of ``total`` steps; disabled off a terminal or below ``min_total`` steps."""
    console = Console(stderr=True)
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal or total < min_total,
        transient=True,
    )


def spinner(label: str) -> AbstractContextManager[Any]:
    """A spinner with ``label`` while the block runs (one step of unknown length)."""
    console = Console(stderr=True)
    return console.status(label) if console.is_terminal else nullcontext()
