"""State shared by every ``kiosk`` command: the options given before the command name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # settings and logging load when a command asks for them
    from edge.settings import Settings


@dataclass
class CliState:
    config: Path | None = None
    debug: bool = False
    log_format: str = "auto"

    def settings(self, **overrides: Any) -> Settings:
        """Load the settings (failing with a one-line ``ConfigError``) and set up logging."""
        from cloud_sync.logs import configure_logging
        from edge.settings import load_settings

        settings = load_settings(self.config, **overrides)
        level = "debug" if self.debug else settings.log.level
        fmt = self.log_format if self.log_format != "auto" else settings.log.format
        configure_logging(settings.kiosk.id, level=level, fmt=fmt)  # type: ignore[arg-type]
        return settings


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState()
