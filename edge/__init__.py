"""The kiosk runtime: settings, vision, roster and matcher, the flow, the rider screen, the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("powerbank-kiosk")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
