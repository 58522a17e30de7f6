"""Payload field codecs of the slot-board protocol (pure): how each value type is laid out.

Integers are big-endian; texts are a length byte and printable ASCII; an optional charge
is 0xFF when unknown, an optional temperature 0x80. Decoding is strict: a value outside
its range is a ``PayloadError``, so a frame decodes to exactly one message.
"""

from __future__ import annotations

import enum
from typing import Any

from hardware.errors import PayloadError


class Field:
    """One payload field: how a value becomes bytes and back."""

    def pack(self, value: Any) -> bytes:
        raise NotImplementedError

    def unpack(self, data: bytes, pos: int) -> tuple[Any, int]:
        raise NotImplementedError


def _take(data: bytes, pos: int, size: int) -> bytes:
    if pos + size > len(data):
        raise PayloadError(f"payload ends early: needs {pos + size} bytes, has {len(data)}")
    return data[pos : pos + size]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class U8(Field):
    def __init__(self, lo: int = 0, hi: int = 255) -> None:
        self.lo, self.hi = lo, hi

    def pack(self, value: Any) -> bytes:
        if not _is_int(value) or not self.lo <= value <= self.hi:
            raise PayloadError(f"{value!r} is not an integer in {self.lo}..{self.hi}")
        return bytes([value])

    def unpack(self, data: bytes, pos: int) -> tuple[Any, int]:
        value = _take(data, pos, 1)[0]
        if not self.lo <= value <= self.hi:
            raise PayloadError(f"{value} is outside {self.lo}..{self.hi}")
        return value, pos + 1


class U64(Field):
    def pack(self, value: Any) -> bytes:
        if not _is_int(value) or not 0 <= value < 1 << 64:
            raise PayloadError(f"{value!r} is not a 64-bit unsigned integer")
        return int(value).to_bytes(8, "big")

    def unpack(self, data: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(_take(data, pos, 8), "big"), pos + 8


class Bool(Field):
    def pack(self, value: Any) -> bytes:
        if not isinstance(value, bool):
            raise PayloadError(f"{value!r} is not a boolean")
        return b"\x01" if value else b"\x00"

    def unpack(self, data: bytes, pos: int) -> tuple[Any, int]:
        byte = _take(data, pos, 1)[0]
        if byte > 1:
            raise PayloadError(f"boolean byte is {byte:#04x}, not 0x00 or 0x01")
        return byte == 1, pos + 1


class Enum8(Field):
    def __init__(self, kind: type[enum.IntEnum]) -> None:
        self.kind = kind

    def pack(self, value: Any) -> bytes:
        if not isinstance(value, self.kind):
            raise PayloadError(f"{value!r} is not a {self.kind.__name__}")
        return bytes([int(value)])

    def unpack(self, data: bytes, pos: int) -> tuple[Any, int]:
        byte = _take(data, pos, 1)[0]
        try:
            return self.kind(byte), pos + 1
        except ValueError:
            raise PayloadError(f"{byte:#04x} is not a {self.kind.__name__}") from None


class Charge(Field):
    """State of charge 0..100 %, or None (0xFF) when unknown."""

    def pack(self, value: Any) -> bytes:
        if value is None:
            return b"\xff"
        if not _is_int(value) or not 0 <= value <= 100:
            raise PayloadError(f"charge {value!r} is not 0..100 or None")
        return bytes([value])

    def unpack(self, data: bytes, pos: int) -> tuple[Any, int]:
        byte = _take(data, pos, 1)[0]
        if byte == 0xFF:
            return None, pos + 1
        if byte > 100:
            raise PayloadError(f"charge byte {byte:#04x} is not 0..100 or 0xff")
        return byte, pos + 1


class Temperature(Field):
    """Degrees Celsius as a signed byte -127..127, or None (0x80) when unknown."""

    def pack(self, value: Any) -> bytes:
        if value is None:
            return b"\x80"
        if not _is_int(value) or not -127 <= value <= 127:
            raise PayloadError(f"temperature {value!r} is not -127..127 or None")
        return int(value).to_bytes(1, "big", signed=True)

    def unpack(self, data: bytes, pos: int) -> tuple[Any, int]:
        value = int.from_bytes(_take(data, pos, 1), "big", signed=True)
        return (None if value == -128 else value), pos + 1


class Text(Field):
    """A length byte, then that many printable ASCII characters (0x20..0x7E)."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def pack(self, value: Any) -> bytes:
        if not isinstance(value, str) or len(value) > self.max_len:
            raise PayloadError(f"{value!r} is not a text of at most {self.max_len} characters")
        if not all(" " <= char <= "~" for char in value):
            raise PayloadError(f"{value!r} is not printable ASCII")
        return bytes([len(value)]) + value.encode("ascii")

    def unpack(self, data: bytes, pos: int) -> tuple[Any, int]:
        size = _take(data, pos, 1)[0]
        if size > self.max_len:
            raise PayloadError(f"text length {size} is over {self.max_len}")
        raw = _take(data, pos + 1, size)
        if not all(0x20 <= byte <= 0x7E for byte in raw):
            raise PayloadError("text is not printable ASCII")
        return raw.decode("ascii"), pos + 1 + size


class Records(Field):
    """A count byte, then that many records of one layout."""

    def __init__(self, kind: type[Any], max_items: int) -> None:
        self.kind, self.max_items = kind, max_items

    def pack(self, value: Any) -> bytes:
        if not isinstance(value, tuple) or len(value) > self.max_items:
            raise PayloadError(f"expected a tuple of at most {self.max_items} records")
        if not all(isinstance(item, self.kind) for item in value):
            raise PayloadError(f"expected {self.kind.__name__} records")
        return bytes([len(value)]) + b"".join(pack_fields(item) for item in value)

    def unpack(self, data: bytes, pos: int) -> tuple[Any, int]:
        count = _take(data, pos, 1)[0]
        if count > self.max_items:
            raise PayloadError(f"{count} records, at most {self.max_items} allowed")
        pos += 1
        items = []
        for _ in range(count):
            values, pos = unpack_fields(self.kind.WIRE, data, pos)
            items.append(self.kind(**values))
        return tuple(items), pos


Wire = tuple[tuple[str, Field], ...]


def pack_fields(record: Any) -> bytes:
    parts = []
    for name, field in record.WIRE:
        try:
            parts.append(field.pack(getattr(record, name)))
        except PayloadError as exc:
            raise PayloadError(f"{type(record).__name__}.{name}: {exc}") from None
    return b"".join(parts)


def unpack_fields(wire: Wire, data: bytes, pos: int) -> tuple[dict[str, Any], int]:
    values: dict[str, Any] = {}
    for name, field in wire:
        try:
            values[name], pos = field.unpack(data, pos)
        except PayloadError as exc:
            raise PayloadError(f"{name}: {exc}") from None
    return values, pos
