"""The slot-board messages: one frozen dataclass per message, and their payload codec.

Pure code: no I/O. Every message names its wire ``TYPE`` and its payload layout ``WIRE``
(an ordered list of fields); ``encode_payload`` and ``decode_payload`` walk that layout, so
the byte format of each message is written down once, here and in docs/slot-protocol.md.

Type numbers tell the direction: 0x01-0x3F requests (kiosk to board), 0x40-0x7F replies
(board to kiosk, same sequence number as the request), 0x80-0xBF notifications (board to
kiosk, the board's own sequence numbers), 0xC0-0xFF acknowledgements (kiosk to board).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import ClassVar

from hardware.errors import PayloadError, UnknownMessageError
from hardware.fields import (
    U8,
    U64,
    Bool,
    Charge,
    Enum8,
    Records,
    Temperature,
    Text,
    Wire,
    pack_fields,
    unpack_fields,
)

PROTOCOL_VERSION = 1
MAX_POWERBANK_ID = 16  # characters
MAX_FIRMWARE = 32  # characters
MAX_STATUS_SLOTS = 10  # slot reports in one StatusReply


class NackCode(enum.IntEnum):
    UNKNOWN_COMMAND = 0x01
    BAD_PAYLOAD = 0x02
    SLOT_OUT_OF_RANGE = 0x03
    SLOT_DISABLED = 0x04
    SLOT_EMPTY = 0x05
    SLOT_BUSY = 0x06
    SLOT_FAULT = 0x07
    BOARD_BUSY = 0x08
    INTERNAL = 0x09


class EjectOutcome(enum.IntEnum):
    ACCEPTED = 0x00  # the latch is opening; an Ejected or Jammed notification follows
    PRESENTED = 0x01  # the powerbank stands out of the slot, waiting for the rider
    TAKEN = 0x02  # the rider took it
    RELOCKED = 0x03  # nobody took it; it was pulled back and latched
    JAMMED = 0x04  # the latch did not open or close; the slot is faulty


class SlotCondition(enum.IntEnum):
    EMPTY = 0x00
    DOCKED = 0x01  # a powerbank is latched in (charging or full)
    EJECTING = 0x02
    PRESENTED = 0x03
    FAULT = 0x04


class FaultCode(enum.IntEnum):
    NONE = 0x00
    LATCH_JAMMED = 0x01
    OVERHEAT = 0x02  # value: temperature in degrees Celsius
    CHARGER = 0x03
    ID_UNREADABLE = 0x04
    SENSOR = 0x05
    POWER = 0x06  # board-wide (slot 0): supply voltage out of range


class DoorState(enum.IntEnum):
    CLOSED = 0x00
    OPEN = 0x01
    TAMPER = 0x02


class Colour(enum.IntEnum):
    OFF = 0x00
    GREEN = 0x01
    AMBER = 0x02
    RED = 0x03
    BLUE = 0x04
    WHITE = 0x05


class Pattern(enum.IntEnum):
    STEADY = 0x00
    BLINK_SLOW = 0x01
    BLINK_FAST = 0x02
    PULSE = 0x03


SLOT = U8(1, 255)
REQUEST_ID = U64()
POWERBANK_ID = Text(MAX_POWERBANK_ID)


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotReport:
    """One slot as the board sees it, inside a StatusReply."""

    WIRE: ClassVar[Wire] = (
        ("slot", SLOT),
        ("condition", Enum8(SlotCondition)),
        ("disabled", Bool()),
        ("fault", Enum8(FaultCode)),
        ("charge", Charge()),
        ("temperature", Temperature()),
        ("powerbank_id", POWERBANK_ID),
    )
    slot: int
    condition: SlotCondition
    disabled: bool = False
    fault: FaultCode = FaultCode.NONE
    charge: int | None = None
    temperature: int | None = None
    powerbank_id: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every message; ``TYPE`` is its wire type byte."""

    TYPE: ClassVar[int] = 0
    WIRE: ClassVar[Wire] = ()


class Request(Message):
    """Kiosk to board; the board answers with ``REPLY`` (or Nack) under the same sequence."""

    __slots__ = ()
    REPLY: ClassVar[type[Reply]]


class Reply(Message):
    __slots__ = ()


