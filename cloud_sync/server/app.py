"""The FastAPI application of the cloud API: routes, error answers, startup.

Kiosk routes are authenticated by request signature (``cloud_sync.signing``); admin
routes by an operator's ``Authorization: Bearer <token>`` and the role each names
(``deps``), and every change they make is in the audit log; ``/v1/provision`` by a one-time
provisioning token; ``/healthz`` and ``/metrics`` are open. The process keeps no state
between requests except caches it can lose, so any number of replicas can share one
PostgreSQL database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cloud_sync.errors import SignatureError, SigningKeyError, StoreError
from cloud_sync.events import (
    KIOSK_ID_PATTERN,
    MAX_SEQ,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    Rejection,
)
from cloud_sync.server import learning
from cloud_sync.server.bodies import StrictJSONRoute, check_media_type
from cloud_sync.server.bodies import read_body as _read_body
from cloud_sync.server.config import CloudSettings
from cloud_sync.server.consent_api import router as consent_router
from cloud_sync.server.custody_api import router as custody_router
from cloud_sync.server.db import ConflictError, StoreDataError, StoreFaultError, open_database
from cloud_sync.server.deps import ADMIN_ERRORS, Admin, Installer, Support, caller_of, client_source
from cloud_sync.server.deps import raw_target as _raw_target
from cloud_sync.server.erasure_api import router as erasure_router
from cloud_sync.server.fleet_api import install as install_fleet
from cloud_sync.server.home_api import router as home_router
from cloud_sync.server.ingest import Limits, decode_body, parse_batch
from cloud_sync.server.migrations import LATEST, migrate
from cloud_sync.server.models import (
    Health,
    KioskIn,
    KioskOut,
    ProvisionIn,
    ProvisionOut,
    TokenIn,
    TokenOut,
)
from cloud_sync.server.observability import Metrics, RequestContext
from cloud_sync.server.operators_api import router as operators_router
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import RateLimiter, RatePolicy, Scope, limited_responses
from cloud_sync.server.rentals_api import router as rentals_router
from cloud_sync.server.revocation import KioskRevoked
from cloud_sync.server.revoke_api import router as revoke_router
from cloud_sync.server.roster import CloudRoster, box_public_key, open_cloud_roster
from cloud_sync.server.roster_api import router as roster_router
from cloud_sync.server.store import KioskRecord, Store, record_nonce, revoked_kiosk
from cloud_sync.server.sweep import start_sweeper
from cloud_sync.server.terms_api import router as terms_router
from cloud_sync.signing import (
    check_timestamp,
    parse_public_key,
    read_headers,
    verify_request,
)
from cloud_sync.wire_values import printable

log = structlog.get_logger("cloud_sync.server")
disable_created_metrics()  # type: ignore[no-untyped-call]
API_VERSION = "1.0.0"
KEY_CACHE_S = 5.0
_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(400, 401, 403, 413, 415, 422, 503)
# provisioning: 409 for a kiosk id registered already, or revoked
_TOKEN_ERRORS = limited_responses(400, 401, 403, 409, 413, 415, 422, 503)


class Service:
    """The work behind the routes; runs in the thread pool (the database calls block)."""

    def __init__(self, settings: CloudSettings, store: Store, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.limiter = RateLimiter(store.db, RatePolicy.from_settings(settings))
        self.limits = Limits(
            settings.max_decoded_bytes,
            settings.max_batch_events,
            timedelta(seconds=settings.max_future_s),
        )
        self._last_prune = 0.0
        self._keys: dict[str, tuple[float, KioskRecord, Ed25519PublicKey]] = {}
        self.roster: CloudRoster | None = None  # decides template.proposed (learning)

    def forget_keys(self) -> None:
        """Drop the cached kiosk keys (after the registry changed under this process)."""
        self._keys.clear()

    def kiosk_key(self, kiosk_id: str) -> tuple[KioskRecord, Ed25519PublicKey] | None:
        """A registered kiosk and its key, cached for ``KEY_CACHE_S`` (a re-keyed or
        disabled kiosk is refused by every replica within that time)."""
        cached = self._keys.get(kiosk_id)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_S:
            return cached[1], cached[2]
        record = self.store.kiosk(kiosk_id)
        if record is None:
            return None
        try:
            key = parse_public_key(record.public_key)
        except SignatureError as exc:  # stored before the check that now refuses it
            raise Problem(
                401,
                "bad_signature",
                f"the key registered for kiosk {kiosk_id!r} cannot be trusted ({exc}); "
                "register the kiosk's key again",
            ) from None
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[kiosk_id] = (time.monotonic(), record, key)
        return record, key

    def authenticate(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        source: str,
        scope: Scope,
    ) -> Any:
        """The request's verified signature, within the rate limits (``ratelimit``): 429
        while the source is locked out; a wrong signature counts towards a lockout of the
        source and of the kiosk id it names, and is answered 429 once that kiosk id is
        locked out; a right one is never refused for its kiosk id (an id is no secret, so
        a stranger's forgeries must not lock the real kiosk out) and, once its nonce is
        spent, counts against the kiosk's ``scope`` limit: a replay is answered ``401
        replayed`` and counts against nothing, so it cannot spend the real kiosk's limit."""
        named = {name.lower(): value for name, value in headers.items()}.get("x-kiosk-id")
        self.limiter.check("kiosk", source, None)
        try:
            signed = self._verify(method, path, headers, body)
        except Problem as problem:
            if problem.status == 401:
                self.limiter.failed("kiosk", source, named)
                self.limiter.check("kiosk", source, named)
            raise
        self.limiter.hit(
            scope, signed.kiosk_id, first=lambda tx: record_nonce(tx, signed.kiosk_id, signed.nonce)
        )
        return signed

    def _verify(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        try:
            signed = read_headers(headers)
            check_timestamp(signed.timestamp, time.time(), self.settings.clock_skew_s)
        except SignatureError as exc:
            raise Problem(401, "bad_signature", str(exc)) from None
        found = self.kiosk_key(signed.kiosk_id)
        if found is None:
            raise Problem(401, "unknown_kiosk", f"kiosk {signed.kiosk_id!r} is not registered")
        kiosk, public_key = found
        try:
            verify_request(public_key, signed, method, path, body)
        except SignatureError as exc:
            raise Problem(401, "bad_signature", str(exc)) from None
        if kiosk.disabled:  # the kiosk itself, revoked (``revocation``)
            raise KioskRevoked(signed)
        return signed

    def ingest(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        state: dict[str, Any],
        source: str,
    ) -> BatchResponse:
        signed = self.authenticate(method, path, headers, body, source, "batch")
        state["kiosk_id"] = signed.kiosk_id
        check_media_type(headers.get("content-type"))
        data = decode_body(body, headers.get("content-encoding"), self.limits.max_decoded_bytes)
        try:
            batch, events = parse_batch(data, signed.kiosk_id, self.limits, datetime.now(UTC))
        except Problem as problem:
            self.metrics.events.labels("rejected").inc(len(problem.rejected))
            raise
        try:
            result = self.store.ingest(signed.kiosk_id, batch.batch_id, events)
        except Problem as problem:
            self.metrics.events.labels("rejected").inc(len(problem.rejected))
            raise
        except ConflictError:
            raise Problem(
                503,
                "conflict",
                "a concurrent request stored some of these events; send again",
                headers={"Retry-After": "1"},
            ) from None
        except StoreDataError as exc:
            raise _unstorable(events, exc) from None
        self.metrics.events.labels("accepted").inc(len(result.accepted))
        self.metrics.events.labels("duplicate").inc(len(result.duplicate))
        stored = {*result.accepted, *result.duplicate}  # a resent one not yet decided too
        learning.consider_all(self.roster, [event for event in events if event.id in stored])
        state.update(
            batch_id=batch.batch_id,
            events=len(events),
            accepted=len(result.accepted),
            duplicate=len(result.duplicate),
        )
        self._prune_nonces()
        return BatchResponse(
            batch_id=batch.batch_id, accepted=result.accepted, duplicate=result.duplicate
        )

    def _prune_nonces(self) -> None:
        if time.monotonic() - self._last_prune > 60:
            self._last_prune = time.monotonic()
            self.store.prune_nonces(2 * self.settings.clock_skew_s + 60)


def _service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


Svc = Annotated[Service, Depends(_service)]


def _unstorable(events: list[Any], exc: StoreDataError) -> Problem:
    """What a batch the database refused (a value no check caught) is answered: 422 naming
    the event when it is alone, else 400, which makes the kiosk split the batch until the
    event is alone. Never 503: sending it again cannot help."""
    why = f"the database cannot store this event: {exc}"
    if len(events) == 1:
        rejection = Rejection(index=0, id=events[0].id, reason=why)
        return Problem(422, "rejected_events", "1 of 1 events cannot be stored", [rejection])
    return Problem(
        400,
        "unstorable",
        f"the database cannot store one of these {len(events)} events ({exc}); nothing was "
        "stored; send them in smaller batches to find it",
    )


def _error(
    request: Request,
    status: int,
    code: str,
    reason: str,
    rejected: list[Rejection] | None = None,
) -> JSONResponse:
    """The error answer; whatever of the input it shows is made printable first, so the
    answer itself never fails to encode."""
    request_id = getattr(request.state, "request_id", None)
    shown = [
        Rejection(
            index=item.index,
            id=printable(item.id, 64) if item.id is not None else None,
            reason=printable(item.reason),
        )
        for item in rejected or []
    ]
    reason = printable(reason, 2000)
    body = ErrorBody(error=code, reason=reason, request_id=request_id, rejected=shown)
    state_log = getattr(request.state, "log", None)
    if isinstance(state_log, dict):
        state_log.update(error=code, reason=reason[:200])
    metrics: Metrics = request.app.state.metrics
    metrics.refused.labels(code).inc()
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def _check_keys(public_key: str, box_key: str | None) -> None:
    try:
        parse_public_key(public_key)
    except SignatureError as exc:
        raise Problem(422, "bad_public_key", str(exc)) from None
    if box_key is not None:
        try:
            box_public_key(box_key)
        except ValueError as exc:
            raise Problem(422, "bad_box_public_key", str(exc)) from None


def create_app(settings: CloudSettings) -> FastAPI:
    """The cloud API for ``settings`` (database opened and migrated at startup)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = await run_in_threadpool(open_database, settings.database_url, settings.pool_size)
        try:
            await run_in_threadpool(migrate, database)
            app.state.roster = await run_in_threadpool(open_cloud_roster, settings, database)
        except BaseException:
            database.close()
            raise
        app.state.service = Service(settings, Store(database, settings.rental_due_s), metrics)
        app.state.service.roster = app.state.roster
        # overdue and lost rentals, pseudonyms, retention (sweep.py, erasure.py)
        sweeper = start_sweeper(settings, database, app.state.roster)
        log.info(
            "cloud.started",
            database=database.dialect,
            schema_version=LATEST,
            roster=app.state.roster is not None,
        )
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.stop()
            database.close()

    # /docs and /redoc load Swagger UI and ReDoc from files the package ships, not a CDN.
    app = FastAPIOffline(
        title="Powerbank kiosk cloud API",
        version=API_VERSION,
        description=(
            "The thin cloud API of the powerbank kiosks: signed, idempotent event batches, "
            "the kiosk registry, provisioning, reconciliation and the encrypted roster. "
            "See docs/sync.md and docs/roster.md."
        ),
        lifespan=lifespan,
    )
    app.router.route_class = StrictJSONRoute  # bounded, strict JSON bodies on every route
    app.state.metrics = metrics
    app.state.roster = None
    app.add_middleware(RequestContext, metrics=metrics)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        response = _error(request, exc.status, exc.code, exc.reason, rejected=exc.rejected)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(
            f"{'.'.join(printable(str(p), 64) for p in e['loc'])}: {printable(e['msg'], 300)}"
            for e in exc.errors()[:5]
        )
        return _error(request, 422, "invalid_request", reasons)

    @app.exception_handler(StoreDataError)
    async def _unstorable_value(request: Request, exc: StoreDataError) -> JSONResponse:
        log.warning("cloud.unstorable_value", error=printable(str(exc), 300))
        reason = f"the database cannot store a value of this request: {exc}"
        return _error(request, 422, "unstorable", reason)

    @app.exception_handler(StoreFaultError)
    async def _store_fault(request: Request, exc: StoreFaultError) -> JSONResponse:
        log.error("cloud.database_fault", error=str(exc))
        return _error(request, 500, "database_error", "the database refused a statement")

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        log.error("cloud.database_error", error=str(exc))
        response = _error(request, 503, "unavailable", "the database is unavailable; retry")
        response.headers["Retry-After"] = "2"
        return response

    @app.exception_handler(SigningKeyError)
    async def _keys(request: Request, exc: SigningKeyError) -> JSONResponse:
        log.error("cloud.roster_keys_error", error=str(exc))
        response = _error(
            request, 503, "roster_keys", "the cloud's roster keys are unusable; see its log"
        )
        response.headers["Retry-After"] = "60"
        return response

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # the client hung up before its body arrived: nobody gets this answer, and it is
        # no fault of the server (no traceback, no 5xx); the request line says 499
        reason = "the client closed the connection before its body arrived"
        return _error(request, 499, "client_disconnected", reason)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("cloud.unexpected_error")
        return _error(request, 500, "internal", f"unexpected {type(exc).__name__}")

    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody}})
    def healthz(svc: Svc) -> Health:
        """Alive, and the database answers."""
        svc.store.ping()
        return Health(status="ok", database=svc.store.db.dialect, schema_version=LATEST)

    @app.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/events:batch",
        response_model=BatchResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "Signed by the kiosk (X-Kiosk-* headers); gzip allowed.",
                "content": {"application/json": {"schema": BatchRequest.model_json_schema()}},
            }
        },
    )
    async def events_batch(request: Request) -> BatchResponse:
        """Store a kiosk's batch of events, once each (idempotent by event id)."""
        body = await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        headers = dict(request.headers)
        state_log: dict[str, Any] = request.state.log
        svc: Service = request.app.state.service
        return await run_in_threadpool(
            svc.ingest,
            request.method,
            _raw_target(request),
            headers,
            body,
            state_log,
            client_source(request),
        )

    app.include_router(roster_router)
    app.include_router(rentals_router)
    install_fleet(app, metrics)
    app.include_router(custody_router)
    app.include_router(terms_router)
    app.include_router(erasure_router)
    app.include_router(home_router)
    app.include_router(consent_router)
    app.include_router(operators_router)
    app.include_router(revoke_router)

    @app.post(
        "/v1/provision", status_code=201, response_model=ProvisionOut, responses=_TOKEN_ERRORS
    )
    def provision(request: Request, body: ProvisionIn, svc: Svc) -> ProvisionOut:
        """Register a kiosk with a one-time provisioning token and its public keys; the
        answer names the roster public key for the kiosk to pin. Sending the same request
        again (same spent token, kiosk id and keys) gets the same answer, so a kiosk that
        lost the first answer can finish; any other use of a spent token is refused."""
        source = client_source(request)
        svc.limiter.check("provision", source, body.token)  # locked out: 429, token unread
        _check_keys(body.public_key, body.box_public_key)
        try:
            svc.store.provision(
                body.token, body.kiosk_id, body.public_key, body.site, body.box_public_key
            )
        except Problem as problem:
            if problem.status == 401:  # a wrong, spent or expired token
                svc.limiter.failed("provision", source, body.token)
            raise
        record = svc.store.kiosk(body.kiosk_id)
        assert record is not None
        roster = request.app.state.roster
        return ProvisionOut(
            **record.__dict__,
            roster_public_key=roster.keys.public_key if roster is not None else None,
            roster_model=settings.roster_model,
        )

    @app.post("/v1/admin/kiosks", response_model=KioskOut, dependencies=[Admin], responses=_ERRORS)
    def register_kiosk(request: Request, body: KioskIn, svc: Svc) -> KioskOut:
        """Register a kiosk (or replace its keys and site)."""
        _check_keys(body.public_key, body.box_public_key)
        svc.store.register_kiosk(body.kiosk_id, body.public_key, body.site, body.box_public_key)
        caller_of(request).entry("kiosk.register", body.kiosk_id, site=body.site).save(svc.store.db)
        svc._keys.pop(body.kiosk_id, None)
        record = svc.store.kiosk(body.kiosk_id)
        assert record is not None
        return KioskOut(**record.__dict__)

    @app.get(
        "/v1/admin/kiosks",
        response_model=list[KioskOut],
        dependencies=[Support],
        responses=ADMIN_ERRORS,
    )
    def list_kiosks(svc: Svc) -> list[KioskOut]:
        """Every registered kiosk."""
        return [KioskOut(**record.__dict__) for record in svc.store.kiosks()]

    @app.post(
        "/v1/admin/provisioning-tokens",
        status_code=201,
        response_model=TokenOut,
        dependencies=[Installer],
        responses=_TOKEN_ERRORS,
    )
    def issue_token(request: Request, body: TokenIn, svc: Svc) -> TokenOut:
        """A one-time provisioning token (optionally bound to one kiosk id); installers
        may issue them."""
        ttl = body.ttl_s or settings.provisioning_token_ttl_s
        held = svc.store.kiosk(body.kiosk_id) if body.kiosk_id is not None else None
        if held is not None and held.disabled:  # the token could never be spent
            raise revoked_kiosk(held.kiosk_id)
        token, expires = svc.store.issue_token(ttl, body.kiosk_id, body.site)
        entry = caller_of(request).entry("token.issue", body.kiosk_id or "*", expires_at=expires)
        entry.save(svc.store.db)
        return TokenOut(token=token, expires_at=expires, kiosk_id=body.kiosk_id)

    @app.get("/v1/admin/events", dependencies=[Support], responses=ADMIN_ERRORS)
    def list_events(
        svc: Svc,
        kiosk_id: Annotated[str | None, Query(pattern=KIOSK_ID_PATTERN)] = None,
        after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Stored events in (kiosk, seq) order."""
        return svc.store.events(kiosk_id, after_seq, limit)

    @app.get("/v1/admin/rentals", dependencies=[Support], responses=ADMIN_ERRORS)
    def list_rentals(
        svc: Svc,
        status: Literal[
            "open", "overdue", "lost", "closed", "returned_unrecorded", "failed", "all"
        ] = "open",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Rentals, open ones by default."""
        return svc.store.rentals(None if status == "all" else status, limit)

    @app.get("/v1/admin/returns", dependencies=[Support], responses=ADMIN_ERRORS)
    def list_returns(
        svc: Svc,
        flagged: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Returns, or only the flagged ones (duplicates)."""
        return svc.store.returns(flagged, limit)

    return app
