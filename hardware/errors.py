"""Errors raised by device drivers (``hardware``).

The tree, by phase::

    HardwareError
    ├── CameraError
    │   ├── CameraOpenError (ConnectionError)   the source cannot be opened or vanished
    │   └── FrameError (ValueError)             a frame or image cannot be decoded (also a
    │                                           ``models.errors.ImageError``)
    └── BoardError                              the slot board (serial line)
        ├── BoardConnectError (ConnectionError) the port cannot be opened, or vanished
        ├── BoardTimeoutError (TimeoutError)    no valid reply within the timeout and retries
        ├── ProtocolError (ValueError)          bytes that break docs/slot-protocol.md
        │   ├── FramingError                    bad COBS, a frame too short, a wrong length field
        │   │   └── FrameTooLongError           a frame or length field over the maximum
        │   ├── ChecksumError                   the CRC-16 does not match
        │   ├── UnknownMessageError             a message type the protocol does not define
        │   ├── PayloadError                    a known type whose payload is malformed
        │   └── ContradictionError              a well-formed answer that contradicts its request
        │       │                               or what the board said at hello
        │       ├── ProtocolVersionError        the board speaks another protocol version
        │       └── EjectForgottenError         the board restarted, or no longer knows an
        │                                       eject asked again: its outcome is unknown
        ├── SlotRangeError (ValueError)         a slot number outside 1..slots
        ├── BoardRefusedError                   the board answered NACK; ``code`` says why
        └── EjectError                          an eject did not present a powerbank
            └── SlotJammedError                 the latch jammed; the slot is now faulty

Exceptions of third-party libraries (OpenCV, pyserial) are translated into these where
they enter, so nothing outside ``hardware`` sees them.
"""

from __future__ import annotations

from models.errors import ImageError


class HardwareError(Exception):
    """Root of every error raised by a device driver."""


class CameraError(HardwareError):
    """A camera source failed."""


class CameraOpenError(CameraError, ConnectionError):
    """The camera source cannot be opened, or disappeared."""


class FrameError(CameraError, ImageError):
    """A frame or image file cannot be decoded into a picture."""


class BoardError(HardwareError):
    """The slot board failed."""


class BoardConnectError(BoardError, ConnectionError):
    """The board's port cannot be opened, or it disappeared."""


class BoardTimeoutError(BoardError, TimeoutError):
    """The board did not answer properly within the timeout and the retries."""


class ProtocolError(BoardError, ValueError):
    """Bytes that do not follow the slot-board protocol (docs/slot-protocol.md).

    ``seq`` and ``type_byte`` are set when the frame's CRC was right, so that a board can
    answer an unknown command or a malformed request with a NACK under the same sequence.
    """

    def __init__(self, message: str, seq: int | None = None, type_byte: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq
        self.type_byte = type_byte


class FramingError(ProtocolError):
    """A frame cannot be unstuffed, is too short, or its length field is wrong."""


class FrameTooLongError(FramingError):
    """A frame, or the length field inside one, is larger than the protocol allows."""


class ChecksumError(ProtocolError):
    """A frame's CRC-16 does not match its contents."""


class UnknownMessageError(ProtocolError):
    """A frame carries a message type the protocol does not define."""


class PayloadError(ProtocolError):
    """A message of a known type has a malformed payload (or a value out of range)."""


class ContradictionError(ProtocolError):
    """A well-formed reply or notification whose fields contradict the request it answers
    (another slot, request id, powerbank or message type) or what the board said at hello
    (more slots, a slot out of range). Never a confirmation: an eject that gets one has an
    unknown outcome (docs/slot-protocol.md, section 7)."""


class ProtocolVersionError(ContradictionError):
    """The board claims a protocol version other than the one this kiosk speaks."""


class EjectForgottenError(ContradictionError):
    """The board can no longer say what became of an eject: it restarted after the request
    was sent, or refused it when asked again. Handled as a contradiction: never asked
    again, settled from the slot's status."""


class SlotRangeError(BoardError, ValueError):
    """A slot number outside the board's slots (1..N)."""


class BoardRefusedError(BoardError):
    """The board answered NACK; ``code`` is the protocol's reason (a ``NackCode``)."""

    def __init__(self, message: str, code: int = 0, detail: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


class EjectError(BoardError):
    """An eject did not end with the powerbank presented to the rider."""


class SlotJammedError(EjectError):
    """The slot's latch jammed during an eject; the board now reports the slot as faulty."""
