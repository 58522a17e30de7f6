"""``<state_dir>/runtime.json``: what the running kiosk (``kiosk run``) says about itself.

The runtime writes it every few seconds and whenever something changes (atomically: a
temporary file renamed over the old one), so that ``kiosk status`` and ``kiosk doctor``,
which must not open the camera or the board the runtime holds, can tell how they are. A
reader tolerates a missing, stale or damaged file: the runtime is then "not running".

Schema (version 1), every field but ``schema``, ``pid`` and ``updated_at`` optional::

    {"schema": 1, "pid": 4242, "started_at": "...", "updated_at": "...",
     "version": "0.1.0", "mode": "rental", "phase": "idle",
     "out_of_service": null,                       # or the reason the screen shows
     "camera": {"ok": true, "detail": "opencv /dev/video0 640x480"},
     "board":  {"ok": true, "detail": "firmware 1.2, 8 slots"},
     "mqtt":   {"ok": false, "detail": "cannot connect to broker:8883"},
     "counts": {"rentals": 12, "returns": 9, "recognised": 30, "unrecognised": 4}}
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_sync.files import read_small
from cloud_sync.private_files import write_private

FILENAME = "runtime.json"
SCHEMA_VERSION = 1
#: A file not updated for this long is stale: the runtime is hung or gone.
STALE_AFTER_S = 60.0


class Component(BaseModel):
    """One part of the kiosk: working or not, and a short human-readable detail."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ok: bool | None = None
    detail: str = Field(default="", max_length=500)
    since: datetime | None = None


class RuntimeStatus(BaseModel):
    """The content of ``runtime.json``; unknown fields are ignored when read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    pid: int
    started_at: datetime | None = None
    updated_at: datetime
    version: str = ""
    mode: str = ""
    phase: str = ""
    out_of_service: str | None = None
    camera: Component = Component()
    board: Component = Component()
    mqtt: Component = Component()
    counts: dict[str, int] = Field(default_factory=dict)


def write_runtime_status(state_dir: Path, status: RuntimeStatus) -> Path:
    """Atomically replace ``<state_dir>/runtime.json`` (the runtime's side)."""
    path = state_dir / FILENAME
    write_private(path, status.model_dump_json(by_alias=True, indent=2).encode("utf-8"))
    return path


def new_status(**fields: object) -> RuntimeStatus:
    """A status stamped with this process's pid and the current time."""
    now = datetime.now(UTC)
    values: dict[str, object] = {"pid": os.getpid(), "updated_at": now, "started_at": now}
    values.update(fields)
    return RuntimeStatus.model_validate(values)


def read_runtime_status(state_dir: Path) -> RuntimeStatus | None:
    """The runtime's last report, or None when there is none or it cannot be read."""
    try:
        text = read_small(state_dir / FILENAME).decode("utf-8")
        return RuntimeStatus.model_validate_json(text)
    except (OSError, UnicodeDecodeError, ValidationError):
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user (the service's)
    return True


def is_live(status: RuntimeStatus | None, now: float | None = None) -> bool:
    """True when the report is fresh and its process still exists."""
    if status is None:
        return False
    age = (now if now is not None else time.time()) - status.updated_at.timestamp()
    return age <= STALE_AFTER_S and pid_alive(status.pid)


def remove_runtime_status(state_dir: Path) -> None:
    """Called by the runtime as it stops cleanly."""
    with contextlib.suppress(FileNotFoundError):
        (state_dir / FILENAME).unlink()
