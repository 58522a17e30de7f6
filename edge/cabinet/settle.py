"""Ejects carried out and settled through the one eject journal (``edge.cabinet.ejects``).

- ``operator_eject``: the one way a technician's ``kiosk eject`` and a remote ``eject``
  command eject a slot: the intent on disk first, then the board, then the outcome with its
  ``slot.ejected`` event (also when the eject fails).
- ``settle_orphans``: every intent nobody follows any more (its writer was killed or lost
  its power, or the flow let its rider go) judged from its slot's status once the board
  has answered a status request: an empty slot gave its powerbank out, a slot that still
  holds it (docked, disabled or in fault) did not, a powerbank still moving or standing out
  waits for the board to say. Each intent is recorded with its own event, exactly once: a
  rental with ``rental.started`` or ``rental.failed``, an operator eject with
  ``slot.ejected`` (its operator and reason, outcome ``taken``, or ``failed``/``jammed``
  when the powerbank is still there).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import structlog
from ulid import ULID

from cloud_sync.errors import OutboxFullError
from cloud_sync.events import Event
from edge.cabinet.ejects import EjectJournal, Intent
from edge.cabinet.rentals import Ledger
from edge.cabinet.slots import Inventory, SlotState, eject_slot, failed_eject
from hardware.board import SlotBoard
from hardware.errors import BoardError

log = structlog.get_logger("edge.ejects")

#: Slot states in which a powerbank is (still, or again) locked in: its eject did not happen.
KEPT = (SlotState.CHARGING, SlotState.READY, SlotState.DISABLED, SlotState.FAULT)
#: Outcomes of an operator eject in which the powerbank came out.
EJECTED = ("presented", "taken", "relocked")
SETTLED_EMPTY = "settled from the slot's status: the slot is empty"
SETTLED_KEPT = "interrupted: settled from the slot's status, the powerbank is still there"


def judge(state: SlotState) -> bool | None:
    """Whether an eject happened, from its slot's state now: True (the slot is empty),
    False (a powerbank is locked in), None (moving or standing out: ask again later)."""
    if state == SlotState.EMPTY:
        return True
    if state in KEPT:
        return False
    return None


@dataclass(frozen=True)
class OperatorEject:
    """How a technician's or remote eject ended; ``error`` set when it failed."""

    slot: int
    powerbank_id: str | None
    outcome: str
    detail: str
    event: Event | None
    error: BoardError | None = None


def operator_eject(
    board: SlotBoard,
    inventory: Inventory,
    journal: EjectJournal,
    slot: int,
    *,
    operator: str,
    reason: str,
    command_id: str | None = None,
) -> OperatorEject:
    """Eject ``slot`` for ``operator``: the intent durably first (``OutboxFullError``, and
    nothing sent, when there is no room for its event), then the board, then the outcome
    and its ``slot.ejected`` event. A board error is returned in ``error``, recorded."""
    held = inventory.slot(slot).powerbank_id
    request_id = str(ULID())
    intent = Intent(request_id, "operator", slot, held, operator, reason, command_id)
    with journal.following(request_id):
        journal.begin(intent)
        try:
            result = eject_slot(board, inventory, slot, request_id)
        except BoardError as exc:
            failed, detail = failed_eject(exc)
            event = journal.record(request_id, failed, detail, held)
            log.warning("slot.ejected", slot=slot, operator=operator, outcome=failed)
            return OperatorEject(slot, held, failed, detail, event, exc)
        outcome, powerbank = result.outcome.name.lower(), result.powerbank_id or held
        event = journal.record(request_id, outcome, "", powerbank)
    log.info("slot.ejected", slot=slot, operator=operator, outcome=outcome)
    return OperatorEject(slot, powerbank, outcome, "", event)


def _settle_one(
    ledger: Ledger, inventory: Inventory, intent: Intent, ejected: bool, released: Collection[str]
) -> str:
    """Record ``intent``'s outcome with its event; the outcome's name."""
    rid = intent.request_id
    if intent.kind == "rental":
        if ejected:
            ledger.started(rid, intent.powerbank_id or "unknown")
            return "started"
        ledger.failed(rid, "no_answer" if rid in released else "interrupted")
        return "failed"
    if ejected:
        ledger.journal.record(rid, "taken", SETTLED_EMPTY, intent.powerbank_id)
        return "taken"
    jammed = inventory.slot(intent.slot).fault == "latch_jammed"
    outcome = "jammed" if jammed else "failed"
    ledger.journal.record(rid, outcome, SETTLED_KEPT, intent.powerbank_id)
    return outcome


def settle_orphans(
    ledger: Ledger,
    inventory: Inventory,
    followed: Collection[str | None] = (),
    released: Collection[str] = (),
) -> tuple[list[Intent], int]:
    """Settle the intents nobody follows from their slots' status; the intents settled and
    how many still wait. Only call once the board has answered a status request since the
    start. ``followed``: rentals this process still follows; ``released``: rentals the
    flow let go unconfirmed (recorded as ``no_answer`` rather than ``interrupted``)."""
    journal = ledger.journal
    settled: list[Intent] = []
    waiting = 0
    known = {slot.number for slot in inventory.slots()}
    for intent in journal.unsettled():
        if intent.request_id in followed or journal.followed_elsewhere(intent):
            waiting += 1
            continue
        verdict = judge(inventory.slot(intent.slot).state) if intent.slot in known else None
        if verdict is None:
            waiting += 1
            continue
        try:
            outcome = _settle_one(ledger, inventory, intent, verdict, released)
        except OutboxFullError as exc:  # an intent from before reservations
            log.error("eject.unsettled", request_id=intent.request_id, error=str(exc))
            waiting += 1
            continue
        settled.append(intent)
        log.info(
            "eject.settled",
            kind=intent.kind,
            slot=intent.slot,
            request_id=intent.request_id,
            operator=intent.operator,
            outcome=outcome,
        )
    return settled, waiting


def settle_with_board(board: SlotBoard, ledger: Ledger, inventory: Inventory) -> list[Intent]:
    """For a command that owns the board outside ``kiosk run`` (``kiosk eject``): when
    intents wait that no live process follows, ask the board for every slot and settle
    them; the intents settled. ``BoardError`` when the board does not answer."""
    journal = ledger.journal
    if all(journal.followed_elsewhere(intent) for intent in journal.unsettled()):
        return []
    inventory.refresh(board)
    settled, _ = settle_orphans(ledger, inventory)
    return settled
