"""Request ids, one JSON log line per request, and Prometheus metrics for the cloud API.

``RequestContext`` is a plain ASGI middleware: it takes the caller's ``X-Request-Id``
(when it is a sane token) or makes a ULID, returns it on the response, and when the
response is done logs one summary line (method, route, status, duration, the kiosk and
whatever the handler added to ``request.state.log``) and counts it in the metrics.
"""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from ulid import ULID

log = structlog.get_logger("cloud_sync.server")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: The methods counted by name; any other (a client may send any token) counts as
#: ``other``, so clients cannot make a series each.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """Every metric of one app instance, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kiosk_cloud_http_requests_total",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kiosk_cloud_http_request_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.events = Counter(
            "kiosk_cloud_events_total",
            "Events received, by result (accepted, duplicate, rejected).",
            ["result"],
            registry=self.registry,
        )
        self.refused = Counter(
            "kiosk_cloud_refused_requests_total",
            "Requests answered with an error, by error code.",
            ["code"],
            registry=self.registry,
        )
        for result in ("accepted", "duplicate", "rejected"):
            self.events.labels(result)


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or str(ULID())
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["log"] = {}
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route_obj: Any = scope.get("route")
            route = getattr(route_obj, "path", None) or "unmatched"  # a template, or none
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            fields = dict(state.get("log", {}))
            level = "warning" if status >= 400 else "info"
            if route in ("/healthz", "/metrics") and status < 400:
                level = "debug"
            getattr(log, level)(
                "request",
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(seconds * 1000, 2),
                **fields,
            )


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None
