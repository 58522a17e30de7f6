"""What the outbox does so that nothing leaves the kiosk before it is on its disk, and how a
sequence number the cloud already holds is given up for a new one.

Durable before sent: money and ops events are committed with ``synchronous=FULL`` (the WAL
is fsynced at their commit); telemetry events with ``synchronous=NORMAL``, so the last few
may still be in the page cache only. Before a batch that holds a telemetry event is sent,
the outbox commits one small write at FULL (``barrier``): that fsync of the WAL covers every
frame written before it, so every event read for the batch is on disk. An event lost in a
power cut was therefore never sent, and the number it had, given again, was never seen
outside the kiosk.

Numbers never go backwards across a power cut: a telemetry event's number is covered by a
durable reservation (``reserve``: the mark moves ``RESERVE_BLOCK`` numbers ahead, in a
commit made durable at once, so one fsync in that many telemetry events), and a writer that
opens the outbox moves the counter past the mark (``skip_reserved``). A number a cut took
back is therefore never given again; a restart may leave a gap of up to ``RESERVE_BLOCK``.

A seq conflict: the cloud answers that ``seq N`` of this kiosk is already stored as another
event (an outbox restored from an old copy, a kiosk re-made under the same id) and names
the highest seq it stores for the kiosk. The kiosk then moves its counter past that number
and renumbers the refused events, keeping their ids (``renumber``): nothing is quarantined
for it. Pure functions over the outbox's connection, inside the caller's transaction.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from cloud_sync.events import Event

#: ``meta`` key the durability barrier writes (a counter: the write must change a page).
BARRIER_KEY = "durable_barrier"
#: ``meta`` key of the highest number a telemetry event may have had before a power cut.
RESERVED_KEY = "seq_reserved"
RESERVE_BLOCK = 64

_CONFLICT = re.compile(
    r"^seq: (?P<seq>\d+) of kiosk \S+ is already stored as event \S+"
    r"(?: \(the highest seq stored for this kiosk is (?P<stored_max>\d+)\))?"
)


@dataclass(frozen=True)
class SeqConflict:
    """The cloud stores another event under this event's seq."""

    seq: int
    stored_max: int | None  # the highest seq the cloud stores for this kiosk, when it said


#: A conflict naming a seq past this is refused as one: renumbering above it would leave
#: the kiosk too few numbers to give (2^63 - 1 is the last SQLite and the cloud keep), and
#: no kiosk ever gave such a number.
MAX_CONFLICT_SEQ = 2**62


def parse_conflict(reason: str) -> SeqConflict | None:
    """A seq conflict from a rejection's reason; None for any other reason, and for one
    naming a seq past ``MAX_CONFLICT_SEQ`` (the event is then refused like any other)."""
    match = _CONFLICT.match(reason)
    if match is None:
        return None
    seq = int(match.group("seq"))
    stored_max = None if match.group("stored_max") is None else int(match.group("stored_max"))
    if max(seq, stored_max or 0) > MAX_CONFLICT_SEQ:
        return None
    return SeqConflict(seq, stored_max)


def conflict_reason(seq: int, kiosk_id: str, stored_id: str, stored_max: int) -> str:
    """The cloud's words for a seq conflict (``parse_conflict`` reads them back)."""
    return (
        f"seq: {seq} of kiosk {kiosk_id} is already stored as event {stored_id} "
        f"(the highest seq stored for this kiosk is {stored_max})"
    )


def barrier(db: sqlite3.Connection) -> None:
    """Inside a FULL write transaction: change one row, so that its commit fsyncs the WAL."""
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, 1) "
        "ON CONFLICT (key) DO UPDATE SET value = value + 1",
        [BARRIER_KEY],
    )


def renumber(db: sqlite3.Connection, seqs: list[int], floor: int) -> dict[int, int]:
    """Inside a write transaction: give each pending event in ``seqs`` (oldest first) the
    next number above both the counter and ``floor``; its id, type and payload stay.
    Returns ``{old seq: new seq}`` for the events that were still pending."""
    (last,) = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
    last = max(int(last), floor)
    moved: dict[int, int] = {}
    for old in sorted(set(seqs)):
        row = db.execute(
            "SELECT body, size FROM events WHERE seq = ? AND state = 'pending'", [old]
        ).fetchone()
        if row is None:
            continue
        last += 1
        event = Event.model_validate_json(row[0]).model_copy(update={"seq": last})
        text = event.to_json()
        size = len(text.encode("utf-8")) + int(row[1]) - len(str(row[0]).encode("utf-8"))
        db.execute(
            "UPDATE events SET seq = ?, body = ?, size = ?, failures = 0, last_failure = NULL "
            "WHERE seq = ?",
            [last, text, size, old],
        )
        db.execute(
            "UPDATE meta SET value = value + ? WHERE key = 'bytes_used'", [size - int(row[1])]
        )
        moved[old] = last
    db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", [last])
    return moved


def reserve(db: sqlite3.Connection, seq: int) -> bool:
    """Inside a write transaction that gives ``seq`` to an event committed without an
    fsync: when ``seq`` passes the reserved mark, move the mark ``RESERVE_BLOCK`` past it.
    True when it moved: the caller then makes its commit durable (``barrier`` at FULL)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", [RESERVED_KEY]).fetchone()
    if row is not None and int(row[0]) >= seq:
        return False
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [RESERVED_KEY, seq + RESERVE_BLOCK],
    )
    return True


def skip_reserved(db: sqlite3.Connection) -> None:
    """Inside a FULL write transaction, when a writer opens the outbox: move the counter
    past every number a telemetry event may have had before a power cut."""
    db.execute(
        "UPDATE meta SET value = (SELECT value FROM meta WHERE key = ?) "
        "WHERE key = 'last_seq' AND value < (SELECT value FROM meta WHERE key = ?)",
        [RESERVED_KEY, RESERVED_KEY],
    )
