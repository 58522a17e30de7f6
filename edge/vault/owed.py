"""The roster's events owed to the outbox: ``roster.applied``, ``roster.erased``,
``roster.purged``, and a technician's ``roster.edited``.

A change to the roster and the event that records it live in two files (``roster.sqlite``
and ``outbox.sqlite``), so no single transaction holds both. The event is therefore owed in
the roster's own transaction (the ``meta`` key ``owed_events``: a JSON list, so a kiosk
rolled back to an earlier version still opens the file), and recorded in the outbox
afterwards (``cloud_sync.roster_owed.record_owed``), which then settles it here. A power cut
between the two leaves it owed, and the next writer records it: a deleted rider's erasure
receipt is never lost, and never sent twice (the outbox is checked for it first).

A technician's hand edit (``kiosk enroll``, ``kiosk roster delete | rotate-key`` on the
kiosk's own roster) is owed the same way, as one ``Edit``: every transaction of the command
adds its riders to the one entry, so the command records one ``roster.edited`` however
many riders it touched, and a cut after any of them leaves it owed with what was done.

Nothing biometric is owed: rider ids, versions and counts, as the events carry them.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cloud_sync.roster_owed import OwedEvent

KEY = "owed_events"


def owed(db: sqlite3.Connection) -> list[OwedEvent]:
    """The events owed, oldest first (none, or an unreadable value: none)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (KEY,)).fetchone()
    try:
        entries = json.loads(row[0]) if row and row[0] else []
    except ValueError:
        return []
    return [
        OwedEvent(str(e["id"]), str(e["type"]), dict(e["fields"]), float(e["at"]))
        for e in entries
        if isinstance(e, dict) and {"id", "type", "fields", "at"} <= e.keys()
    ]


def owe(db: sqlite3.Connection, event_type: str, **fields: Any) -> None:
    """Inside the transaction that makes the change: owe its event."""
    entry = OwedEvent(uuid.uuid4().hex, event_type, fields, time.time())
    _store(db, [*owed(db), entry])


@dataclass(frozen=True)
class Edit:
    """A technician's hand edit of the roster (``action``: ``enrol``, ``delete``,
    ``rotate_key``, by ``operator``), owed as one ``roster.edited`` event (``owe_edit``)."""

    action: str
    operator: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


def owe_edit(db: sqlite3.Connection, edit: Edit, riders: int, version: int) -> None:
    """Inside the transaction that makes part of ``edit``: owe it, counting ``riders`` more
    and naming ``version``, the roster's version after it (one entry per edit)."""
    entries = owed(db)
    for index, entry in enumerate(entries):
        if entry.id == edit.id:
            fields = {**entry.fields, "riders": int(entry.fields.get("riders", 0)) + riders}
            fields["roster_version"] = version
            entries[index] = OwedEvent(entry.id, entry.type, fields, entry.at)
            _store(db, entries)
            return
    fields = {
        "action": edit.action,
        "operator": edit.operator,
        "riders": riders,
        "roster_version": version,
    }
    _store(db, [*entries, OwedEvent(edit.id, "roster.edited", fields, time.time())])


def settle(db: sqlite3.Connection, ids: set[str]) -> None:
    """Inside a transaction: these events are in the outbox now."""
    _store(db, [e for e in owed(db) if e.id not in ids])


def _store(db: sqlite3.Connection, entries: list[OwedEvent]) -> None:
    text = json.dumps(
        [{"id": e.id, "type": e.type, "fields": e.fields, "at": e.at} for e in entries]
    )
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (KEY, text if entries else ""),
    )
