"""Prometheus metrics and a ``/healthz`` for the kiosk's local web server.

The runtime makes one ``KioskMetrics``, counts into it as things happen, and mounts the
routes on the rider page's FastAPI app (``mount_ops``) or serves them apart
(``create_ops_app``)::

    metrics = KioskMetrics(kiosk_id, version, outbox_stats=outbox.stats)
    app = create_app(hub, language)
    mount_ops(app, metrics, health=lambda: HealthReport.of(camera=..., board=...))
    ...
    metrics.rentals.labels("started").inc()
    metrics.decision_seconds.observe(0.42)

Outbox depth and sync results are read from the outbox at scrape time (the sync daemon is
another process; its errors show here as changes of the outbox's last error).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Route

from cloud_sync.outbox_schema import Stats

RECOGNITION_OUTCOMES = ("recognised", "unrecognised", "ambiguous", "liveness", "no_face", "claim")
RENTAL_RESULTS = ("started", "failed")


@dataclass(frozen=True)
class HealthReport:
    """Each component's state; healthy when none is False (None means unknown)."""

    checks: Mapping[str, bool | None] = field(default_factory=dict)
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(value is not False for value in self.checks.values())


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class _OutboxCollector(Collector):
    """Reads the outbox's stats at each scrape."""

    def __init__(self, stats: Callable[[], Stats]) -> None:
        self._stats = stats
        self._last_error_at: str | None = None
        self._errors = 0

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            stats = self._stats()
        except Exception:  # a locked or vanished outbox: report what can be reported
            return
        pending = GaugeMetricFamily(
            "kiosk_outbox_pending_events",
            "Events not yet acknowledged, by class.",
            labels=["class"],
        )
        for event_class, count in stats.pending.items():
            pending.add_metric([event_class], count)
        yield pending
        yield GaugeMetricFamily(
            "kiosk_outbox_oldest_pending_seconds",
            "Age of the oldest unacknowledged event (0 when none).",
            value=stats.oldest_pending_age_s or 0.0,
        )
        yield GaugeMetricFamily(
            "kiosk_outbox_quarantined_events", "Events the cloud refused.", value=stats.quarantined
        )
        yield GaugeMetricFamily(
            "kiosk_outbox_bytes", "Bytes the outbox holds in events.", value=stats.bytes_used
        )
        if stats.last_error_at and stats.last_error_at != self._last_error_at:
            self._last_error_at = stats.last_error_at
            self._errors += 1
        yield CounterMetricFamily(
            "kiosk_sync_errors",
            "Failed exchanges with the cloud seen in the outbox since this process started.",
            value=self._errors,
        )
        yield GaugeMetricFamily(
            "kiosk_sync_failing",
            "1 while the last exchange with the cloud failed.",
            value=1.0 if stats.last_error else 0.0,
        )
        success = _timestamp(stats.last_success_at)
        if success is not None:
            yield GaugeMetricFamily(
                "kiosk_sync_last_success_timestamp_seconds",
                "When the cloud last acknowledged a batch.",
                value=success,
            )


