"""The roster's events, owed by the roster store and recorded in the outbox.

A roster change (a delta applied, riders erased, the roster purged) and the event that
records it (``roster.applied``, ``roster.erased``, ``roster.purged``) live in two SQLite
files, so no transaction holds both. The store owes the event in the transaction that
makes the change (``edge.vault.owed``); ``record_owed`` moves what is owed into the outbox
and settles it in the store. A power cut or a kill between the two leaves the event owed,
and the next ``record_owed`` (the next roster pull, the kiosk's next purge check) records
it: a deleted rider's erasure receipt is never lost.

Exactly once: the check that the outbox does not hold the event yet and its append are one
outbox transaction (another process recording the same debt waits, then finds it), so a
cut after the append and before the store settled it does not record it twice.

An erased rider's learned-template proposals (``template.proposed``, waiting or sent) go in
the transaction that records their receipt, their bytes zeroed (``secure_delete``) and the
outbox's WAL truncated after: the sealed encoding opens with the data key this kiosk still
holds, so it is the rider's template as much as their roster row was. The cloud would
refuse them anyway (``unknown_rider``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from cloud_sync.errors import OutboxError, RosterError
from cloud_sync.outbox import Outbox, OutboxTransaction

log = structlog.get_logger("cloud_sync.daemon")


@dataclass(frozen=True)
class OwedEvent:
    """An event the roster store owes the outbox: its type and fields, and when (epoch
    seconds) it was owed: the outbox's copy, if any, occurred at or after that."""

    id: str
    type: str
    fields: dict[str, Any]
    at: float


class Debtor(Protocol):
    """The roster store, as far as its owed events go."""

    def owed_events(self) -> list[OwedEvent]: ...

    def settle_owed(self, ids: set[str]) -> None: ...


def record_owed(roster: Debtor, outbox: Outbox) -> int:
    """Append every event ``roster`` owes to ``outbox`` (unless it holds it already) and
    settle them; how many were appended. An outbox or roster that fails leaves the rest
    owed for the next call (logged, never raised)."""
    try:
        owed = roster.owed_events()
    except RosterError as exc:
        log.warning("roster.event_not_recorded", error=str(exc))
        return 0
    appended, done, forgotten = 0, set(), 0
    for event in owed:
        try:
            with outbox.transaction() as tx:
                if event.type == "roster.erased":
                    forgotten += _forget_proposals(tx, str(event.fields.get("person_id")))
                if not _held(outbox, event):
                    tx.append(event.type, **event.fields)
                    appended += 1
        except OutboxError as exc:  # kept owed: the next call tries again
            log.warning("roster.event_not_recorded", type=event.type, error=str(exc))
            continue
        except ValueError as exc:  # not an event (a damaged entry): dropped, never retried
            log.error("roster.event_dropped", type=event.type, error=str(exc)[:200])
        done.add(event.id)
    if forgotten:
        _scrub_wal(outbox)
    if done:
        try:
            roster.settle_owed(done)
        except RosterError as exc:  # recorded already: the next call finds them held
            log.warning("roster.event_not_settled", error=str(exc))
    return appended


def _held(outbox: Outbox, event: OwedEvent) -> bool:
    """Whether the outbox holds ``event`` already (appended since it was owed)."""
    for held in outbox.recent_of(event.type, event.at - 1.0):
        fields = held.payload.model_dump()
        if all(fields.get(key) == value for key, value in event.fields.items()):
            return True
    return False


def _forget_proposals(tx: OutboxTransaction, person_id: str) -> int:
    """Delete the ``template.proposed`` events of ``person_id``, their bytes zeroed; how many."""
    tx.execute("PRAGMA secure_delete = ON")
    rows = tx.execute(
        "SELECT seq, size FROM events WHERE type = 'template.proposed' "
        "AND json_extract(body, '$.payload.person_id') = ?",
        [person_id],
    ).fetchall()
    for seq, size in rows:
        tx.execute("DELETE FROM events WHERE seq = ?", [seq])
        tx.execute("UPDATE meta SET value = value - ? WHERE key = 'bytes_used'", [size])
    if rows:
        log.info("roster.proposals_forgotten", person_id=person_id, count=len(rows))
    return len(rows)


def _scrub_wal(outbox: Outbox) -> None:
    """The deleted proposals were written to the WAL first: truncate it (logged when a
    reader is in the way and SQLite's next checkpoint is left to do it)."""
    try:
        scrubbed, reason = outbox.scrub_wal(), "a reader holds the outbox"
    except sqlite3.Error as exc:
        scrubbed, reason = False, str(exc)
    if not scrubbed:
        log.warning("roster.proposals_wal_not_scrubbed", error=reason)
