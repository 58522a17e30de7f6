"""The slot-board wire protocol: framing, CRC-16 and the streaming decoder (pure, no I/O).

A frame on the wire (docs/slot-protocol.md has the full specification and test vectors)::

    0x00  COBS( SEQ | TYPE | LEN | PAYLOAD[LEN] | CRC16_hi | CRC16_lo )  0x00

``CRC16`` is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection,
no final XOR) over SEQ..PAYLOAD, sent most significant byte first. COBS removes every zero
byte from the frame, so 0x00 only ever delimits frames, and a receiver resynchronises at
the next 0x00 after any noise.

``encode(seq, message)`` gives the wire bytes; ``decode(wire)`` parses exactly one frame or
raises a ``ProtocolError``; ``StreamDecoder.feed(data)`` takes bytes as they arrive and
returns the packets it completed, with a ``ProtocolError`` value (never raised) for every
stretch of bytes it had to throw away.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass, field

from hardware.errors import ChecksumError, FrameTooLongError, FramingError, ProtocolError
from hardware.messages import Message, decode_payload, encode_payload

DELIMITER = 0x00
MAX_PAYLOAD = 250
HEADER = 3  # SEQ, TYPE, LEN
MAX_BODY = HEADER + MAX_PAYLOAD + 2  # 255 bytes before stuffing
MAX_STUFFED = MAX_BODY + 2  # COBS adds one byte per started 254 bytes: 257
MAX_FRAME = MAX_STUFFED + 2  # with both delimiters: 259 bytes on the wire


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (check value: crc16(b"123456789") == 0x29B1)."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: ``data`` without any zero byte, plus overhead."""
    out = bytearray()
    blocks = data.split(b"\x00")
    for index, block in enumerate(blocks):
        full = False
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block, full = block[254:], True
        if block or not full or index < len(blocks) - 1:
            out.append(len(block) + 1)
            out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Undo ``cobs_encode``; ``FramingError`` for a zero byte or a code past the end."""
    out = bytearray()
    pos, size = 0, len(data)
    while pos < size:
        code = data[pos]
        if code == 0:
            raise FramingError("zero byte inside a COBS frame")
        end = pos + code
        if end > size:
            raise FramingError(f"COBS code {code:#04x} at {pos} runs past the frame end")
        block = data[pos + 1 : end]
        if 0 in block:
            raise FramingError("zero byte inside a COBS frame")
        out += block
        pos = end
        if code < 0xFF and pos < size:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Packet:
    """One decoded frame: its sequence number and message (``body``: the unstuffed bytes)."""

    seq: int
    message: Message
    body: bytes = field(default=b"", compare=False, repr=False)


def frame_body(seq: int, message: Message) -> bytes:
    """The frame before stuffing: SEQ, TYPE, LEN, PAYLOAD and the CRC."""
    if not 0 <= seq <= 0xFF:
        raise ProtocolError(f"sequence number {seq} is not 0..255")
    payload = encode_payload(message)
    if len(payload) > MAX_PAYLOAD:
        raise FrameTooLongError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    head = bytes([seq, message.TYPE, len(payload)]) + payload
    return head + crc16(head).to_bytes(2, "big")


def encode(seq: int, message: Message) -> bytes:
    """The wire bytes of one frame, both delimiters included."""
    return b"\x00" + cobs_encode(frame_body(seq, message)) + b"\x00"


def decode_body(body: bytes) -> Packet:
    """Check and parse an unstuffed frame (SEQ..CRC)."""
    if len(body) < HEADER + 2:
        raise FramingError(f"frame of {len(body)} bytes is shorter than the minimum 5")
    if len(body) > MAX_BODY:
        raise FrameTooLongError(f"frame of {len(body)} bytes is over the maximum {MAX_BODY}")
    sent, computed = int.from_bytes(body[-2:], "big"), crc16(body[:-2])
    if sent != computed:
        raise ChecksumError(f"CRC mismatch: frame says {sent:#06x}, contents give {computed:#06x}")
    seq, type_byte, length = body[0], body[1], body[2]
    if length > MAX_PAYLOAD:
        raise FrameTooLongError(
            f"length field {length} is over the maximum {MAX_PAYLOAD}", seq, type_byte
        )
    if length != len(body) - HEADER - 2:
        raise FramingError(
            f"length field {length}, but the frame carries {len(body) - 5}", seq, type_byte
        )
    try:
        message = decode_payload(type_byte, body[HEADER:-2])
    except ProtocolError as exc:
        exc.seq, exc.type_byte = seq, type_byte
        raise
    return Packet(seq, message, body)


def decode_stuffed(stuffed: bytes) -> Packet:
    """Parse the bytes between two delimiters."""
    if len(stuffed) > MAX_STUFFED:
        raise FrameTooLongError(f"frame of {len(stuffed)} bytes is over the maximum {MAX_STUFFED}")
    return decode_body(cobs_decode(stuffed))


def decode(wire: bytes) -> Packet:
    """Parse exactly one frame (delimiters optional); raise a ``ProtocolError`` otherwise."""
    chunks = [chunk for chunk in wire.split(b"\x00") if chunk]
    if len(chunks) != 1:
        raise FramingError(f"expected one frame, found {len(chunks)}")
    return decode_stuffed(chunks[0])


class StreamDecoder:
    """Incremental decoder: feed it bytes in any pieces, get back packets and errors.

    It never raises. Bytes between two delimiters form one candidate frame; a candidate
    that fails any check becomes a ``ProtocolError`` value in the output and decoding goes
    on at the next delimiter. A run longer than the maximum frame is reported once and
    skipped up to the next delimiter, so memory stays bounded whatever arrives.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[Packet | ProtocolError]:
        out: list[Packet | ProtocolError] = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            if end < 0:
                self._add(data[start:], out)
                return out
            self._add(data[start:end], out)
            self._finish(out)
            start = end + 1

    def reset(self) -> None:
        """Forget a partly received frame (after the port was reopened)."""
        self._buffer.clear()
        self._skipping = False

    def _add(self, piece: bytes, out: list[Packet | ProtocolError]) -> None:
        if self._skipping or not piece:
            return
        self._buffer += piece
        if len(self._buffer) > MAX_STUFFED:
            out.append(FrameTooLongError(f"no delimiter within {MAX_STUFFED} bytes"))
            self._buffer.clear()
            self._skipping = True

    def _finish(self, out: list[Packet | ProtocolError]) -> None:
        if self._skipping:
            self._skipping = False
            return
        if not self._buffer:
            return  # idle delimiters between frames
        stuffed = bytes(self._buffer)
        self._buffer.clear()
        try:
            out.append(decode_stuffed(stuffed))
        except ProtocolError as exc:
            out.append(exc)


def wire_request_id(request_id: str) -> int:
    """The 64-bit request id sent to the board for a kiosk request id (any text).

    Derived, not random, so a kiosk that restarts and repeats a request with the same id
    sends the same wire id, and the board still performs that eject at most once.
    """
    digest = hashlib.blake2b(request_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")
