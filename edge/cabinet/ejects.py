"""The eject journal: every eject's intent on disk before the board is asked.

One table (``ejects``) in the outbox database, for every path that ejects a powerbank: a
rental (``kind`` ``rental``, its request id is the rental id), a technician's
``kiosk eject`` and a remote ``eject`` command (``kind`` ``operator``, with who asked, why
and, for a remote command, the command's id). Anything that ejects later writes here too.

- ``begin`` writes the intent in a durable transaction (``synchronous=FULL``) *before* the
  board is asked, and reserves room in the outbox's disk budget for the event that will
  settle it (``SETTLE_RESERVE``); when that room cannot be made it raises
  ``OutboxFullError``, nothing is written, and the caller must not eject.
- ``close`` settles an intent inside the caller's outbox transaction, the one that appends
  its event (``rental.started``/``rental.failed`` by ``edge.cabinet.rentals``, ``slot.ejected``
  here through ``record``): the intent and its event are stored together or not at all,
  and an intent is settled at most once (a second ``close`` finds nothing).
- An intent whose writer is gone (killed, or the power went) is settled from its slot's
  status by ``edge.cabinet.settle``, at the next ``kiosk run`` start or the next
  ``kiosk eject``.

Each intent names its writer (``owner``: the boot and the process id), so that one process
never settles an eject that another live process is still following.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cloud_sync.errors import OutboxFullError
from cloud_sync.events import Event
from cloud_sync.outbox import Outbox, OutboxTransaction
from cloud_sync.outbox_budget import release, reserve, used_bytes

#: Budget bytes held for the event that settles an eject (``rental.started``,
#: ``rental.failed`` or ``slot.ejected``): more than the largest such event the schemas
#: allow, plus the outbox's row overhead.
SETTLE_RESERVE = 1280

Kind = Literal["rental", "operator"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS ejects (
    request_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('rental', 'operator')),
    slot INTEGER NOT NULL,
    powerbank_id TEXT,
    operator TEXT,
    reason TEXT,
    command_id TEXT,
    owner TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'ejecting' CHECK (state IN ('ejecting', 'settled')),
    outcome TEXT,
    detail TEXT,
    reserved INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL DEFAULT 0
)
"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS ejects_state ON ejects (state)",
    "CREATE INDEX IF NOT EXISTS ejects_command ON ejects (command_id)",
)
_COLUMNS = "request_id, kind, slot, powerbank_id, operator, reason, command_id, owner"


@dataclass(frozen=True)
class Intent:
    """An eject asked of the board; ``powerbank_id`` is what the slot held before."""

    request_id: str
    kind: Kind
    slot: int
    powerbank_id: str | None = None
    operator: str | None = None
    reason: str | None = None
    command_id: str | None = None
    owner: str = ""


@dataclass(frozen=True)
class Outcome:
    """How an intent ended (``outcome`` None: not yet)."""

    intent: Intent
    outcome: str | None
    detail: str
    powerbank_id: str | None


def _boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return "unknown-boot"


BOOT_ID = _boot_id()


def this_process() -> str:
    """The ``owner`` of the intents this process writes: its boot and its pid."""
    return f"{BOOT_ID}:{os.getpid()}"


def owner_alive(owner: str) -> bool:
    """Whether the process that wrote an intent still runs (same boot, pid not gone or a
    zombie). An owner from before owners were kept (``""``) counts as gone."""
    boot, _, pid_text = owner.rpartition(":")
    if boot != BOOT_ID or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _intent(row: tuple[object, ...]) -> Intent:
    request_id, kind, slot, powerbank, operator, reason, command_id, owner = row
    return Intent(
        str(request_id),
        "rental" if kind == "rental" else "operator",
        int(str(slot)),
        None if powerbank is None else str(powerbank),
        None if operator is None else str(operator),
        None if reason is None else str(reason),
        None if command_id is None else str(command_id),
        str(owner or ""),
    )


class EjectJournal:
    """Eject intents in the outbox's database; every write is an outbox transaction."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.me = this_process()
        self.in_hand: set[str] = set()  # operator ejects this process is carrying out
        with outbox.transaction() as tx:
            tx.execute(SCHEMA)
            for index in INDEXES:
                tx.execute(index)

    def begin(self, intent: Intent, tx: OutboxTransaction | None = None) -> None:
        """Write ``intent`` (and reserve room for its event), durably, before the board is
        asked; ``OutboxFullError`` and nothing written when the room cannot be made.
        Inside ``tx`` when given (the caller's own rows go with it)."""
        if tx is None:
            with self.outbox.transaction() as own:
                self.begin(intent, own)
            return
        outbox = self.outbox
        if not reserve(tx.connection, SETTLE_RESERVE, "money", outbox.max_bytes):
            raise OutboxFullError(
                f"{outbox.path}: no room to record the eject of slot {intent.slot}: the "
                f"outbox holds {used_bytes(tx.connection)} of {outbox.max_bytes} bytes the "
                "cloud has not acknowledged; ejects stop until the kiosk syncs"
            )
        tx.execute(
            f"INSERT INTO ejects ({_COLUMNS}, reserved, created_at) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                intent.request_id,
                intent.kind,
                intent.slot,
                intent.powerbank_id,
                intent.operator,
                intent.reason,
                intent.command_id,
                intent.owner or self.me,
                SETTLE_RESERVE,
                time.time(),
            ),
        )

    def close(
        self,
        tx: OutboxTransaction,
        request_id: str,
        outcome: str,
        detail: str = "",
        powerbank_id: str | None = None,
    ) -> Intent | None:
        """Inside ``tx`` (which appends the event): settle the intent and give back its
        reservation; None when there is no such intent or it was settled already."""
        row = tx.execute(
            f"SELECT {_COLUMNS}, reserved FROM ejects "  # noqa: S608
            "WHERE request_id = ? AND state = 'ejecting'",
            (request_id,),
        ).fetchone()
        if row is None:
            return None
        release(tx.connection, int(row[-1]))
        tx.execute(
            "UPDATE ejects SET state = 'settled', outcome = ?, detail = ?, reserved = 0, "
            "powerbank_id = COALESCE(?, powerbank_id) WHERE request_id = ?",
            (outcome, detail, powerbank_id, request_id),
        )
        return _intent(row[:-1])

    def record(
        self, request_id: str, outcome: str, detail: str = "", powerbank_id: str | None = None
    ) -> Event | None:
        """Settle an operator eject with its ``slot.ejected`` event, in one transaction.

        None when it was settled already (nothing written), so an eject is recorded once.
        """
        with self.outbox.transaction() as tx:
            intent = self.close(tx, request_id, outcome, detail, powerbank_id)
            if intent is None:
                return None
            return tx.append(
                "slot.ejected",
                slot=intent.slot,
                powerbank_id=powerbank_id or intent.powerbank_id,
                operator=intent.operator or "unknown",
                reason=intent.reason or "-",
                outcome=outcome,
                detail=detail[:200],
            )

    @contextmanager
    def following(self, request_id: str) -> Iterator[None]:
        """While the block runs, this process follows ``request_id``: nobody settles it."""
        self.in_hand.add(request_id)
        try:
            yield
        finally:
            self.in_hand.discard(request_id)

    def unsettled(self, kind: Kind | None = None) -> list[Intent]:
        """Intents without an outcome, oldest first (of one ``kind`` when given)."""
        sql = f"SELECT {_COLUMNS} FROM ejects WHERE state = 'ejecting'"  # noqa: S608
        rows = self.outbox.connection.execute(
            sql + (" AND kind = ?" if kind else "") + " ORDER BY created_at, rowid",
            (kind,) if kind else (),
        ).fetchall()
        return [_intent(row) for row in rows]

    def followed_elsewhere(self, intent: Intent) -> bool:
        """Whether another live process (or this one, by hand) follows ``intent``."""
        if intent.request_id in self.in_hand:
            return True
        return intent.owner != self.me and owner_alive(intent.owner)

    def for_command(self, command_id: str) -> Outcome | None:
        """The eject a remote command asked for, and how it ended; None: it never began."""
        with self.outbox.transaction() as tx:  # a consistent read beside other writers
            row = tx.execute(
                f"SELECT {_COLUMNS}, outcome, detail FROM ejects "  # noqa: S608
                "WHERE command_id = ? ORDER BY rowid DESC",
                (command_id,),
            ).fetchone()
        if row is None:
            return None
        intent = _intent(row[:8])
        outcome = None if row[8] is None else str(row[8])
        return Outcome(intent, outcome, str(row[9] or ""), intent.powerbank_id)
