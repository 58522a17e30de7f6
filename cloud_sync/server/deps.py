"""What the API's route modules share: operators' tokens and the role each route needs,
the caller's source address and the signed request target.

Every admin route declares the role it needs with one of ``Admin``, ``Support`` or
``Installer`` (``Needs``): an admin may do everything, a support operator what needs
``support``, an installer what needs ``installer`` (``operators`` lists the routes of
each). The bearer token is an operator's (``kiosk-cloud operators add``), or the bootstrap
``admin_token`` setting, which acts as an admin named ``bootstrap`` only while no admin
operator exists; once one does it is refused (403 ``bootstrap_retired``), and more
operators are added with an admin's token or ``kiosk-cloud operators add`` on the database.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import Depends, Request

from cloud_sync.server import operators
from cloud_sync.server.audit import Entry
from cloud_sync.server.operators import Role
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses, source_of

#: The error answers of every admin route, for the OpenAPI document.
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(401, 403, 503)
BOOTSTRAP = "bootstrap"


@dataclass(frozen=True)
class Caller:
    """Who sent the request: an operator's name and role, ``bootstrap`` or ``app``."""

    name: str
    role: str
    request_id: str | None = None

    def entry(self, action: str, target: str, **detail: Any) -> Entry:
        """The audit log's entry for ``action`` on ``target`` by this caller."""
        return Entry(self.name, action, target, detail, self.request_id)


def client_source(request: Request) -> str:
    """The address lockouts count for this request (see ``ratelimit.source_of``)."""
    return source_of(request.client.host if request.client else None)


def _bearer_token(given: str) -> str | None:
    """The token of ``Authorization: Bearer <token>``, the scheme in any case (RFC 7235),
    for operators' and the app's tokens alike; None for any other header."""
    scheme, _, token = given.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _operator(request: Request) -> Caller:
    """The operator whose bearer token the request carries, within the lockouts: 429 while
    this source or this token is locked out; a wrong, missing or revoked token counts
    towards a lockout of the source (and of the token, when one was sent). The bootstrap
    token is an admin named ``bootstrap`` while no admin operator exists."""
    service = request.app.state.service
    database = service.store.db
    given = request.headers.get("authorization", "")
    source = client_source(request)
    service.limiter.check("admin", source, given)
    token = _bearer_token(given)
    found = operators.by_token(database, token) if token else None
    request_id = getattr(request.state, "request_id", None)
    if found is not None and not found.revoked:
        return Caller(found.name, found.role, request_id)
    bootstrap = service.settings.admin_token
    if (
        found is None
        and token
        and bootstrap is not None
        and hmac.compare_digest(token.encode(), bootstrap.get_secret_value().encode())
    ):
        if operators.admin_exists(database):
            raise Problem(
                403,
                "bootstrap_retired",
                "the bootstrap admin token is retired: an admin operator exists; use an "
                "operator's token (`kiosk-cloud operators add` on the database adds one)",
            )
        return Caller(BOOTSTRAP, "admin", request_id)
    service.limiter.failed("admin", source, given)
    if found is not None:
        raise Problem(401, "operator_revoked", f"operator {found.name!r} was revoked")
    raise Problem(401, "bad_admin_token", "missing or wrong operator bearer token")


class Needs:
    """A route's dependency: an operator token (``_operator``) whose role may do what the
    route does; 403 ``role_required`` naming the role otherwise (nothing is changed, and
    nothing counts towards a lockout: the token was right). It runs before a body is read
    (``bodies.StrictJSONRoute``), and again, from what it found then, where FastAPI
    resolves the route's dependencies."""

    checks_before_body: ClassVar[bool] = True

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(self, request: Request) -> Caller:
        caller: Caller | None = getattr(request.state, "operator", None)
        if caller is None:
            caller = _operator(request)
            request.state.operator = caller
        state_log = getattr(request.state, "log", None)
        if isinstance(state_log, dict):
            state_log["operator"] = caller.name
        if caller.role not in ("admin", self.role):
            raise Problem(
                403,
                "role_required",
                f"this needs the {' or '.join(dict.fromkeys((self.role, 'admin')))} role; "
                f"operator {caller.name!r} is {caller.role}",
            )
        request.state.caller = caller
        return caller


def refuse_unless(caller: Caller, role: Role, what: str) -> None:
    """403 ``role_required`` unless ``caller`` has ``role`` (or is an admin): for a route
    whose body decides the role it needs."""
    if caller.role not in ("admin", role):
        raise Problem(
            403,
            "role_required",
            f"{what} needs the {role} role; operator {caller.name!r} is {caller.role}",
        )


def _require_app(request: Request) -> Caller:
    """``Authorization: Bearer <app token>``, compared in constant time, within the
    lockouts (as operators' tokens are). Once per request: before the body is read
    (``bodies.StrictJSONRoute``), the answer is kept for the route's dependency."""
    found = getattr(request.state, "caller", None)
    if isinstance(found, Caller) and found.role == "app":
        return found
    service = request.app.state.service
    token = service.settings.app_token
    if token is None:
        raise Problem(403, "app_disabled", "no app token is configured on this server")
    given = request.headers.get("authorization", "")
    source = client_source(request)
    service.limiter.check("app", source, given)
    presented = _bearer_token(given) or ""
    expected = token.get_secret_value()
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        service.limiter.failed("app", source, given)
        raise Problem(401, "bad_app_token", "missing or wrong app bearer token")
    caller = Caller("app", "app", getattr(request.state, "request_id", None))
    request.state.caller = caller
    return caller


class _AppToken:
    """``_require_app`` as a dependency that runs before the body is read."""

    checks_before_body: ClassVar[bool] = True

    def __call__(self, request: Request) -> Caller:
        return _require_app(request)


require_app = _AppToken()


def caller_of(request: Request) -> Caller:
    """The caller a role dependency of this route let through."""
    caller: Caller = request.state.caller
    return caller


Admin = Depends(Needs("admin"))
Support = Depends(Needs("support"))
Installer = Depends(Needs("installer"))
App = Depends(require_app)


def raw_target(request: Request) -> str:
    """The path (and query) exactly as the client sent it: what the signature covers."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = bytes(raw).decode("latin-1")
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path
