"""Fixtures shared by every test.

Tests that need something outside the repository (the shared face photos, a broker, a
database, a browser) ask for it through ``need``: when it is missing they are skipped on
a developer's machine, and they fail when ``KIOSK_REQUIRE_SERVICES=1`` (set by CI), so CI
can never hide a test by skipping it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

REPO = Path(__file__).resolve().parent.parent
SHARED_FACES = REPO.parent / "shared" / "faces"


def services_required() -> bool:
    return os.environ.get("KIOSK_REQUIRE_SERVICES") == "1"


def need(available: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) when ``what`` is not available."""
    if available:
        return
    if services_required():
        pytest.fail(f"{what} is required here (KIOSK_REQUIRE_SERVICES=1) but is not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="session")
def dev_faces() -> Path:
    """``../shared/faces/dev``: 17 people, one folder each, plus group and no-face shots."""
    folder = SHARED_FACES / "dev"
    need((folder / "labels.csv").is_file(), f"the shared face photos at {folder}")
    return folder


@pytest.fixture(scope="session")
def lfw_faces() -> Path:
    """``../shared/faces/lfw-dev``: 1,132 people from Labeled Faces in the Wild."""
    folder = SHARED_FACES / "lfw-dev"
    need((folder / "labels.csv").is_file(), f"the shared face photos at {folder}")
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def _no_settings_leak(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never read this machine's /etc/kiosk or KIOSK_* environment by accident."""
    for key in list(os.environ):
        if key.startswith("KIOSK_") and key != "KIOSK_REQUIRE_SERVICES":
            monkeypatch.delenv(key)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setattr("edge.settings.DEFAULT_CONFIG_PATH", Path("/nonexistent/kiosk.toml"))
    monkeypatch.setattr("edge.settings.DEFAULT_SECRETS_DIR", Path("/nonexistent/credentials"))
    yield
    structlog.reset_defaults()
