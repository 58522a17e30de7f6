"""The rider flow's values: its inputs (what happened, and when) and its effects.

Every input carries the monotonic time it happened (``at``); every effect is something for
the runtime to carry out. Plain frozen values, so the flow (``edge.flow``) is tested with
nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["rental", "boarding"]

# -- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceSeen:
    """A face is in view but no decision yet; ``hint`` is what the rider should do."""

    at: float
    faces: int = 1
    hint: str | None = None  # a key of models.hints.Hint: "come_closer", "blink", ...


@dataclass(frozen=True)
class FaceGone:
    at: float


@dataclass(frozen=True)
class Recognised:
    """The vision pipeline's accepted decision, with eligibility and a slot worked out."""

    at: float
    person_id: str
    first_name: str
    refusal: str | None = None  # None, or "open_rental", "blocked", "expired", "not_allowed"
    slot: int | None = None  # the slot to eject; None when no charged powerbank is ready


@dataclass(frozen=True)
class NotRecognised:
    at: float
    reason: str  # "unknown", "ambiguous", "liveness", "claim required", ...


@dataclass(frozen=True)
class Ejected:
    """The board reports the powerbank presented at the slot's mouth."""

    at: float
    slot: int
    powerbank_id: str
    rental_id: str | None = None  # the eject's, when the board worker posts it


@dataclass(frozen=True)
class EjectFailed:
    at: float
    slot: int
    reason: str  # "jammed", "board_fault", "no_answer", ...
    rental_id: str | None = None  # the eject's, when the board worker posts it


@dataclass(frozen=True)
class EjectUnconfirmed:
    """The board may have ejected but did not confirm; the runtime is asking it again."""

    at: float
    slot: int
    rental_id: str | None = None  # the eject's, when the board worker posts it


@dataclass(frozen=True)
class EjectUnsettled:
    """The runtime gave up asking: whether the powerbank went out is left to the ledger."""

    at: float
    slot: int
    rental_id: str | None = None  # the eject's, when the board worker posts it


@dataclass(frozen=True)
class EjectAborted:
    """The eject was never sent (e.g. no room to record its outcome): no rental, no event."""

    at: float
    slot: int
    reason: str  # also the out-of-service reason, e.g. "outbox_full"


@dataclass(frozen=True)
class Taken:
    at: float
    slot: int
    rental_id: str | None = None  # the eject's, when the board worker posts it


@dataclass(frozen=True)
class NotTaken:
    """The latch re-locked with the powerbank still in the slot."""

    at: float
    slot: int
    rental_id: str | None = None  # the eject's, when the board worker posts it


@dataclass(frozen=True)
class Returned:
    at: float
    slot: int
    powerbank_id: str
    charge: int | None = None


@dataclass(frozen=True)
class Service:
    """The runtime's view of whether the kiosk may rent: ``reason`` None means it may."""

    at: float
    reason: str | None


@dataclass(frozen=True)
class Tick:
    at: float


@dataclass(frozen=True)
class ClaimAsked:
    """The face is close to a rider but not certain: the rider is asked for their claim.

    The runtime holds the face's encoding meanwhile (in memory only); ``tries_left`` is how
    many wrong codes this face may still type before the lockout."""

    at: float
    tries_left: int


@dataclass(frozen=True)
class ClaimEntered:
    """The rider typed a claim on the rider page (never logged: ``repr`` hides it)."""

    at: float
    code: str = field(repr=False)


@dataclass(frozen=True)
class ClaimCancelled:
    """The rider pressed "not me" / cancel on the claim keypad."""

    at: float


@dataclass(frozen=True)
class ClaimChecked:
    """The runtime's verdict on a typed claim: ``person_id`` set only when it verified.

    An accepted claim carries the eligibility and slot worked out as for ``Recognised``;
    ``reason`` is the claim step's (``match``, ``claim not recognised``, ``no match``,
    ``no claim set``, ``claim locked``, ...), ``tries_left`` what remains before the lock."""

    at: float
    person_id: str | None
    reason: str
    tries_left: int = 0
    first_name: str = ""
    refusal: str | None = None
    slot: int | None = None


Input = (
    FaceSeen
    | FaceGone
    | Recognised
    | NotRecognised
    | Ejected
    | EjectFailed
    | EjectUnconfirmed
    | EjectUnsettled
    | EjectAborted
    | Taken
    | NotTaken
    | Returned
    | Service
    | Tick
    | ClaimAsked
    | ClaimEntered
    | ClaimCancelled
    | ClaimChecked
)

# -- effects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Screen:
    """What the rider page shows: a message key (see edge/ui/strings) and its values.

    It holds only what the screen shows (it travels to the page as it is): ``name`` is the
    rider's first name on a success screen when the kiosk greets by name, else None."""

    key: str
    tone: Literal["info", "ok", "error"] = "info"
    name: str | None = None
    slot: int | None = None
    detail: str | None = None
    tries: int | None = None  # the claim screen: wrong codes left before the lock
    seconds: int | None = None  # the claim screen: time left to type the code


@dataclass(frozen=True)
class Show:
    screen: Screen


@dataclass(frozen=True)
class Eject:
    slot: int
    rental_id: str
    person_id: str


@dataclass(frozen=True)
class Record:
    """An event for the outbox; the runtime stamps id, seq and time."""

    type: str
    payload: tuple[tuple[str, str | int | float | None], ...]

    def as_dict(self) -> dict[str, str | int | float | None]:
        return dict(self.payload)


def record(event_type: str, **payload: str | int | float | None) -> Record:
    return Record(event_type, tuple(sorted(payload.items())))


@dataclass(frozen=True)
class Unsettled:
    """The flow let the rider go without knowing the eject's outcome: settle it elsewhere."""

    slot: int
    rental_id: str


@dataclass(frozen=True)
class VerifyClaim:
    """Check the typed claim against the face held for the claim step (off the flow thread);
    the answer comes back as ``ClaimChecked``. ``repr`` hides the code."""

    code: str = field(repr=False)


Effect = Show | Eject | Record | Unsettled | VerifyClaim


@dataclass(frozen=True)
class Timeouts:
    checking_s: float = 10.0  # a face in view with no decision
    eject_s: float = 8.0  # the board must present the powerbank (then: confirming)
    confirm_s: float = 30.0  # the runtime asks again; the flow waits this plus eject_s
    take_s: float = 30.0  # the rider must take it (the board re-locks by then)
    result_s: float = 5.0  # how long a result stays on screen
    repeat_guard_s: float = 60.0  # the same rider is not served twice within this
    boarding_window_s: float = 600.0  # one boarding per rider per window
    refusal_window_s: float = 60.0  # a rider refused again within this: counted, one event
    claim_s: float = 30.0  # the claim screen waits this long for a code (then: idle)
    claim_gone_s: float = 3.0  # no face for this long cancels the claim (looking down is fine)
