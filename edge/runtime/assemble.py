"""Build the kiosk runtime from the settings, and serve the rider page beside it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from cloud_sync.outbox import Outbox
from edge import flow as f
from edge.cabinet.battery import BatteryLimits
from edge.cabinet.rentals import Ledger
from edge.cabinet.slots import Inventory
from edge.runtime import service
from edge.runtime.learning import TemplateLearner, proposals_in
from edge.runtime.loop import Runtime
from edge.runtime.service import CameraHealth
from edge.runtime.serving import serve_in_thread
from edge.settings import Settings
from edge.ui.launch import WILDCARD_HOSTS
from edge.ui.preview import PreviewFrames
from edge.ui.server import ScreenHub, create_app
from edge.vault.files import read_pull_state
from edge.vault.live import open_roster
from edge.vault.store import RosterStore
from edge.vision import setup
from edge.vision.live import LivePipeline
from edge.vision.matcher import Gallery
from hardware.cameras import Camera
from hardware.cameras.factory import open_camera
from hardware.driver import SerialBoard

log = structlog.get_logger("edge.assemble")

MAINTENANCE_FLAG = "maintenance"


def roster_refreshed_at(roster: RosterStore) -> float | None:
    """When the roster was last known current: its last successful pull from the cloud or
    its last change (an applied delta, an enrolment), whichever is later; None if neither.

    A pull that finds nothing new still counts: the kiosk then holds the cloud's latest.
    """
    pulled = read_pull_state(roster.path)
    times = [roster.info().changed_at, None if pulled is None else pulled.checked_at]
    known = [value for value in times if value is not None]
    return max(known) if known else None


def service_check(
    settings: Settings,
    *,
    ledger: Ledger | None = None,
    roster: RosterStore | None = None,
    camera: CameraHealth | None = None,
) -> str | None:
    """A reason the kiosk may not rent right now, from what it can see locally.

    Maintenance, the clock, room on the disk for an eject's intent and in the outbox for
    one more rental's event, the roster's
    age (``roster.max_age_h``, from ``roster_refreshed_at``) and the camera; the runtime
    adds the board. See ``edge.runtime.service`` for the reasons and their order.
    """
    now = datetime.now(UTC)
    return service.reason(
        service.Conditions(
            now=now.timestamp(),
            year=now.year,
            maintenance=(settings.kiosk.state_dir / MAINTENANCE_FLAG).exists(),
            disk_room=True if ledger is None else ledger.disk_room(),
            money_room=True if ledger is None else ledger.has_room(),
            roster_at=None if roster is None else roster_refreshed_at(roster),
            roster_max_age_s=settings.roster.max_age_h * 3600,
            roster_purged=roster is not None and roster.purged,
            camera_down=None if camera is None else camera.down,
        )
    )


@contextmanager
def rider_page(hub: ScreenHub, settings: Settings, runtime: Runtime | None = None) -> Iterator[str]:
    """Serve the rider page on the configured local address while the block runs.

    With ``runtime``, ``/metrics`` (its ``KioskMetrics``) and a ``/healthz`` that answers
    503 with the reasons when the camera is lost, the board offline or the kiosk out of
    service are served beside it.
    """
    preview = None if runtime is None else runtime.preview
    hosts = () if settings.ui.host in WILDCARD_HOSTS else (settings.ui.host,)
    app = create_app(hub, settings.ui.language, settings.ui.languages, preview, hosts=hosts)
    if runtime is not None:
        from edge.ops.metrics import mount_ops
        from edge.ops.reporter import health_report

        mount_ops(app, runtime.metrics, health=lambda: health_report(runtime))
    with serve_in_thread(app, settings.ui.host, settings.ui.port, "rider page") as url:
        yield url


@dataclass
class Parts:
    runtime: Runtime
    board: SerialBoard
    hub: ScreenHub


def assemble(settings: Settings, camera: Camera | None = None) -> Parts:
    """Every part from the settings; errors name the part and the setting to fix.

    ``camera`` replaces the configured one (``kiosk demo`` scripts its own); its health is
    then not followed.
    """
    kiosk_id = settings.kiosk.id
    state_dir: Path = settings.kiosk.state_dir
    outbox = Outbox(settings.outbox_path, kiosk_id, max_bytes=settings.outbox.max_bytes)
    roster = open_roster(
        settings.roster_path,
        settings.keys_dir,
        kiosk_id,
        settings.roster.cloud_roster_key,
        erase_wait_s=settings.roster.erase_wait_s,
    )
    engine = setup.engine(settings.vision)
    vision = settings.vision
    pipeline = LivePipeline(
        engine,
        Gallery([]),  # the runtime loads the roster into it, once
        setup.policy(vision),
        quality=setup.quality_config(vision.quality),
        config=setup.live_config(vision),
        liveness=setup.liveness_config(vision) if vision.liveness.method != "off" else None,
    )
    camera_health = CameraHealth()
    if camera is None:
        camera = open_camera(
            settings.camera, vision.max_image_pixels, on_status=camera_health.update
        )
    board = SerialBoard.from_config(
        settings.board, eject_timeout_s=settings.flow.board_eject_s
    ).open()
    inventory = Inventory(
        state_dir / "slots.db",
        settings.board.slots,
        outbox=outbox,
        min_charge=settings.board.min_charge_pct,
        battery=BatteryLimits.of(settings.board),
    )
    hub = ScreenHub()
    timeouts = f.Timeouts(**settings.flow.model_dump(include=set(f.Timeouts.__dataclass_fields__)))
    flow = f.Flow(
        mode=settings.kiosk.mode,
        timeouts=timeouts,
        route=settings.kiosk.route,
        vehicle=settings.kiosk.vehicle,
        greet_by_name=settings.ui.greet_by_name,
    )

    def check() -> str | None:  # the ledger is the runtime's
        return service_check(settings, ledger=runtime.ledger, roster=roster, camera=camera_health)

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
        fuse_templates=vision.fuse_templates,
        service_check=check,
        camera_health=camera_health,
        status_every_s=settings.flow.status_every_s,
        status_offline_every_s=settings.flow.status_offline_every_s,
        claim_policy=setup.claim_policy(vision),
        claim_lockout=setup.claim_lockout(vision),
        preview=PreviewFrames(settings.ui.preview_fps) if settings.ui.preview else None,
        status_interval_s=settings.sync.status_interval_s,
        purge_after_s=settings.roster.purge_after_h * 3600,
        learner=TemplateLearner(
            kiosk_id,
            engine.model_version,
            roster.cloud_data_key,
            outbox.append,
            earlier=proposals_in(outbox),
        )
        if vision.learn_templates
        else None,
    )
    return Parts(runtime, board, hub)
