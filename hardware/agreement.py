"""What a well-formed answer of the board must agree with: its request, and the hello.

Pure code, no I/O. The codec (``hardware.messages``) checks each frame on its own; these
checks compare a reply with the request it answers, the outcome of an eject with the eject,
and a notification with what the board said at hello (its protocol version and slot
count). An answer that fails one raises ``ContradictionError`` (``ProtocolVersionError``
for the version): it is never taken as a confirmation. docs/slot-protocol.md, section 7,
lists every check and what the kiosk does.
"""

from __future__ import annotations

from hardware.errors import ContradictionError, ProtocolVersionError
from hardware.messages import (
    PROTOCOL_VERSION,
    Booted,
    Eject,
    Ejected,
    EjectOutcome,
    EjectReply,
    Fault,
    FaultCleared,
    HelloReply,
    Inserted,
    Jammed,
    Nack,
    NackCode,
    Notification,
    Relocked,
    Removed,
    Reply,
    Request,
    Status,
    StatusReply,
)

__all__ = [
    "check_eject_reply",
    "check_notification",
    "check_outcome",
    "check_reply",
    "check_settled",
    "check_status",
    "check_version",
]

#: Refusals whose detail byte is the slot of the request, and those whose detail is its type.
SLOT_NACKS = frozenset(
    {
        NackCode.SLOT_OUT_OF_RANGE,
        NackCode.SLOT_DISABLED,
        NackCode.SLOT_EMPTY,
        NackCode.SLOT_BUSY,
        NackCode.SLOT_FAULT,
    }
)
TYPE_NACKS = frozenset({NackCode.UNKNOWN_COMMAND, NackCode.BAD_PAYLOAD})
EjectNote = Ejected | Relocked | Jammed


def check_version(protocol: int, said: str) -> None:
    """``said``: how the board said it ("answered hello with", "restarted with")."""
    if protocol != PROTOCOL_VERSION:
        raise ProtocolVersionError(
            f"the board {said} protocol version {protocol}; this kiosk speaks version"
            f" {PROTOCOL_VERSION} only"
        )


def _request_slot(request: Request) -> int | None:
    if isinstance(request, Status):
        return request.first
    slot = getattr(request, "slot", None)
    return slot if isinstance(slot, int) else None


def check_reply(request: Request, reply: Reply) -> None:
    """A reply of the type ``request`` expects (or a refusal about it)."""
    name = type(request).__name__
    if isinstance(reply, Nack):
        slot = _request_slot(request)
        if reply.code in SLOT_NACKS and reply.detail != slot:
            about = "no slot" if slot is None else f"slot {slot}"
            raise ContradictionError(
                f"{name} of {about} refused as {reply.code.name.lower()} of slot {reply.detail}"
            )
        if reply.code in TYPE_NACKS and reply.detail != request.TYPE:
            raise ContradictionError(
                f"{name} (type {request.TYPE:#04x}) refused as {reply.code.name.lower()}"
                f" of type {reply.detail:#04x}"
            )
        return
    if not isinstance(reply, request.REPLY):
        raise ContradictionError(
            f"{name} answered by {type(reply).__name__}, expected {request.REPLY.__name__}"
        )
    if isinstance(reply, HelloReply):
        check_version(reply.protocol, "answered hello with")


def check_status(request: Status, reply: StatusReply, slots: int) -> None:
    """A page of the status: ``slots`` is the count the board reported at hello."""
    if reply.total != slots:
        raise ContradictionError(
            f"the status counts {reply.total} slots; the board reported {slots} at hello"
        )
    numbers = [report.slot for report in reply.reports]
    last = request.first + len(numbers) - 1
    expected = list(range(request.first, last + 1))
    if not numbers or numbers != expected or len(numbers) > request.count or last > slots:
        raise ContradictionError(
            f"status of {request.count} slot(s) from slot {request.first} lists slots {numbers}"
            f" of a board of {slots}"
        )


def check_eject_reply(request: Eject, reply: EjectReply, first: EjectReply | None) -> None:
    """An answer to ``request``; ``first`` is the board's first answer when this one was
    asked again (after a lost notification)."""
    if reply.slot != request.slot or reply.request_id != request.request_id:
        raise ContradictionError(
            f"eject of slot {request.slot} (request {request.request_id:016x}) answered for"
            f" slot {reply.slot} (request {reply.request_id:016x})"
        )
    outcome = reply.outcome.name.lower()
    if not reply.duplicate and reply.outcome != EjectOutcome.ACCEPTED:
        raise ContradictionError(
            f"eject of slot {request.slot}: a new request cannot be {outcome} already"
        )
    if first is None:
        return
    if not reply.duplicate:
        raise ContradictionError(
            f"eject of slot {request.slot}: asked again, the board took request"
            f" {request.request_id:016x} for a new one (it no longer remembers it)"
        )
    if reply.powerbank_id != first.powerbank_id:
        raise ContradictionError(
            f"eject of slot {request.slot}: asked again, the board names powerbank"
            f" {reply.powerbank_id!r}, first {first.powerbank_id!r}"
        )


def check_outcome(request: Eject, note: EjectNote, reply: EjectReply | None) -> None:
    """A notification about ``request`` (same request id); ``reply``: the board's answer."""
    name = type(note).__name__
    if note.slot != request.slot:
        raise ContradictionError(
            f"{name} for the eject of slot {request.slot} (request {request.request_id:016x})"
            f" names slot {note.slot}"
        )
    if isinstance(note, Jammed) or reply is None:
        return
    if note.powerbank_id != reply.powerbank_id:
        raise ContradictionError(
            f"{name} for the eject of slot {request.slot} names powerbank"
            f" {note.powerbank_id!r}; the board answered the eject with {reply.powerbank_id!r}"
        )


def check_settled(request: Eject, note: Ejected | Jammed | None, outcome: EjectOutcome) -> None:
    """The outcome an eject ends with against the notification the board sent about it (a
    notification that arrived while the driver asked again, whose answer settled it).
    Presented, taken and relocked all follow an ``Ejected``; only jammed follows a
    ``Jammed``."""
    if note is None:
        return
    if isinstance(note, Jammed) != (outcome == EjectOutcome.JAMMED):
        raise ContradictionError(
            f"eject of slot {request.slot}: the board sent {type(note).__name__}, and asked"
            f" again answered {outcome.name.lower()}"
        )


def check_notification(note: Notification, slots: int | None) -> None:
    """A notification against the hello: the version, and a slot within 1..``slots``
    (0, the whole board, too for faults). ``slots`` None: no hello yet, no range to check."""
    if isinstance(note, Booted):
        check_version(note.protocol, "restarted with")
        return
    if slots is None:
        return
    if isinstance(note, Inserted | Removed | Ejected | Relocked | Jammed):
        lowest = 1
    elif isinstance(note, Fault | FaultCleared):
        lowest = 0
    else:
        return
    if not lowest <= note.slot <= slots:
        raise ContradictionError(
            f"{type(note).__name__} names slot {note.slot}; the board reported slots 1..{slots}"
            " at hello"
        )
