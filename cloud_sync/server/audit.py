"""The audit log: who did what to whom, for every administrative action.

One row of ``audit_log`` (migration 7) per action that changed something: the actor (an
operator's name; ``app`` for the riders' app backend; ``bootstrap`` for the bootstrap
admin token; ``cli:USER`` for a ``kiosk-cloud`` command run on the database), the action
(``rider.add``, ``rider.change``, ``operator.revoke`` ...), its target (a rider, kiosk or
operator id), a short detail, the time and the request id. Never a template, a name, a
claim code or a token: the detail holds only what the action set (entitlements, a consent
text version, a role). Where the change has its own transaction the row is written in it
(``Entry.write``); elsewhere just after it (``Entry.save``).
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from ulid import ULID

from cloud_sync.server.db import Database, Tx
from cloud_sync.server.migrations import utc_text

#: What the audit log lists at most per call.
MAX_ENTRIES = 10_000


class AuditEntry(BaseModel):
    """One administrative action as the log keeps it."""

    at: str = Field(description="UTC, RFC 3339")
    actor: str = Field(description="operator name, 'app', 'bootstrap' or 'cli:USER'")
    action: str
    target: str
    detail: dict[str, Any]
    request_id: str | None


@dataclass(frozen=True)
class Entry:
    """An action to record; ``write`` it in the change's transaction, or ``save`` it."""

    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    request_id: str | None = None

    def write(self, tx: Tx) -> None:
        now = datetime.now(UTC)
        tx.run(
            "INSERT INTO audit_log (entry_id, at, actor, action, target, detail, request_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                str(ULID.from_datetime(now)),
                utc_text(now),
                self.actor,
                self.action,
                self.target,
                json.dumps(self.detail, sort_keys=True, default=str),
                self.request_id,
            ],
        )

    def save(self, database: Database) -> None:
        with database.transaction() as tx:
            self.write(tx)


def cli_actor() -> str:
    """The actor of a ``kiosk-cloud`` command run on the database: the local user."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "cli:unknown"


def entries(
    database: Database,
    since: datetime | None = None,
    actor: str | None = None,
    limit: int = 1000,
) -> list[AuditEntry]:
    """Entries in time order, from ``since`` on, of ``actor`` only when given."""
    where, args = ["1 = 1"], []
    if since is not None:
        where.append("at >= ?")
        args.append(utc_text(since))
    if actor is not None:
        where.append("actor = ?")
        args.append(actor)
    with database.transaction() as tx:
        rows = tx.rows(
            "SELECT at, actor, action, target, detail, request_id FROM audit_log "  # noqa: S608
            f"WHERE {' AND '.join(where)} ORDER BY at, entry_id LIMIT ?",
            [*args, min(limit, MAX_ENTRIES)],
        )
    return [
        AuditEntry(
            at=str(at),
            actor=str(who),
            action=str(action),
            target=str(target),
            detail=json.loads(detail),
            request_id=request_id,
        )
        for at, who, action, target, detail, request_id in rows
    ]
