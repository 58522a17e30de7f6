"""Free text typed on the command line that ends up in an event (``--reason``).

An event the cloud cannot store would wait in the quarantine forever, after the kiosk
acted on it (an eject, maintenance). So the text is checked before anything happens: at
most 200 characters after trimming, and no control character (NUL, a line break, an
escape sequence) or lone UTF-16 surrogate, which no store keeps or no screen shows.
"""

from __future__ import annotations

import re

from cloud_sync.errors import InputError

MAX_REASON = 200
_BAD_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def checked_reason(text: str, *, required: bool, option: str = "--reason") -> str:
    """``text`` trimmed, or ``InputError`` saying what to type instead; nothing is done yet
    when it is raised."""
    text = text.strip()
    if required and not text:
        raise InputError(f"{option} must be 1 to {MAX_REASON} characters")
    if len(text) > MAX_REASON:
        raise InputError(f"{option} must be at most {MAX_REASON} characters, not {len(text)}")
    found = _BAD_CHAR.search(text)
    if found is not None:
        raise InputError(
            f"{option} holds the control character U+{ord(found.group()):04X} at position "
            f"{found.start() + 1}: type the reason as plain text on one line"
        )
    return text
