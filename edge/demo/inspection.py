"""How a newcomer looks into a running ``kiosk demo`` with the technician's CLI.

The demo's kiosk keeps its state in ``<state-dir>/appliance/kiosk`` and talks to its own
board simulator and loopback cloud, so the CLI needs the demo's settings, not the
machine's. ``write_demo_config`` writes them to ``<state-dir>/appliance/kiosk.toml``
(every effective setting; secrets are left out, the CLI reads them from where they came
from), and ``inspect_lines`` are the commands the demo prints to use it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import SecretStr

from cloud_sync.private_files import write_private
from edge.settings import Settings

CONFIG_NAME = "kiosk.toml"


def _plain(value: Any) -> Any:
    """Settings data TOML can hold: no secrets, no None, paths and URLs as text."""
    if isinstance(value, dict):
        return {
            key: _plain(item)
            for key, item in value.items()
            if item is not None and not isinstance(item, SecretStr)
        }
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value if item is not None]
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def demo_config_text(settings: Settings) -> str:
    """The demo kiosk's effective settings as a TOML settings file."""
    return tomli_w.dumps(_plain(settings.model_dump(mode="python")))


def write_demo_config(settings: Settings, root: Path) -> Path:
    """Write ``<root>/kiosk.toml`` (owner only: it names the kiosk's paths and keys)."""
    path = (root / CONFIG_NAME).resolve()
    write_private(path, demo_config_text(settings).encode("utf-8"))
    return path


def inspect_lines(config: Path, page: str) -> list[str]:
    """What the demo prints so that the CLI can be pointed at it from another terminal."""
    flag = f"--config {shlex.quote(str(config))}"
    return [
        f"kiosk   look inside while it runs, from another terminal (settings in {config}):",
        f"          kiosk {flag} status",
        f"          kiosk {flag} slots --cached",
        f"          kiosk {flag} events tail",
        f"          curl {page}healthz    curl {page}metrics",
    ]
