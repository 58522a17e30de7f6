"""What the API's route modules share: the admin check and the signed request target."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request

from cloud_sync.server.problems import Problem


def require_admin(request: Request) -> None:
    """``Authorization: Bearer <admin token>``, compared in constant time."""
    token = request.app.state.service.settings.admin_token
    if token is None:
        raise Problem(403, "admin_disabled", "no admin token is configured on this server")
    given = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Problem(401, "bad_admin_token", "missing or wrong admin bearer token")


Admin = Depends(require_admin)


def raw_target(request: Request) -> str:
    """The path (and query) exactly as the client sent it: what the signature covers."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = bytes(raw).decode("latin-1")
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path