class Notification(Message):
    """Board to kiosk, unsolicited; the kiosk acknowledges each with NotifyAck."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class HelloReply(Reply):
    TYPE = 0x41
    WIRE = (("protocol", U8()), ("slots", U8(1, 255)), ("firmware", Text(MAX_FIRMWARE)))
    protocol: int
    slots: int
    firmware: str


@dataclass(frozen=True, slots=True)
class StatusReply(Reply):
    TYPE = 0x42
    WIRE = (("total", U8(1, 255)), ("reports", Records(SlotReport, MAX_STATUS_SLOTS)))
    total: int
    reports: tuple[SlotReport, ...]


@dataclass(frozen=True, slots=True)
class EjectReply(Reply):
    TYPE = 0x43
    WIRE = (
        ("slot", SLOT),
        ("request_id", REQUEST_ID),
        ("outcome", Enum8(EjectOutcome)),
        ("duplicate", Bool()),
        ("powerbank_id", POWERBANK_ID),
    )
    slot: int
    request_id: int
    outcome: EjectOutcome
    duplicate: bool
    powerbank_id: str


@dataclass(frozen=True, slots=True)
class Ack(Reply):
    TYPE = 0x7E


@dataclass(frozen=True, slots=True)
class Nack(Reply):
    TYPE = 0x7F
    WIRE = (("code", Enum8(NackCode)), ("detail", U8()))
    code: NackCode
    detail: int = 0


@dataclass(frozen=True, slots=True)
class Hello(Request):
    TYPE = 0x01
    REPLY = HelloReply


@dataclass(frozen=True, slots=True)
class Status(Request):
    TYPE = 0x02
    REPLY = StatusReply
    WIRE = (("first", SLOT), ("count", U8(1, MAX_STATUS_SLOTS)))
    first: int = 1
    count: int = MAX_STATUS_SLOTS


@dataclass(frozen=True, slots=True)
class Eject(Request):
    TYPE = 0x03
    REPLY = EjectReply
    WIRE = (("slot", SLOT), ("request_id", REQUEST_ID))
    slot: int
    request_id: int


@dataclass(frozen=True, slots=True)
class SetEnabled(Request):
    TYPE = 0x04
    REPLY = Ack
    WIRE = (("slot", SLOT), ("enabled", Bool()))
    slot: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class SetIndicator(Request):
    TYPE = 0x05
    REPLY = Ack
    WIRE = (("slot", SLOT), ("colour", Enum8(Colour)), ("pattern", Enum8(Pattern)))
    slot: int
    colour: Colour
    pattern: Pattern = Pattern.STEADY


@dataclass(frozen=True, slots=True)
class Reset(Request):
    TYPE = 0x06
    REPLY = Ack


@dataclass(frozen=True, slots=True)
class Booted(Notification):
    TYPE = 0x81
    WIRE = HelloReply.WIRE
    protocol: int
    slots: int
    firmware: str


@dataclass(frozen=True, slots=True)
class Inserted(Notification):
    TYPE = 0x82
    WIRE = (("slot", SLOT), ("charge", Charge()), ("powerbank_id", POWERBANK_ID))
    slot: int
    charge: int | None
    powerbank_id: str


@dataclass(frozen=True, slots=True)
class Removed(Notification):
    TYPE = 0x83
    WIRE = (("slot", SLOT), ("powerbank_id", POWERBANK_ID))
    slot: int
    powerbank_id: str


@dataclass(frozen=True, slots=True)
class Ejected(Notification):
    TYPE = 0x84
    WIRE = (("slot", SLOT), ("request_id", REQUEST_ID), ("powerbank_id", POWERBANK_ID))
    slot: int
    request_id: int
    powerbank_id: str


@dataclass(frozen=True, slots=True)
class Relocked(Notification):
    TYPE = 0x85
    WIRE = Ejected.WIRE
    slot: int
    request_id: int
    powerbank_id: str


@dataclass(frozen=True, slots=True)
class Jammed(Notification):
    TYPE = 0x86
    WIRE = (("slot", SLOT), ("request_id", REQUEST_ID))
    slot: int
    request_id: int


@dataclass(frozen=True, slots=True)
class Fault(Notification):
    """A fault on a slot, or on the whole board when ``slot`` is 0."""

    TYPE = 0x87
    WIRE = (("slot", U8()), ("code", Enum8(FaultCode)), ("value", U8()))
    slot: int
    code: FaultCode
    value: int = 0


@dataclass(frozen=True, slots=True)
class FaultCleared(Notification):
    TYPE = 0x88
    WIRE = (("slot", U8()), ("code", Enum8(FaultCode)))
    slot: int
    code: FaultCode


@dataclass(frozen=True, slots=True)
class Door(Notification):
    TYPE = 0x89
    WIRE = (("state", Enum8(DoorState)),)
    state: DoorState


@dataclass(frozen=True, slots=True)
class NotifyAck(Message):
    """Kiosk to board: the notification with this frame's sequence number arrived."""

    TYPE = 0xC1


REQUESTS: tuple[type[Request], ...] = (Hello, Status, Eject, SetEnabled, SetIndicator, Reset)
REPLIES: tuple[type[Reply], ...] = (HelloReply, StatusReply, EjectReply, Ack, Nack)
NOTIFICATIONS: tuple[type[Notification], ...] = (
    Booted,
    Inserted,
    Removed,
    Ejected,
    Relocked,
    Jammed,
    Fault,
    FaultCleared,
    Door,
)
ALL_MESSAGES: tuple[type[Message], ...] = (*REQUESTS, *REPLIES, *NOTIFICATIONS, NotifyAck)
MESSAGES: dict[int, type[Message]] = {cls.TYPE: cls for cls in ALL_MESSAGES}


def encode_payload(message: Message) -> bytes:
    """The payload bytes of ``message``; ``PayloadError`` when a value is out of range."""
    if MESSAGES.get(message.TYPE) is not type(message):
        raise PayloadError(f"{type(message).__name__} is not a protocol message")
    return pack_fields(message)


def decode_payload(type_byte: int, payload: bytes) -> Message:
    """The message of wire type ``type_byte`` whose payload is ``payload``."""
    cls = MESSAGES.get(type_byte)
    if cls is None:
        raise UnknownMessageError(f"unknown message type {type_byte:#04x}")
    try:
        values, end = unpack_fields(cls.WIRE, payload, 0)
    except PayloadError as exc:
        raise PayloadError(f"{cls.__name__}: {exc}") from None
    if end != len(payload):
        raise PayloadError(f"{cls.__name__}: {len(payload) - end} unexpected trailing bytes")
    return cls(**values)


def field_names(cls: type[Message] | type[SlotReport]) -> list[str]:
    """The dataclass fields of ``cls``, in wire order; tests/unit/test_slot_protocol.py
    checks that docs/slot-protocol.md lists each message's fields in this order."""
    return [field.name for field in fields(cls)]
