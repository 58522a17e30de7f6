"""Build the kiosk runtime from the settings, and serve the rider page beside it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
import uvicorn

from cloud_sync.outbox import Outbox
from edge import flow as f
from edge.errors import EdgeError
from edge.runtime import Runtime
from edge.settings import Settings
from edge.slots import Inventory
from edge.ui.server import ScreenHub, create_app
from edge.vault.live import open_roster
from edge.vision import setup
from edge.vision.live import LiveConfig, LivePipeline
from hardware.cameras.factory import open_camera
from hardware.driver import SerialBoard

log = structlog.get_logger("edge.assemble")

MAINTENANCE_FLAG = "maintenance"


def service_check(settings: Settings, roster_changed_at: float | None = None) -> str | None:
    """A reason the kiosk may not rent right now, from what it can see locally."""
    if (settings.kiosk.state_dir / MAINTENANCE_FLAG).exists():
        return "maintenance"
    if datetime.now(UTC).year < 2024:
        return "clock_not_set"
    return None


@contextmanager
def rider_page(hub: ScreenHub, settings: Settings) -> Iterator[str]:
    """Serve the rider page on the configured local address while the block runs."""
    app = create_app(hub, settings.ui.language)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.ui.host,
            port=settings.ui.port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, name="rider-page", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise EdgeError(
                f"the rider page cannot listen on {settings.ui.host}:{settings.ui.port}"
            )
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.ui.port
    try:
        yield f"http://{settings.ui.host}:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@dataclass
class Parts:
    runtime: Runtime
    board: SerialBoard
    hub: ScreenHub


def assemble(settings: Settings) -> Parts:
    """Every part from the settings; errors name the part and the setting to fix."""
    kiosk_id = settings.kiosk.id
    state_dir: Path = settings.kiosk.state_dir
    outbox = Outbox(settings.outbox_path, kiosk_id, max_bytes=settings.outbox.max_bytes)
    roster = open_roster(
        settings.roster_path, settings.keys_dir, kiosk_id, settings.roster.cloud_roster_key
    )
    engine = setup.engine(settings.vision)
    vision = settings.vision
    pipeline = LivePipeline(
        engine,
        setup.gallery(roster, engine.model_version),
        setup.policy(vision),
        quality=setup.quality_config(vision.quality),
        config=LiveConfig(
            detect_width=vision.live_detect_width,
            consensus_k=vision.consensus_k,
            consensus_n=vision.consensus_n,
            track_lost_s=vision.track_lost_s,
            reverify_s=vision.reverify_s,
        ),
        liveness=setup.liveness_config(vision) if vision.liveness.method != "off" else None,
    )
    camera = open_camera(settings.camera, vision.max_image_pixels)
    board = SerialBoard.from_config(settings.board).open()
    inventory = Inventory(state_dir / "slots.db", settings.board.slots, outbox=outbox)
    hub = ScreenHub()
    timeouts = f.Timeouts(**settings.flow.model_dump())
    flow = f.Flow(
        mode=settings.kiosk.mode,
        timeouts=timeouts,
        route=settings.kiosk.route,
        vehicle=settings.kiosk.vehicle,
    )
    runtime = Runtime(
        kiosk_id=kiosk_id,
        flow=flow,
        camera=camera,
        pipeline=pipeline,
        board=board,
        board_events=board.next_event,
        inventory=inventory,
        outbox=outbox,
        roster=roster,
        hub=hub,
        model_version=engine.model_version,
        service_check=lambda: service_check(settings),
    )
    return Parts(runtime, board, hub)
