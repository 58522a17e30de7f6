"""The fleet over HTTP: ``GET /v1/admin/fleet`` and per-kiosk gauges on ``/metrics``.

Both read the database when asked (``cloud_sync.server.fleet_status``), so every replica
answers the same. The gauges, labelled by ``kiosk_id``, are only for kiosks that reported
a status: ``kiosk_cloud_kiosk_last_seen_age_seconds``, ``kiosk_cloud_kiosk_free_slots``,
``kiosk_cloud_kiosk_charged_powerbanks``, ``kiosk_cloud_kiosk_flagged_powerbanks``,
``kiosk_cloud_kiosk_outbox_backlog`` and ``kiosk_cloud_kiosk_roster_lag``. A database that
does not answer leaves them out of that scrape rather than failing ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, FastAPI, Query, Request
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud_sync.errors import StoreError
from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.deps import ADMIN_ERRORS, Support
from cloud_sync.server.fleet_status import DEFAULT_OFFLINE_AFTER_S, FleetKiosk, read_fleet
from cloud_sync.server.observability import Metrics

log = structlog.get_logger("cloud_sync.server")
router = APIRouter(route_class=StrictJSONRoute)

GAUGES: tuple[tuple[str, str, str], ...] = (
    ("last_seen_age_seconds", "last_seen_age_s", "Seconds since the kiosk's latest status came."),
    ("free_slots", "free_slots", "Empty slots in the kiosk's latest status."),
    ("charged_powerbanks", "charged", "Powerbanks charged enough to rent, not flagged."),
    ("flagged_powerbanks", "flagged", "Powerbanks the kiosk stopped renting (hot, not charging)."),
    ("outbox_backlog", "backlog", "Events waiting in the kiosk's outbox."),
    ("roster_lag", "roster_lag", "Roster versions the kiosk is behind the cloud."),
)


@router.get(
    "/v1/admin/fleet",
    response_model=list[FleetKiosk],
    dependencies=[Support],
    responses=ADMIN_ERRORS,
)
def list_fleet(
    request: Request,
    offline_after: Annotated[
        float,
        Query(ge=1, le=30 * 86400, description="seconds without a status before offline"),
    ] = DEFAULT_OFFLINE_AFTER_S,
) -> list[FleetKiosk]:
    """Every registered kiosk with its latest status: last seen, online, free slots,
    charged and flagged powerbanks, backlog, roster lag, version."""
    return read_fleet(request.app.state.service.store.db, offline_after)


class FleetCollector(Collector):
    """The per-kiosk gauges, read from the database at each scrape."""

    def __init__(self, database: Callable[[], Any]) -> None:
        self._database = database

    def collect(self) -> Iterator[Metric]:
        database = self._database()
        if database is None:  # before startup
            return
        try:
            kiosks = [k for k in read_fleet(database) if k.last_seen is not None]
        except StoreError as exc:
            log.warning("metrics.fleet_unavailable", error=str(exc))
            return
        for name, field, doc in GAUGES:
            gauge = GaugeMetricFamily(f"kiosk_cloud_kiosk_{name}", doc, labels=["kiosk_id"])
            for kiosk in kiosks:
                value = getattr(kiosk, field)
                if isinstance(value, list):
                    value = len(value)
                if value is not None:
                    gauge.add_metric([kiosk.kiosk_id], float(value))
            yield gauge


def install(app: FastAPI, metrics: Metrics) -> None:
    """Serve the fleet route and its gauges on ``app``."""
    app.include_router(router)

    def database() -> Any:
        service = getattr(app.state, "service", None)
        return None if service is None else service.store.db

    metrics.registry.register(FleetCollector(database))
