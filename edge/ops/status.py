"""What ``kiosk status`` gathers: every part of the kiosk, read without disturbing it.

Nothing here opens the camera or the board (the running kiosk holds them): their state
comes from the runtime's ``runtime.json``. The roster, the outbox and the disk are read
directly; the clock from ``timedatectl`` when there is one. Each part has ``ok`` (True,
False, or None when unknown) and a one-line ``detail``; ``problems`` lists the parts that
are not ok, in words.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from cloud_sync.errors import ConfigError, KioskError, SyncError
from edge import __version__
from edge.ops.maintenance import read_maintenance
from edge.ops.runtime_status import Component, RuntimeStatus, is_live, read_runtime_status
from edge.settings import Settings
from edge.vault.keys import BOX_FILE

#: Below this much free space in the state folder the kiosk is in trouble.
DISK_MIN_FREE_BYTES = 200 * 1024 * 1024
DISK_MIN_FREE_RATIO = 0.05
#: A clock before this year was never set (a Pi has no battery-backed clock).
EARLIEST_YEAR = 2025


class Part(BaseModel):
    model_config = ConfigDict(frozen=True)

    ok: bool | None = None
    detail: str = ""


class RuntimePart(Part):
    running: bool = False
    pid: int | None = None
    phase: str | None = None
    out_of_service: str | None = None
    updated_at: datetime | None = None


class MaintenancePart(Part):
    on: bool = False
    operator: str | None = None
    reason: str | None = None
    since: datetime | None = None


class RosterPart(Part):
    version: int | None = None
    riders: int | None = None
    age_s: float | None = None
    too_old: bool | None = None
    # more riders than the face policy decides on without a claim (``None``: not read)
    claim_for_everyone: bool | None = None


class OutboxPart(Part):
    pending: int | None = None
    pending_by_class: dict[str, int] = {}
    oldest_pending_age_s: float | None = None
    quarantined: int | None = None
    last_success_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None


class MqttPart(Part):
    enabled: bool = False
    broker: str = ""
    connected: bool | None = None


class DiskPart(Part):
    path: str = ""
    total_bytes: int | None = None
    free_bytes: int | None = None
    used_percent: float | None = None


class ClockPart(Part):
    now: datetime
    synchronized: bool | None = None
    timezone: str | None = None


class StatusReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    kiosk_id: str
    site: str
    mode: str
    ok: bool
    problems: list[str]
    runtime: RuntimePart
    maintenance: MaintenancePart
    camera: Part
    board: Part
    roster: RosterPart
    outbox: OutboxPart
    mqtt: MqttPart
    disk: DiskPart
    clock: ClockPart
    versions: dict[str, str]


def _from_runtime(component: Component, live: bool, what: str) -> Part:
    if not live:
        return Part(
            ok=None, detail=f"unknown: kiosk run is not running (kiosk doctor tests the {what})"
        )
    return Part(ok=component.ok, detail=component.detail)


def runtime_part(runtime: RuntimeStatus | None, live: bool) -> RuntimePart:
    if runtime is None:
        return RuntimePart(ok=False, detail="kiosk run is not running (no runtime.json)")
    if not live:
        return RuntimePart(
            ok=False,
            pid=runtime.pid,
            updated_at=runtime.updated_at,
            detail=f"kiosk run is not running (last report {runtime.updated_at:%Y-%m-%d %H:%M:%S} UTC)",
        )
    detail = f"pid {runtime.pid}, {runtime.phase or 'running'}"
    if runtime.out_of_service:
        detail += f", out of service: {runtime.out_of_service}"
    return RuntimePart(
        ok=runtime.out_of_service is None,
        detail=detail,
        running=True,
        pid=runtime.pid,
        phase=runtime.phase or None,
        out_of_service=runtime.out_of_service,
        updated_at=runtime.updated_at,
    )


def maintenance_part(state_dir: Path) -> MaintenancePart:
    flag = read_maintenance(state_dir)
    if flag is None:
        return MaintenancePart(ok=True, detail="off")
    return MaintenancePart(
        ok=False,
        detail=f"on since {flag.since:%Y-%m-%d %H:%M} UTC by {flag.operator}"
        + (f": {flag.reason}" if flag.reason else ""),
        on=True,
        operator=flag.operator,
        reason=flag.reason,
        since=flag.since,
    )


def roster_part(settings: Settings) -> RosterPart:
    path = settings.roster_path
    if not path.is_file():
        return RosterPart(ok=False, detail=f"no roster at {path}: no rider can be recognised")
    if not (settings.keys_dir / BOX_FILE).is_file():
        return RosterPart(ok=False, detail=f"the kiosk's keys are missing in {settings.keys_dir}")
    from edge.vault.live import open_roster  # with a roster only: it loads numpy
    from edge.vision.setup import automatic_up_to, beyond_automatic

    try:
        store = open_roster(
            path,
            settings.keys_dir,
            settings.kiosk.id,
            settings.roster.cloud_roster_key,
            read_only=True,
        )
        try:
            info = store.info()
        finally:
            store.close()
    except (KioskError, OSError) as exc:
        return RosterPart(ok=False, detail=f"cannot open the roster: {exc}")
    too_old = info.age_s is not None and info.age_s > settings.roster.max_age_h * 3600
    detail = f"version {info.version}, {info.riders} riders, {_age(info.age_s)} old"
    if too_old:
        detail += f" (older than {settings.roster.max_age_h:g} h: rentals stop)"
    try:  # status reports a bad operating-points file, it does not stop at it
        beyond = beyond_automatic(info.riders, automatic_up_to(settings.vision))
        policy_error = None
    except ConfigError as exc:
        beyond, policy_error = None, str(exc)
    for note in (beyond, policy_error):
        if note is not None:
            detail += f"; {note}"
    return RosterPart(
        ok=not too_old and info.riders > 0 and policy_error is None,
        detail=detail if info.riders else detail + " (empty)",
        version=info.version,
        riders=info.riders,
        age_s=info.age_s,
        too_old=too_old,
        claim_for_everyone=beyond is not None,
    )


def outbox_part(settings: Settings) -> OutboxPart:
    path = settings.outbox_path
    if not path.is_file():
        return OutboxPart(ok=None, detail=f"no outbox yet at {path}")
    from edge.ops.outbox_read import open_outbox_read_only

    try:
        outbox = open_outbox_read_only(settings)
        try:
            stats = outbox.stats()
        finally:
            outbox.close()
    except SyncError as exc:
        return OutboxPart(ok=False, detail=str(exc))
    detail = f"{stats.pending_total} pending, oldest {_age(stats.oldest_pending_age_s)}"
    if stats.quarantined:
        detail += f", {stats.quarantined} quarantined"
    if stats.last_error:
        detail += f"; last error: {stats.last_error}"
    return OutboxPart(
        ok=not stats.last_error and not stats.quarantined,
        detail=detail,
        pending=stats.pending_total,
        pending_by_class=dict(stats.pending),
        oldest_pending_age_s=(
            None if stats.oldest_pending_age_s is None else round(stats.oldest_pending_age_s, 1)
        ),
        quarantined=stats.quarantined,
        last_success_at=stats.last_success_at,
        last_error=stats.last_error,
        last_error_at=stats.last_error_at,
    )


def mqtt_part(settings: Settings, runtime: RuntimeStatus | None, live: bool) -> MqttPart:
    config = settings.mqtt
    broker = f"{config.host}:{config.port}"
    if not config.enabled:
        return MqttPart(ok=None, detail="disabled (mqtt.enabled = false)", broker=broker)
    if not live or runtime is None:
        return MqttPart(
            ok=None, detail="unknown: kiosk run is not running", enabled=True, broker=broker
        )
    ok = runtime.mqtt.ok
    return MqttPart(ok=ok, detail=runtime.mqtt.detail, enabled=True, broker=broker, connected=ok)


def disk_part(state_dir: Path) -> DiskPart:
    folder = state_dir if state_dir.exists() else Path(state_dir.anchor or "/")
    try:
        usage = shutil.disk_usage(folder)
    except OSError as exc:
        return DiskPart(ok=False, detail=f"{folder}: {exc.strerror}", path=str(folder))
    used = 100.0 * (usage.total - usage.free) / usage.total if usage.total else 0.0
    ok = usage.free >= DISK_MIN_FREE_BYTES and usage.free >= usage.total * DISK_MIN_FREE_RATIO
    return DiskPart(
        ok=ok,
        detail=f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB ({used:.0f}% used)",
        path=str(folder),
        total_bytes=usage.total,
        free_bytes=usage.free,
        used_percent=round(used, 1),
    )


def timedatectl() -> dict[str, str] | None:
    """``timedatectl show`` as a dict, or None where there is no systemd."""
    if shutil.which("timedatectl") is None:
        return None
    try:
        done = subprocess.run(
            ["timedatectl", "show"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def clock_part(now: datetime | None = None, shown: dict[str, str] | None = None) -> ClockPart:
    moment = now or datetime.now(UTC)
    if moment.year < EARLIEST_YEAR:
        return ClockPart(ok=False, detail=f"the clock is not set ({moment:%Y-%m-%d})", now=moment)
    if shown is None:
        return ClockPart(
            ok=None, detail="timedatectl is not available: sync state unknown", now=moment
        )
    synced = shown.get("NTPSynchronized") == "yes"
    return ClockPart(
        ok=synced,
        detail="synchronised" if synced else "not synchronised (NTP)",
        now=moment,
        synchronized=synced,
        timezone=shown.get("Timezone") or None,
    )


def versions() -> dict[str, str]:
    found = {"kiosk": __version__, "python": platform.python_version(), "os": platform.platform()}
    try:
        manifest = json.loads(
            resources.files("models").joinpath("manifest.json").read_text(encoding="utf-8")
        )
        found["face_models"] = str(manifest.get("package_version", ""))
    except (OSError, ValueError):
        pass
    return found


def collect_status(settings: Settings) -> StatusReport:
    state_dir = settings.kiosk.state_dir
    runtime = read_runtime_status(state_dir)
    live = is_live(runtime)
    parts: dict[str, Any] = {
        "runtime": runtime_part(runtime, live),
        "maintenance": maintenance_part(state_dir),
        "camera": _from_runtime(runtime.camera if runtime else Component(), live, "camera"),
        "board": _from_runtime(runtime.board if runtime else Component(), live, "board"),
        "roster": roster_part(settings),
        "outbox": outbox_part(settings),
        "mqtt": mqtt_part(settings, runtime, live),
        "disk": disk_part(state_dir),
        "clock": clock_part(shown=timedatectl()),
    }
    problems = [f"{name}: {part.detail}" for name, part in parts.items() if part.ok is False]
    return StatusReport(
        kiosk_id=settings.kiosk.id,
        site=settings.kiosk.site,
        mode=settings.kiosk.mode,
        ok=not problems,
        problems=problems,
        versions=versions(),
        **parts,
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
