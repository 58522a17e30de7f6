"""The cloud API as each uvicorn worker process builds it (``kiosk-cloud serve --workers``).

A worker is a fresh process: it cannot be handed the app object that ``serve`` made, so it
builds its own from the same ``KIOSK_CLOUD_*`` environment (``serve`` writes its command
line options there first) and sets up logging the same way.
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI

from cloud_sync.logs import configure_logging
from cloud_sync.server.app import create_app
from cloud_sync.server.config import CloudSettings, load_cloud_settings
from cloud_sync.server.serving import configure as configure_serving


def start_logging(settings: CloudSettings) -> None:
    """Logs of a cloud process: ``cloud`` lines at the settings' level and format."""
    configure_logging("cloud", level=settings.log_level, fmt=settings.log_format)
    structlog.contextvars.unbind_contextvars("kiosk_id")


def app_from_environment() -> FastAPI:
    """uvicorn's app factory for a worker process."""
    settings = load_cloud_settings()
    start_logging(settings)
    configure_serving(settings)  # this worker's header deadline
    return create_app(settings)
