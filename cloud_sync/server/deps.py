"""What the API's route modules share: the admin check, the caller's source address and
the signed request target."""

from __future__ import annotations

import hmac
from typing import Any, Literal

from fastapi import Depends, Request

from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses, source_of

#: The error answers of every admin route, for the OpenAPI document.
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(401, 403, 503)


def client_source(request: Request) -> str:
    """The address lockouts count for this request (see ``ratelimit.source_of``)."""
    return source_of(request.client.host if request.client else None)


def _bearer(request: Request, credential: Literal["admin", "app"]) -> None:
    """``Authorization: Bearer <token>``, compared in constant time, within the lockouts:
    429 while this source or this token is locked out, and a wrong or missing token counts
    towards a lockout of the source (and of the token, when one was sent)."""
    service = request.app.state.service
    token = getattr(service.settings, f"{credential}_token")
    if token is None:
        raise Problem(
            403, f"{credential}_disabled", f"no {credential} token is configured on this server"
        )
    given = request.headers.get("authorization", "")
    source = client_source(request)
    service.limiter.check(credential, source, given)
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        service.limiter.failed(credential, source, given)
        raise Problem(401, f"bad_{credential}_token", f"missing or wrong {credential} bearer token")


def require_admin(request: Request) -> None:
    """The operator's admin token (see ``_bearer``)."""
    _bearer(request, "admin")


def require_app(request: Request) -> None:
    """The riders' app backend's token (see ``_bearer``)."""
    _bearer(request, "app")


Admin = Depends(require_admin)
App = Depends(require_app)


def raw_target(request: Request) -> str:
    """The path (and query) exactly as the client sent it: what the signature covers."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = bytes(raw).decode("latin-1")
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path
