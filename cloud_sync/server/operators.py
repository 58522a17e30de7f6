"""Named operators, their roles and their bearer tokens (``operators``, migration 7).

Roles, each a set of routes (every admin route names the role it needs, ``deps.Needs``):

- ``admin``: everything;
- ``support``: every read route (riders, rentals, powerbanks, fleet, kiosks, events,
  consent records), and blocking or unblocking a rider (``PATCH /v1/admin/riders/{id}``
  with ``may_rent`` alone);
- ``installer``: issuing provisioning tokens, nothing else.

A token is ``kop_`` and 43 random URL-safe characters (256 bits), shown once when the
operator is added; only its SHA-256 is stored, so a copy of the database gives no token.
A revoked operator keeps their row (name, role, who revoked them and when) so the audit
log's names stay meaningful; their token is refused from then on. Adding and revoking take
one lock (``OPERATORS_LOCK``), so that two admins revoking each other at once cannot both
succeed and leave no admin (which would bring the retired bootstrap token back), and a
request whose operator was revoked while it waited changes nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from pydantic import BaseModel

from cloud_sync.server.audit import Entry
from cloud_sync.server.db import ConflictError, Database, Tx
from cloud_sync.server.migrations import utc_text
from cloud_sync.server.problems import Problem

Role = Literal["admin", "support", "installer"]
ROLES: tuple[str, ...] = get_args(Role)
#: Operator names: the audit log's actors; ``app`` and ``bootstrap`` are taken.
NAME_PATTERN = r"^[a-z][a-z0-9._-]{0,63}$"
RESERVED_NAMES = frozenset({"app", "bootstrap"})
TOKEN_PREFIX = "kop_"  # noqa: S105 (a prefix, not a token)
#: The advisory lock every change of the operators table holds (PostgreSQL; SQLite has
#: one writer).
OPERATORS_LOCK = "kiosk-cloud:operators"


class OperatorOut(BaseModel):
    """An operator as listed: never their token, nor its hash."""

    name: str
    role: Role
    created_at: str
    created_by: str
    revoked_at: str | None
    revoked_by: str | None


@dataclass(frozen=True)
class Found:
    """The operator a token names."""

    name: str
    role: str
    revoked: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    """422 unless ``name`` can name an operator."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise Problem(
            422,
            "bad_operator_name",
            f"{name[:64]!r} is not an operator name: a lowercase letter, then at most 63 "
            "lowercase letters, digits, '.', '_' or '-'",
        )
    if name in RESERVED_NAMES:
        raise Problem(
            422, "bad_operator_name", f"{name!r} is reserved for the audit log; choose another"
        )
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise Problem(422, "unknown_role", f"unknown role {role[:32]!r}: one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def add(database: Database, name: str, role: str, entry: Entry) -> str:
    """Add an operator; their token, the only time it is shown. 409 when the name is taken
    (a revoked operator's name too: the audit log must not mix two people)."""
    check_name(name)
    check_role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utc_text(datetime.now(UTC))
    try:
        with database.transaction() as tx:
            _hold(tx, entry.actor)
            if tx.rows("SELECT 1 FROM operators WHERE name = ?", [name]):
                raise Problem(409, "operator_exists", f"operator {name!r} exists")
            tx.run(
                "INSERT INTO operators (name, role, token_hash, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?)",
                [name, role, token_hash(token), now, entry.actor],
            )
            entry.write(tx)
    except ConflictError:  # added by a concurrent request
        raise Problem(409, "operator_exists", f"operator {name!r} exists") from None
    return token


def revoke(database: Database, name: str, entry: Entry) -> OperatorOut:
    """Refuse the operator's token from now on; 404 for an unknown name, 409 when already
    revoked."""
    now = utc_text(datetime.now(UTC))
    with database.transaction() as tx:
        _hold(tx, entry.actor)
        rows = tx.rows("SELECT revoked_at FROM operators WHERE name = ?", [name])
        if not rows:
            raise Problem(404, "unknown_operator", f"no operator {name[:64]!r}")
        if rows[0][0] is not None:
            raise Problem(409, "operator_revoked", f"operator {name!r} was revoked at {rows[0][0]}")
        admins = tx.rows("SELECT name FROM operators WHERE role = 'admin' AND revoked_at IS NULL")
        if [row[0] for row in admins] == [name]:
            raise Problem(
                409,
                "last_admin",
                f"{name!r} is the last admin operator; add another admin before revoking them "
                "(the bootstrap token stays retired)",
            )
        tx.run(
            "UPDATE operators SET revoked_at = ?, revoked_by = ? WHERE name = ?",
            [now, entry.actor, name],
        )
        entry.write(tx)
    found = [item for item in listed(database) if item.name == name]
    return found[0]


def _hold(tx: Tx, actor: str) -> None:
    """Take the operators' lock; 401 ``operator_revoked`` when ``actor`` is an operator
    revoked since their token was checked (a change racing their revocation loses)."""
    tx.lock(OPERATORS_LOCK)
    rows = tx.rows("SELECT revoked_at FROM operators WHERE name = ?", [actor])
    if rows and rows[0][0] is not None:
        raise Problem(401, "operator_revoked", f"operator {actor!r} was revoked")


def listed(database: Database) -> list[OperatorOut]:
    """Every operator, revoked ones too, by name."""
    with database.transaction() as tx:
        rows = tx.rows(
            "SELECT name, role, created_at, created_by, revoked_at, revoked_by FROM operators "
            "ORDER BY name"
        )
    return [
        OperatorOut(
            name=name,
            role=role,
            created_at=created_at,
            created_by=created_by,
            revoked_at=revoked_at,
            revoked_by=revoked_by,
        )
        for name, role, created_at, created_by, revoked_at, revoked_by in rows
    ]


def by_token(database: Database, token: str) -> Found | None:
    """The operator whose token this is (revoked or not), or None."""
    with database.transaction() as tx:
        rows = tx.rows(
            "SELECT name, role, revoked_at FROM operators WHERE token_hash = ?",
            [token_hash(token)],
        )
    if not rows:
        return None
    name, role, revoked_at = rows[0]
    return Found(str(name), str(role), revoked_at is not None)


def admin_exists(database: Database) -> bool:
    """Whether any admin operator is not revoked (the bootstrap token then retires)."""
    with database.transaction() as tx:
        rows = tx.rows(
            "SELECT 1 FROM operators WHERE role = 'admin' AND revoked_at IS NULL LIMIT 1"
        )
    return bool(rows)
