"""What the rider flow (``edge.flow``) remembers between two inputs, and its moves between phases.

``FlowState`` holds the phase and when it began, the reason the kiosk is out of service,
the rental under way and who was served when; ``_go`` enters a phase and shows its screen,
``_rest`` goes back to idle (or out of service), ``_result`` shows an outcome, ``_named``
is the first name a success screen may show: the rider's only when ``greet_by_name`` is on
(off by default: a public screen, read by whoever stands behind the rider). The phases'
handlers build on it: ``edge.flow.rental`` (a recognised rider to the end of the rental)
and ``edge.flow`` (looking, the claim step, and the inputs valid in every phase).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from edge.flow.refusals import RefusalTally
from edge.flow.values import Effect, FaceSeen, Mode, Screen, Show, Timeouts


class Phase(StrEnum):
    IDLE = "idle"
    CHECKING = "checking"
    CLAIM = "claim"
    EJECTING = "ejecting"
    CONFIRMING = "confirming"
    TAKE = "take"
    RESULT = "result"
    OUT_OF_SERVICE = "out_of_service"


def face_screen(face: FaceSeen) -> Screen:
    """The checking screen for the face in view: its hint, or "one at a time"."""
    if face.faces > 1:
        return Screen("one_at_a_time")
    return Screen("checking", detail=face.hint)


@dataclass
class Rental:
    rental_id: str
    person_id: str
    first_name: str
    slot: int
    started: float
    powerbank_id: str | None = None


@dataclass
class FlowState:
    """The flow's fields; ``edge.flow.Flow`` adds the handlers."""

    mode: Mode = "rental"
    timeouts: Timeouts = field(default_factory=Timeouts)
    route: str = ""
    vehicle: str = ""
    greet_by_name: bool = False
    phase: Phase = Phase.IDLE
    since: float = 0.0
    out_of_service: str | None = None
    rental: Rental | None = None
    _served: dict[str, float] = field(default_factory=dict)
    _rental_count: int = 0
    _verifying: bool = False  # a typed claim is being checked
    _gone_at: float | None = None  # the face left the camera during the claim step
    _face: FaceSeen | None = None  # the face in view now (its latest hint), None when none
    _refusals: RefusalTally = field(default_factory=RefusalTally)

    def __post_init__(self) -> None:
        self._refusals.window_s = self.timeouts.refusal_window_s

    # The runtime supplies rental ids (ULIDs); the flow only needs them unique.
    def new_rental_id(self, at: float) -> str:
        self._rental_count += 1
        return f"r{int(at * 1000):x}-{self._rental_count}"

    def _named(self, first_name: str) -> str | None:
        """The name a success screen shows: ``first_name`` when greeting by name, else None."""
        if not self.greet_by_name:
            return None
        return first_name.strip() or None

    def _go(self, phase: Phase, at: float, screen: Screen) -> list[Effect]:
        self.phase, self.since = phase, at
        return [Show(screen)]

    def _rest(self, at: float) -> list[Effect]:
        """Out of service, or back to looking: the checking screen while a face is still in
        view (a rider in front of the camera never sees the idle invitation), else idle."""
        if self.out_of_service:
            return self._go(
                Phase.OUT_OF_SERVICE,
                at,
                Screen("out_of_service", "error", detail=self.out_of_service),
            )
        if self._face is not None:
            return self._go(Phase.CHECKING, at, face_screen(self._face))
        return self._go(Phase.IDLE, at, Screen("idle"))

    def _result(self, at: float, screen: Screen) -> list[Effect]:
        return self._go(Phase.RESULT, at, screen)

    def _refuse(self, at: float, person_id: str, reason: str, screen: Screen) -> list[Effect]:
        """A recognised rider turned away: the result (naming nobody) and the refusal, counted
        per rider and reason (``edge.flow.refusals``)."""
        return [*self._result(at, screen), *self._refusals.refused(at, person_id, reason)]

    def drain(self) -> list[Effect]:
        """Refusals counted and not yet recorded, to record before the kiosk stops."""
        return list(self._refusals.drain())
