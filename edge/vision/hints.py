"""What the rider should do to be seen better: the stable keys of the rider screen's hints.

The face pipeline (quality gate, liveness, the live pipeline) names a ``Hint``; the flow
passes it on unchanged as the checking screen's ``detail``; the rider page looks it up in
``edge/ui/strings/<language>.json`` under ``hint``. The words live only there, in every
language: a unit test checks that every member of ``Hint`` has them. ``english`` gives the
English words for the command line (``kiosk enroll``'s refusals).
"""

from __future__ import annotations

from enum import StrEnum


class Hint(StrEnum):
    COME_CLOSER = "come_closer"
    MOVE_TO_MIDDLE = "move_to_middle"
    HOLD_STILL = "hold_still"
    MORE_LIGHT = "more_light"
    TOO_BRIGHT = "too_bright"
    LOOK_AT_CAMERA = "look_at_camera"
    BLINK = "blink"
    LOOK_AND_BLINK = "look_and_blink"
    ONE_AT_A_TIME = "one_at_a_time"


def english(hint: str | None) -> str:
    """The English words of ``hint`` (the rider page's), or ``""`` for none or an unknown key."""
    if hint is None:
        return ""
    from edge.ui.texts import load_strings  # the words are the rider page's, in one place

    table = load_strings("en").get("hint", {})
    return str(table.get(hint, ""))
