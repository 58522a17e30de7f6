"""What the rider should do to be seen better: the stable keys of the rider screen's hints.

The face pipeline (quality gate, liveness, the live pipeline) names a ``Hint``; the flow
passes it on unchanged as the checking screen's ``detail``; the rider page looks it up in
``edge/ui/strings/<language>.json`` under ``hint``. ``english`` gives the English words for
the command line (the refusals of ``kiosk enroll`` and ``kiosk-cloud riders add``), which
runs where the rider page is not installed; a unit test keeps them equal to the page's
English words. ``ONE_PHOTO_HINT`` is said to whoever enrols a rider from a single photo.
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
    TURN_LEFT = "turn_left"  # the challenges (edge.vision.challenge): the rider's own left
    TURN_RIGHT = "turn_right"
    BLINK_TWICE = "blink_twice"


# Said after enrolling a rider who has a single template: the kiosk matches a rider against
# the mean of their templates, which recognises more riders without a claim
# (docs/face-pipeline.md, Enrolment).
ONE_PHOTO_HINT = (
    "one photo: a second photo of this rider lets the kiosk recognise them more often "
    "without a claim code"
)

ENGLISH: dict[Hint, str] = {
    Hint.COME_CLOSER: "Come closer to the camera.",
    Hint.MOVE_TO_MIDDLE: "Step into the middle of the picture.",
    Hint.HOLD_STILL: "Hold still for a moment.",
    Hint.MORE_LIGHT: "It is too dark here: step into the light.",
    Hint.TOO_BRIGHT: "Too much light: step out of the glare.",
    Hint.LOOK_AT_CAMERA: "Look straight at the camera.",
    Hint.BLINK: "Blink once, please.",
    Hint.LOOK_AND_BLINK: "Look at the camera and blink.",
    Hint.ONE_AT_A_TIME: "One person at a time, please.",
    Hint.TURN_LEFT: "Turn your head to your left.",
    Hint.TURN_RIGHT: "Turn your head to your right.",
    Hint.BLINK_TWICE: "Blink twice, please.",
}


def english(hint: str | None) -> str:
    """The English words of ``hint``, or ``""`` for none or an unknown key."""
    try:
        return ENGLISH[Hint(hint)] if hint is not None else ""
    except ValueError:
        return ""