class KioskMetrics:
    """Every metric of one kiosk process, in its own registry."""

    def __init__(
        self,
        kiosk_id: str,
        version: str,
        outbox_stats: Callable[[], Stats] | None = None,
    ) -> None:
        self.kiosk_id = kiosk_id
        self.version = version
        self.registry = CollectorRegistry()
        reg = self.registry
        self.info = Gauge(
            "kiosk_info",
            "Always 1; labels say which kiosk and version.",
            ["kiosk_id", "version"],
            registry=reg,
        )
        self.info.labels(kiosk_id, version).set(1)
        self.rentals = Counter(
            "kiosk_rentals", "Rentals by result (started, failed).", ["result"], registry=reg
        )
        self.returns = Counter("kiosk_returns", "Powerbanks returned.", registry=reg)
        self.recognitions = Counter(
            "kiosk_recognitions", "Face decisions by outcome.", ["outcome"], registry=reg
        )
        self.decision_seconds = Histogram(
            "kiosk_decision_seconds",
            "From the first frame of a face to the decision.",
            buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
            registry=reg,
        )
        self.board_errors = Counter(
            "kiosk_board_errors", "Slot board errors by kind.", ["kind"], registry=reg
        )
        self.maintenance = Gauge("kiosk_maintenance", "1 while in maintenance mode.", registry=reg)
        self.mqtt_connected = Gauge(
            "kiosk_mqtt_connected", "1 while connected to the broker.", registry=reg
        )
        for result in RENTAL_RESULTS:
            self.rentals.labels(result)
        for outcome in RECOGNITION_OUTCOMES:
            self.recognitions.labels(outcome)
        if outbox_stats is not None:
            reg.register(_OutboxCollector(outbox_stats))

    def decided(self, accepted: bool, reason: str, latency_s: float) -> None:
        """One face decision: its outcome and how long it took."""
        self.recognitions.labels(decision_outcome(accepted, reason)).inc()
        self.decision_seconds.observe(max(0.0, latency_s))

    def seen(self, item: object) -> None:
        """Count a board error among the runtime's inputs (others are ignored)."""
        kind = board_error_kind(item)
        if kind is not None:
            self.board_errors.labels(kind).inc()

    def counts(self) -> dict[str, int]:
        """Plain totals for telemetry and ``runtime.json``: rentals, returns, recognitions."""
        totals: dict[str, int] = {}
        for counter, label in ((self.rentals, "result"), (self.recognitions, "outcome")):
            for family in counter.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        key = sample.labels[label]
                        totals[f"rentals_{key}" if label == "result" else key] = int(sample.value)
        for family in self.returns.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    totals["returns"] = int(sample.value)
        return totals

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def decision_outcome(accepted: bool, reason: str) -> str:
    """The ``outcome`` label of a face decision (``RECOGNITION_OUTCOMES``)."""
    if accepted:
        return "recognised"
    for outcome in ("liveness", "ambiguous", "no_face", "claim"):
        if outcome in reason:
            return outcome
    return "ambiguous" if "margin" in reason else "unrecognised"


def board_error_kind(item: object) -> str | None:
    """The ``kind`` label when a runtime input reports a board error, else None."""
    from edge.flow.values import EjectFailed, EjectUnconfirmed, EjectUnsettled
    from edge.runtime.board_worker import Refreshed

    if isinstance(item, Refreshed):
        return None if item.ok else "no_answer"
    if isinstance(item, EjectFailed):
        return item.reason
    if isinstance(item, EjectUnconfirmed):
        return "unconfirmed"
    if isinstance(item, EjectUnsettled):
        return "unsettled"
    return None


def metrics_router(
    metrics: KioskMetrics, health: Callable[[], HealthReport] | None = None
) -> APIRouter:
    """``GET /metrics`` (Prometheus text) and ``GET /healthz`` (200, or 503 when unhealthy)."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        report = health() if health is not None else HealthReport()
        body = {
            "status": "ok" if report.ok else "degraded",
            "version": metrics.version,
            "checks": dict(report.checks),
            "details": dict(report.details),
        }
        return JSONResponse(body, status_code=200 if report.ok else 503)

    return router


def mount_ops(
    app: FastAPI, metrics: KioskMetrics, health: Callable[[], HealthReport] | None = None
) -> FastAPI:
    """Add ``/metrics`` and ``/healthz`` to ``app``, replacing a plainer ``/healthz`` it has."""
    keep: list[BaseRoute] = [
        route
        for route in app.router.routes
        if not (isinstance(route, Route) and route.path in ("/healthz", "/metrics"))
    ]
    app.router.routes[:] = keep
    app.include_router(metrics_router(metrics, health))
    return app


def create_ops_app(
    metrics: KioskMetrics, health: Callable[[], HealthReport] | None = None
) -> FastAPI:
    """A separate app with only ``/metrics`` and ``/healthz`` (its own port, if preferred)."""
    app = FastAPI(title="Kiosk operations", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(metrics_router(metrics, health))
    return app
