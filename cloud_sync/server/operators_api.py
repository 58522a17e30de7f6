"""Operators and the audit log over HTTP (admin only): add, list and revoke operators;
list the audit log. See ``operators``, ``audit`` and docs/privacy.md."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, ValidationError, field_validator

from cloud_sync.server import audit, operators
from cloud_sync.server.audit import AuditEntry
from cloud_sync.server.bodies import StrictJSONRoute
from cloud_sync.server.deps import ADMIN_ERRORS, Admin, caller_of
from cloud_sync.server.models import _Body, rfc3339
from cloud_sync.server.operators import OperatorOut, Role
from cloud_sync.server.problems import Problem
from cloud_sync.server.ratelimit import limited_responses
from cloud_sync.wire_values import unstorable

if TYPE_CHECKING:
    from cloud_sync.server.app import Service

router = APIRouter(route_class=StrictJSONRoute)
_ERRORS: dict[int | str, dict[str, Any]] = limited_responses(401, 403, 404, 409, 422, 503)
_BODY_ERRORS = limited_responses(400, 401, 403, 409, 413, 415, 422, 503)
OperatorName = Annotated[str, Path(min_length=1, max_length=64)]


class OperatorIn(_Body):
    name: str = Field(min_length=1, max_length=64, description="lowercase letters, digits, . _ -")
    role: str = Field(min_length=1, max_length=32, description="admin, support or installer")


class OperatorAdded(BaseModel):
    name: str
    role: Role
    token: str = Field(description="Shown once; only its hash is stored")


def _service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


@router.post(
    "/v1/admin/operators",
    status_code=201,
    response_model=OperatorAdded,
    dependencies=[Admin],
    responses=_BODY_ERRORS,
)
def add_operator(request: Request, body: OperatorIn) -> OperatorAdded:
    """Add a named operator with a role; the answer holds their token, once."""
    role = operators.check_role(body.role)
    entry = caller_of(request).entry("operator.add", body.name, role=role)
    token = operators.add(_service(request).store.db, body.name, role, entry)
    return OperatorAdded(name=body.name, role=role, token=token)


@router.get(
    "/v1/admin/operators",
    response_model=list[OperatorOut],
    dependencies=[Admin],
    responses=ADMIN_ERRORS,
)
def list_operators(request: Request) -> list[OperatorOut]:
    """Every operator, revoked ones too; never a token."""
    return operators.listed(_service(request).store.db)


@router.delete(
    "/v1/admin/operators/{name}",
    response_model=OperatorOut,
    dependencies=[Admin],
    responses=_ERRORS,
)
def revoke_operator(request: Request, name: OperatorName) -> OperatorOut:
    """Revoke an operator: their token is refused from now on (409 for the last admin)."""
    entry = caller_of(request).entry("operator.revoke", name)
    return operators.revoke(_service(request).store.db, name, entry)


class Since(BaseModel):
    since: datetime | None

    @field_validator("since", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        return rfc3339(value)


@router.get(
    "/v1/admin/audit",
    response_model=list[AuditEntry],
    dependencies=[Admin],
    responses=limited_responses(401, 403, 422, 503),
)
def list_audit(
    request: Request,
    since: Annotated[
        str | None, Query(max_length=64, description="RFC 3339; entries at or after it")
    ] = None,
    operator: Annotated[
        str | None, Query(max_length=64, description="only this actor's entries")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_ENTRIES)] = 1000,
) -> list[AuditEntry]:
    """Administrative actions in time order: who, what, on whom, when, request id."""
    try:
        moment = Since(since=since).since
    except ValidationError as exc:
        said = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise Problem(422, "invalid_request", f"query.since: {said}") from None
    why = unstorable(operator) if operator is not None else None
    if why is not None:  # no actor has such a name, and PostgreSQL cannot compare it
        raise Problem(422, "invalid_request", f"query.operator: {why}")
    return audit.entries(_service(request).store.db, moment, operator, limit)
