"""What a kiosk tells the fleet: its state, periodic telemetry, Home Assistant discovery.

Topics, for a kiosk ``<id>`` under the prefix ``kiosk`` (``mqtt.topic_prefix``)::

    kiosk/<id>/state          retained; {"state": "online", ...}; the last will is "offline"
    kiosk/<id>/telemetry      every mqtt.telemetry_interval_s: a TelemetryMessage
    kiosk/<id>/cmd            signed commands in (cloud_sync.mqtt.commands)
    kiosk/<id>/cmd/result     answers out

The runtime supplies a ``Telemetry`` snapshot (slots, outbox, recognitions, ...); the
temperatures are read here from ``/sys/class/thermal`` when the snapshot has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

THERMAL_ROOT = Path("/sys/class/thermal")


@dataclass(frozen=True)
class Topics:
    state: str
    telemetry: str
    command: str
    result: str

    @classmethod
    def for_kiosk(cls, kiosk_id: str, prefix: str = "kiosk") -> Topics:
        base = f"{prefix}/{kiosk_id}"
        return cls(f"{base}/state", f"{base}/telemetry", f"{base}/cmd", f"{base}/cmd/result")


class StateMessage(BaseModel):
    """The retained ``state`` message: online while connected, offline as the last will."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = 1
    state: str = Field(pattern=r"^(online|offline)$")
    kiosk_id: str
    version: str = ""
    since: datetime | None = None
    reason: str | None = None


class Telemetry(BaseModel):
    """A snapshot of the kiosk, supplied by the runtime (any field may be unknown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slots: dict[str, int] = Field(default_factory=dict, description="slot state -> count")
    outbox_pending: int | None = None
    outbox_oldest_age_s: float | None = None
    recognitions: dict[str, int] = Field(default_factory=dict, description="outcome -> count")
    rentals: int | None = None
    returns: int | None = None
    maintenance: bool = False
    camera_ok: bool | None = None
    board_online: bool | None = None
    temperatures: dict[str, float] | None = Field(
        default=None, description="thermal zone -> °C; read from /sys when None"
    )
    versions: dict[str, str] = Field(default_factory=dict)


class TelemetryMessage(Telemetry):
    """What goes out on the telemetry topic: the snapshot plus who, when and uptime."""

    v: int = 1
    kiosk_id: str
    at: datetime
    uptime_s: float
    cpu_temperature: float | None = None


def read_temperatures(root: Path = THERMAL_ROOT) -> dict[str, float]:
    """Thermal zones as ``{type: °C}`` (empty when the machine exposes none)."""
    found: dict[str, float] = {}
    try:
        zones = sorted(root.glob("thermal_zone*"))
    except OSError:
        return found
    for zone in zones:
        try:
            millis = int((zone / "temp").read_text(encoding="ascii").strip())
            kind = (zone / "type").read_text(encoding="utf-8").strip() or zone.name
        except (OSError, ValueError):
            continue
        name = kind if kind not in found else f"{kind}-{zone.name.removeprefix('thermal_zone')}"
        found[name] = round(millis / 1000.0, 1)
    return found


def telemetry_message(
    snapshot: Telemetry, kiosk_id: str, uptime_s: float, thermal_root: Path = THERMAL_ROOT
) -> TelemetryMessage:
    temperatures = (
        snapshot.temperatures
        if snapshot.temperatures is not None
        else read_temperatures(thermal_root)
    )
    fields = snapshot.model_dump()
    fields["temperatures"] = temperatures
    return TelemetryMessage(
        **fields,
        kiosk_id=kiosk_id,
        at=datetime.now(UTC),
        uptime_s=round(uptime_s, 1),
        cpu_temperature=max(temperatures.values()) if temperatures else None,
    )


# -- Home Assistant MQTT discovery ------------------------------------------------------

_SENSORS: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    # key, name, value template, unit, device class
    ("outbox_pending", "Outbox pending", "{{ value_json.outbox_pending }}", "events", None),
    (
        "outbox_oldest_age",
        "Oldest unsent event",
        "{{ value_json.outbox_oldest_age_s }}",
        "s",
        "duration",
    ),
    ("cpu_temperature", "CPU temperature", "{{ value_json.cpu_temperature }}", "°C", "temperature"),
    ("slots_ready", "Slots ready", "{{ value_json.slots.ready | default(0) }}", "slots", None),
    ("rentals", "Rentals", "{{ value_json.rentals }}", None, None),
)


def discovery_messages(
    kiosk_id: str, topics: Topics, version: str, ha_prefix: str = "homeassistant"
) -> list[tuple[str, str]]:
    """Retained ``(topic, payload)`` pairs announcing the kiosk's sensors to Home Assistant."""
    device = {
        "identifiers": [kiosk_id],
        "name": f"Powerbank kiosk {kiosk_id}",
        "manufacturer": "powerbank-kiosk",
        "sw_version": version,
    }
    availability = {
        "topic": topics.state,
        "value_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    messages = []
    for key, name, template, unit, device_class in _SENSORS:
        config: dict[str, object] = {
            "name": name,
            "unique_id": f"{kiosk_id}_{key}",
            "state_topic": topics.telemetry,
            "value_template": template,
            "availability": [availability],
            "device": device,
        }
        if unit:
            config["unit_of_measurement"] = unit
        if device_class:
            config["device_class"] = device_class
        messages.append((f"{ha_prefix}/sensor/{kiosk_id}/{key}/config", json.dumps(config)))
    maintenance = {
        "name": "Maintenance",
        "unique_id": f"{kiosk_id}_maintenance",
        "state_topic": topics.telemetry,
        "value_template": "{{ 'ON' if value_json.maintenance else 'OFF' }}",
        "availability": [availability],
        "device": device,
    }
    messages.append(
        (f"{ha_prefix}/binary_sensor/{kiosk_id}/maintenance/config", json.dumps(maintenance))
    )
    return messages
