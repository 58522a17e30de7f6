"""What the running kiosk says about itself: ``runtime.json``, ``/healthz`` and the offline
indicator, from the runtime's parts.

``Reporter`` is one thread of ``kiosk run``: every ``every_s`` seconds it writes
``<state_dir>/runtime.json`` (``edge.ops.runtime_status``), sets the gauges that are not
counted as things happen (maintenance, MQTT connected) and shows or hides the rider page's
"Offline: rentals still work" line from the outbox's view of the cloud (the sync daemon is
another process: it records its last success and last error in the outbox). On a clean stop
it removes ``runtime.json``, so ``kiosk status`` says at once that the kiosk is not running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from cloud_sync.outbox_schema import Stats
from edge import __version__
from edge.ops.metrics import HealthReport
from edge.ops.runtime_status import (
    Component,
    RuntimeStatus,
    new_status,
    remove_runtime_status,
    write_runtime_status,
)

if TYPE_CHECKING:
    from cloud_sync.mqtt.client import KioskMqtt
    from edge.runtime.loop import Runtime

log = structlog.get_logger("edge.ops")

#: The cloud counts as unreachable once the oldest unsent event is this old while the last
#: exchange failed (or nothing was ever acknowledged).
OFFLINE_AFTER_S = 120.0


def offline(stats: Stats | None, after_s: float = OFFLINE_AFTER_S) -> bool:
    """True when the cloud has been unreachable for a while, as the outbox tells it.

    The last exchange failed (or none ever succeeded) and an event has been waiting for
    ``after_s`` seconds: a kiosk that simply has nothing to send is not offline.
    """
    if stats is None or stats.oldest_pending_age_s is None:
        return False
    failing = stats.last_error is not None or stats.last_success_at is None
    return failing and stats.oldest_pending_age_s >= after_s


def camera_component(runtime: Runtime) -> Component:
    health = runtime.camera_health
    status = None if health is None else health.status
    if status is None:
        return Component(ok=None, detail="no camera status yet")
    if status.state == "open":
        return Component(ok=True, detail="delivering frames")
    return Component(ok=False, detail=f"{status.state}: {status.reason}"[:500])


def board_component(runtime: Runtime) -> Component:
    inventory = runtime.inventory
    if inventory.board_online:
        return Component(ok=True, detail=f"answering, {len(inventory.slots())} slots")
    return Component(ok=False, detail="not answering")


def health_report(runtime: Runtime) -> HealthReport:
    """``/healthz``: the camera, the board and whether the kiosk may rent (with reasons)."""
    camera, board = camera_component(runtime), board_component(runtime)
    reason = runtime.flow.out_of_service
    return HealthReport(
        checks={"camera": camera.ok, "board": board.ok, "in_service": reason is None},
        details={
            "camera": camera.detail,
            "board": board.detail,
            "in_service": f"out of service: {reason}" if reason else "renting",
        },
    )


@dataclass
class Reporter:
    """The thread that writes ``runtime.json`` and keeps the offline indicator current."""

    runtime: Runtime
    state_dir: Path
    mode: str
    mqtt: Callable[[], KioskMqtt | None] = lambda: None
    every_s: float = 2.0
    offline_after_s: float = OFFLINE_AFTER_S

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = datetime.now(UTC)
        self._offline: bool | None = None

    def start(self) -> Reporter:
        self.report()
        self._thread = threading.Thread(target=self._run, name="ops-reporter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reporting and remove ``runtime.json`` (the kiosk is no longer running)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        remove_runtime_status(self.state_dir)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.report()
            except Exception as exc:  # a full disk must not end the kiosk's reports for good
                log.warning("runtime_status.failed", error=f"{type(exc).__name__}: {exc}")

    def status(self) -> RuntimeStatus:
        from edge.ops.remote import mqtt_component

        runtime = self.runtime
        return new_status(
            started_at=self._started_at,
            version=__version__,
            mode=self.mode,
            phase=runtime.flow.phase.value,
            out_of_service=runtime.flow.out_of_service,
            camera=camera_component(runtime),
            board=board_component(runtime),
            mqtt=mqtt_component(self.mqtt()),
            counts={**runtime.metrics.counts(), "roster_version": runtime.loaded_roster_version},
        )

    def report(self) -> None:
        """Write ``runtime.json`` once, and update the gauges and the offline indicator."""
        runtime = self.runtime
        write_runtime_status(self.state_dir, self.status())
        link = self.mqtt()
        runtime.metrics.mqtt_connected.set(1 if link is not None and link.connected else 0)
        runtime.metrics.maintenance.set(1 if (self.state_dir / "maintenance").exists() else 0)
        try:
            stats: Stats | None = runtime.outbox.stats()
        except Exception:  # a busy outbox: keep the indicator as it is
            return
        now_offline = offline(stats, self.offline_after_s)
        if now_offline != self._offline:
            self._offline = now_offline
            runtime.hub.publish(offline=now_offline)
            log.info("cloud.offline" if now_offline else "cloud.online")
