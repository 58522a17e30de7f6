"""What the rider screen's service needs to start the browser: ``kiosk screen env``.

kiosk-ui.service runs Chromium, in the cage kiosk compositor, as the unprivileged
``kiosk-ui`` user, which may not read the kiosk's settings file. Before it starts, systemd
runs ``kiosk screen env --out /run/kiosk-ui/screen.env`` with full privileges; the unit
reads that file as its environment, and ``kiosk-screen`` (scripts/kiosk-screen, installed
beside ``kiosk``) builds the compositor's and the browser's command lines from it:

- ``SCREEN_URL``: the rider page (``ui.host``/``ui.port``; a wildcard host means this
  machine, 127.0.0.1);
- ``SCREEN_START``: the page the browser opens first: ``waiting.html`` here, as a file
  URL, which waits for the rider page's ``/healthz`` and then opens it, so that the
  browser never shows its own error page while the kiosk starts or restarts;
- ``SCREEN_ROTATION``: ``ui.rotation`` (0, 90, 180 or 270 degrees, clockwise);
- ``SCREEN_BLANK_AFTER_S``: ``ui.blank_after_s`` (seconds without a touch, or ``never``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from cloud_sync.errors import ConfigError
from edge.config import UiSection

WAITING_PAGE = Path(__file__).resolve().parent / "waiting.html"
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 (names them, binds nothing)


def rider_page_url(ui: UiSection) -> str:
    """The rider page as the screen on this machine reaches it."""
    if ui.port == 0:
        raise ConfigError(
            "ui.port: 0 picks a free port at each start, which the screen cannot find; "
            "set a fixed port (8080 by default)"
        )
    host = "127.0.0.1" if ui.host in WILDCARD_HOSTS else ui.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{ui.port}/"


def start_url(ui: UiSection, page: Path = WAITING_PAGE) -> str:
    """The waiting page as a file URL, told where the rider page is and in which language."""
    query = urlencode({"to": rider_page_url(ui), "lang": ui.language}, quote_via=quote)
    return f"{page.as_uri()}?{query}"


def screen_env(ui: UiSection, page: Path = WAITING_PAGE) -> dict[str, str]:
    """The environment of ``kiosk-screen`` for these settings."""
    return {
        "SCREEN_URL": rider_page_url(ui),
        "SCREEN_START": start_url(ui, page),
        "SCREEN_ROTATION": str(ui.rotation),
        "SCREEN_BLANK_AFTER_S": str(ui.blank_after_s),
    }


def env_file_text(values: dict[str, str]) -> str:
    """``KEY=value`` lines, as systemd's ``EnvironmentFile=`` reads them (no quoting needed:
    the values hold no spaces, quotes or backslashes)."""
    for key, value in values.items():
        if any(char in value for char in " \t\n\"'\\$`"):
            raise ConfigError(f"{key}: {value!r} cannot go into an environment file")
    return "".join(f"{key}={value}\n" for key, value in values.items())
