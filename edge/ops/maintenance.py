"""Maintenance mode: a flag file the runtime reads, and an event naming who set it.

``<state_dir>/maintenance`` (JSON: since, operator, reason, via) exists while the kiosk is out of service for maintenance;
the runtime checks it (``maintenance_reason``) before starting a rental and shows "out of
service" on the rider screen. A technician sets it with ``kiosk maintenance on``, or the
cloud with the ``maintenance-on`` remote command; each change records a
``kiosk.maintenance`` event (class ops) naming the operator.

A flag file that exists but cannot be read counts as *on*: when in doubt, no rental starts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_sync.events import Event
from cloud_sync.files import read_small, remove_durably
from cloud_sync.private_files import write_private

if TYPE_CHECKING:  # the caller opens it; reading the flag needs no sqlite_utils
    from cloud_sync.outbox import Outbox

FILENAME = "maintenance"  # the runtime checks that this file exists (edge.runtime.assemble)
Via = Literal["cli", "remote"]


class Maintenance(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    since: datetime
    operator: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=200)
    via: Via = "cli"


def read_maintenance(state_dir: Path) -> Maintenance | None:
    """The maintenance flag, or None when the kiosk is in service."""
    path = state_dir / FILENAME
    try:
        data = read_small(path, 64 * 1024)
    except FileNotFoundError:
        return None
    except OSError as exc:  # out of service while the flag cannot be read: the safe side
        return Maintenance(
            since=datetime.now(UTC),
            operator="unknown",
            reason=f"flag unreadable: {exc.strerror or exc}"[:200],
        )
    try:
        return Maintenance.model_validate_json(data.decode("utf-8"))
    except (ValidationError, UnicodeDecodeError):
        return Maintenance(since=datetime.now(UTC), operator="unknown", reason="flag file damaged")


def maintenance_reason(state_dir: Path) -> str | None:
    """What the runtime needs: None in service, else a short reason for the log."""
    flag = read_maintenance(state_dir)
    if flag is None:
        return None
    return f"maintenance by {flag.operator}" + (f": {flag.reason}" if flag.reason else "")


def set_maintenance(
    state_dir: Path,
    outbox: Outbox | None,
    on: bool,
    operator: str,
    reason: str = "",
    via: Via = "cli",
) -> tuple[Maintenance | None, Event | None]:
    """Turn maintenance on or off; returns the flag now in force and the event recorded."""
    path = state_dir / FILENAME
    flag: Maintenance | None = None
    if on:
        flag = Maintenance(since=datetime.now(UTC), operator=operator, reason=reason, via=via)
        write_private(path, flag.model_dump_json().encode("utf-8"))
    else:
        remove_durably(path)  # a cut after "off" must not bring the flag back
    event = None
    if outbox is not None:
        event = outbox.append(
            "kiosk.maintenance", on=on, operator=operator, reason=reason[:200], via=via
        )
    return flag, event
