"""What a value read off the wire must be before anything stores it or echoes it. Pure.

Both stores of the cloud API must accept and refuse the same things, so the narrower one
sets the rule: PostgreSQL keeps no NUL (U+0000) in text, and no store can encode a lone
UTF-16 surrogate (U+D800..U+DFFF, which JSON lets a sender write as ``"\\ud800"``) as
UTF-8. Every string of a request is checked here where it is parsed (``unstorable``,
``first_unstorable``), times are read as RFC 3339 text only (``parse_time``: never a bare
number) within a range every conversion survives, and JSON is read strictly
(``loads_strict``: no NaN or Infinity, no key twice in one object). An error answer that
must show some of the input shows it through ``printable``, which can always be encoded.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from cloud_sync.errors import WireError

MAX_INT64 = 2**63 - 1
#: Deeper than this, a JSON value is refused (no request of the API nests past 4).
MAX_DEPTH = 32
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
#: The earliest time the cloud takes from a kiosk: the Unix epoch, which is also what a
#: kiosk whose clock was reset shows (such an event is kept, not lost).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored (its first bad character), or None when it can."""
    found = _BAD_CHAR.search(text)
    if found is None:
        return None
    code = ord(found.group())
    if code == 0:
        return "holds a NUL character (U+0000), which cannot be stored"
    return f"holds a lone UTF-16 surrogate (U+{code:04X}), which is not valid Unicode"


def first_unstorable(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first string (key or value) anywhere in a JSON value that cannot be stored, as
    ``(dotted path, why)``; a value nested deeper than ``MAX_DEPTH`` counts as one."""
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return where or "(value)", f"nests deeper than {MAX_DEPTH} levels"
        if isinstance(item, str):
            why = unstorable(item)
            if why is not None:
                return where or "(value)", why
        elif isinstance(item, dict):
            children: list[tuple[str, Any, int]] = []
            for key, child in item.items():
                name = str(key)
                why = unstorable(name)
                if why is not None:
                    shown = printable(name, 64)
                    return (f"{where}.{shown}" if where else shown), f"the field name {why}"
                children.append((f"{where}.{name}" if where else name, child, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(
                (f"{where}.{index}" if where else str(index), child, depth + 1)
                for index, child in reversed(list(enumerate(item)))
            )
    return None


def printable(text: str, limit: int = 500) -> str:
    """``text`` made safe to echo in an error answer: at most ``limit`` characters, every
    character that cannot be stored replaced by U+FFFD."""
    short = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    return _BAD_CHAR.sub("\ufffd", short)


def parse_time(value: Any) -> datetime:
    """An RFC 3339 time with a zone (``2026-05-01T12:00:00.123Z``), in UTC.

    Text only: a number (Unix seconds) is refused, as are times without a zone. An aware
    ``datetime`` (built in code, not read off the wire) passes. ``ValueError`` otherwise,
    and for a time that falls outside what a ``datetime`` in UTC can hold.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        found = _RFC3339.fullmatch(value)
        if found is None:
            raise ValueError(
                "must be an RFC 3339 date-time with a time zone, e.g. 2026-05-01T12:00:00Z"
            )
        year, month, day, hour, minute, second, fraction, zone = found.groups()
        try:
            moment = datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second),
                int((fraction or "0")[:6].ljust(6, "0")),
                tzinfo=_zone(zone),
            )
        except ValueError:
            raise ValueError("is not a valid date and time") from None
    else:
        raise ValueError(
            "must be an RFC 3339 date-time string with a time zone, not a "
            + ("number" if isinstance(value, int | float) else type(value).__name__)
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("must carry a time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the years 1 to 9999 once converted to UTC") from None


def _zone(text: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if minutes >= 60:
        raise ValueError(text)
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)  # ValueError past 24 h


def _refuse_constant(name: str) -> Any:
    raise WireError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise WireError(f"the number {text[:32]} is too large for a float")
    return number


def _one_key_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise WireError(f"the key {printable(key, 64)!r} appears twice in one object")
        found[key] = value
    return found


def loads_strict(data: bytes | str) -> Any:
    """JSON as RFC 8259 has it, read strictly; ``WireError`` with the reason otherwise.

    Refused: text that is not UTF-8 JSON, NaN / Infinity (and numbers too large for a
    float), an object with a key twice
    (parsers disagree on which one wins), nesting past what Python can parse, integers
    with more digits than Python converts.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data  # strict: RFC 8259
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite,
            object_pairs_hook=_one_key_each,
        )
    except WireError:
        raise
    except RecursionError:
        raise WireError("the JSON nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON ({printable(str(exc), 200)})") from None
