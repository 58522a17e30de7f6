"""Answers of a faulty board firmware: well-formed frames that contradict their request.

Pure code for the simulator's ``lie`` fault (``LineFaults.lie``): ``tell(lie, message,
slots)`` returns the message the simulated board sends instead of ``message``. Each lie is
one class of contradiction the driver must refuse (docs/slot-protocol.md, section 7); the
board's own state is untouched, only what it says changes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, TypeVar, get_args

from hardware.agreement import SLOT_NACKS
from hardware.messages import (
    PROTOCOL_VERSION,
    Ack,
    Booted,
    Ejected,
    EjectOutcome,
    EjectReply,
    Fault,
    FaultCleared,
    HelloReply,
    Inserted,
    Jammed,
    Message,
    Nack,
    Relocked,
    Removed,
    StatusReply,
)

Lie = Literal[
    "eject_reply_slot",  # EjectReply names another slot
    "eject_reply_request",  # EjectReply names another request id
    "eject_reply_type",  # an Eject answered with Ack
    "fresh_presented",  # a new eject answered as presented already
    "repeat_as_new",  # an eject asked again answered as a new request
    "repeat_powerbank",  # an eject asked again names another powerbank
    "outcome_slot",  # Ejected, Relocked or Jammed names another slot
    "outcome_powerbank",  # Ejected or Relocked names another powerbank
    "outcome_jammed",  # Ejected sent as Jammed (the latch opened; the board says it jammed)
    "hello_version",  # HelloReply claims another protocol version
    "booted_version",  # Booted claims another protocol version
    "status_total",  # StatusReply counts one slot more than the board has
    "status_slots",  # StatusReply lists other slots than asked for
    "nack_slot",  # a refusal about a slot names another slot
    "note_slot_range",  # Inserted, Removed, Fault or FaultCleared names a slot past the last
]
LIES: tuple[str, ...] = get_args(Lie)
M = TypeVar("M", bound=Message)


def _other_id(powerbank_id: str) -> str:
    """Another powerbank id of at most 16 characters."""
    return powerbank_id[:15] + ("Y" if powerbank_id[15:] == "X" else "X")


def _other(slot: int, slots: int) -> int:
    """Another existing slot (the same one only on a one-slot board)."""
    return slot % slots + 1


def tell(lie: Lie | None, message: M, slots: int) -> Message:
    """What a board with ``lie`` in its firmware sends instead of ``message``."""
    if lie is None:
        return message
    if isinstance(message, EjectReply):
        return _eject_reply(lie, message, slots)
    if isinstance(message, Ejected | Relocked | Jammed):
        if lie == "outcome_slot":
            return replace(message, slot=_other(message.slot, slots))
        if lie == "outcome_powerbank" and not isinstance(message, Jammed):
            return replace(message, powerbank_id=_other_id(message.powerbank_id))
        if lie == "outcome_jammed" and isinstance(message, Ejected):
            return Jammed(message.slot, message.request_id)
    if isinstance(message, HelloReply | Booted) and lie in ("hello_version", "booted_version"):
        wanted = HelloReply if lie == "hello_version" else Booted
        if isinstance(message, wanted):
            return replace(message, protocol=PROTOCOL_VERSION + 1)
    if isinstance(message, StatusReply):
        if lie == "status_total" and message.total < 255:
            return replace(message, total=message.total + 1)
        if lie == "status_slots":
            shifted = (replace(r, slot=_other(r.slot, slots)) for r in message.reports)
            return replace(message, reports=tuple(shifted))
    if isinstance(message, Nack) and lie == "nack_slot" and message.code in SLOT_NACKS:
        return replace(message, detail=_other(message.detail, slots))
    if (
        isinstance(message, Inserted | Removed | Fault | FaultCleared)
        and lie == "note_slot_range"
        and slots < 255
    ):
        return replace(message, slot=slots + 1)
    return message


def _eject_reply(lie: Lie, reply: EjectReply, slots: int) -> Message:
    if lie == "eject_reply_slot":
        return replace(reply, slot=_other(reply.slot, slots))
    if lie == "eject_reply_request":
        return replace(reply, request_id=reply.request_id ^ 1)
    if lie == "eject_reply_type":
        return Ack()
    if lie == "fresh_presented" and not reply.duplicate:
        return replace(reply, outcome=EjectOutcome.PRESENTED)
    if lie == "repeat_as_new" and reply.duplicate:
        return replace(reply, duplicate=False, outcome=EjectOutcome.ACCEPTED)
    if lie == "repeat_powerbank" and reply.duplicate:
        return replace(reply, powerbank_id=_other_id(reply.powerbank_id))
    return reply
