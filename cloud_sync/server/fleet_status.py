"""Each kiosk's latest status, as the cloud keeps it and shows it.

``record`` runs inside the ingest transaction (``Store.ingest``): of the batch's
``kiosk.status`` events it keeps, per kiosk, the newest in ``kiosk_status`` (by the time the
kiosk reported it, then the event id); an older status arriving after a newer one never
overwrites it. A status also sets the ``health`` of the powerbanks it names that the cloud
already tracks (``hot``, ``not_charging``, or cleared when the kiosk no longer flags it).

``fleet`` reads every registered kiosk with its latest status, for ``kiosk-cloud fleet``,
``GET /v1/admin/fleet`` and the per-kiosk gauges of ``/metrics``. A kiosk is ``online``
when its latest status arrived within ``offline_after_s``; ``roster_lag`` is how many
roster versions the kiosk is behind the cloud's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_sync.events import BatteryHealth, Event, KioskStatus, SlotStatus
from cloud_sync.server.migrations import utc_text

DEFAULT_OFFLINE_AFTER_S = 900.0  # three of the kiosks' default status intervals


def record(tx: Any, events: Sequence[Event], received_at: str) -> None:
    """Keep the newest ``kiosk.status`` of each kiosk in ``events`` (unless a newer one is
    stored already) and the health of the powerbanks it names."""
    newest: dict[str, Event] = {}
    for event in events:
        if event.type != "kiosk.status":
            continue
        held = newest.get(event.kiosk_id)
        if held is None or (event.occurred_at, event.id) > (held.occurred_at, held.id):
            newest[event.kiosk_id] = event
    for kiosk_id, event in sorted(newest.items()):
        assert isinstance(event.payload, KioskStatus)
        kept = tx.run(
            "INSERT INTO kiosk_status (kiosk_id, reported_at, received_at, event_id, status) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kiosk_id) DO UPDATE SET "
            "reported_at = excluded.reported_at, received_at = excluded.received_at, "
            "event_id = excluded.event_id, status = excluded.status "
            "WHERE excluded.reported_at > kiosk_status.reported_at OR "
            "(excluded.reported_at = kiosk_status.reported_at "
            "AND excluded.event_id > kiosk_status.event_id)",
            [
                kiosk_id,
                utc_text(event.occurred_at),
                received_at,
                event.id,
                event.payload.model_dump_json(),
            ],
        )
        if kept:
            _set_health(tx, event.payload.slots)


def _set_health(tx: Any, slots: Sequence[SlotStatus]) -> None:
    flagged = [[s.health, s.powerbank_id] for s in slots if s.powerbank_id and s.health]
    healthy = [[s.powerbank_id] for s in slots if s.powerbank_id and not s.health]
    if flagged:
        tx.many("UPDATE powerbanks SET health = ? WHERE powerbank_id = ?", flagged)
    if healthy:
        tx.many(
            "UPDATE powerbanks SET health = NULL WHERE powerbank_id = ? "
            "AND health IN ('hot', 'not_charging')",  # the kiosks' flags, never custody's
            healthy,
        )


class FlaggedPowerbank(BaseModel):
    """A powerbank a kiosk stopped renting, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slot: int
    powerbank_id: str | None
    health: BatteryHealth
    charge: int | None = None
    temperature: int | None = None


class FleetKiosk(BaseModel):
    """One registered kiosk and its latest status (null fields: it never reported)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kiosk_id: str
    site: str
    disabled: bool
    last_seen: str | None = Field(description="when the cloud received its latest status")
    last_seen_age_s: float | None
    online: bool = Field(description="its latest status arrived within the offline window")
    reported_at: str | None = Field(description="the kiosk's own time of that status")
    version: str | None
    roster_version: int | None
    roster_lag: int | None = Field(description="cloud roster version minus the kiosk's")
    backlog: int | None = Field(description="events waiting in the kiosk's outbox")
    board_online: bool | None
    out_of_service: str | None
    free_slots: int | None = Field(description="empty slots a powerbank can be returned into")
    charged: int | None = Field(description="powerbanks charged enough to rent, not flagged")
    flagged: list[FlaggedPowerbank] = Field(default_factory=list)
    slots: list[SlotStatus] = Field(default_factory=list)


def read_fleet(
    database: Any, offline_after_s: float = DEFAULT_OFFLINE_AFTER_S, now: datetime | None = None
) -> list[FleetKiosk]:
    """``fleet`` in a transaction of its own on ``database``."""
    with database.transaction() as tx:
        return fleet(tx, now or datetime.now(UTC), offline_after_s)


def fleet(
    tx: Any, now: datetime, offline_after_s: float = DEFAULT_OFFLINE_AFTER_S
) -> list[FleetKiosk]:
    """Every registered kiosk with its latest status, by kiosk id."""
    rows = tx.rows(
        "SELECT k.kiosk_id, k.site, k.disabled, s.received_at, s.reported_at, s.status "
        "FROM kiosks AS k LEFT JOIN kiosk_status AS s ON s.kiosk_id = k.kiosk_id "
        "ORDER BY k.kiosk_id"
    )
    state = tx.rows("SELECT version FROM roster_state WHERE id = 1")
    cloud_roster = int(state[0][0]) if state else None
    return [_kiosk(row, cloud_roster, now, offline_after_s) for row in rows]


def _kiosk(
    row: tuple[Any, ...], cloud_roster: int | None, now: datetime, offline_after_s: float
) -> FleetKiosk:
    kiosk_id, site, disabled, received, reported, text = row
    status: KioskStatus | None = None
    if text is not None:
        try:
            status = KioskStatus.model_validate_json(text)
        except ValidationError:  # stored by a version whose model differs: shown as unknown
            status = None
    age = None
    if received is not None:
        age = max(0.0, (now - datetime.fromisoformat(received)).total_seconds())
    empty: dict[str, Any] = {
        "version": None,
        "roster_version": None,
        "roster_lag": None,
        "backlog": None,
        "board_online": None,
        "out_of_service": None,
        "free_slots": None,
        "charged": None,
    }
    if status is not None:
        empty = {
            "version": status.version,
            "roster_version": status.roster_version,
            "roster_lag": None
            if cloud_roster is None
            else max(0, cloud_roster - status.roster_version),
            "backlog": status.backlog,
            "board_online": status.board_online,
            "out_of_service": status.out_of_service,
            "free_slots": sum(1 for s in status.slots if s.state == "empty"),
            "charged": sum(1 for s in status.slots if s.state == "ready" and s.health is None),
            "flagged": [
                FlaggedPowerbank(
                    slot=s.number,
                    powerbank_id=s.powerbank_id,
                    health=s.health,
                    charge=s.charge,
                    temperature=s.temperature,
                )
                for s in status.slots
                if s.health is not None
            ],
            "slots": status.slots,
        }
    return FleetKiosk(
        kiosk_id=kiosk_id,
        site=site or "",
        disabled=bool(disabled),
        last_seen=received,
        last_seen_age_s=None if age is None else round(age, 3),
        online=age is not None and age <= offline_after_s and not disabled,
        reported_at=reported,
        **empty,
    )
