"""The rider's flow at the kiosk, as a pure state machine.

Inputs (``edge.flow_values``, re-exported here) are frozen dataclasses that carry the monotonic time they happened (``at``); the
machine returns effects for the runtime to carry out: what the screen shows, which slot to
eject, which event to record. It never reads a clock, a camera, a board or a database, so
every path (a rider who walks away, a jammed slot, a powerbank not taken, the same rider
twice) is tested with plain values.

Phases::

    idle ──face──> checking ──recognised + eligible──> ejecting ──board: presented──> take
      ^               │  └──not recognised / not eligible──> result            │
      │               └──face gone──> idle                                      ├─taken──> result (rental.started)
      └──────────────── result shown long enough <──────────────────────────────┴─not taken / jam──> result (rental.failed)

    checking ──claim asked──> claim ──code typed──> (verifying) ──verified──> as recognised
                                │  └──wrong, tries left──> claim again
                                └──locked / no claim set / timeout / walked away──> result / idle

    ejecting ──board silent / unsure──> confirming ("please wait") ──board answers──> take / result
                                            └──still unsure──> result (no event: the ledger settles it)

The claim step (``claim``): when the automatic decision is not certain enough, the runtime
asks for the rider's claim (``ClaimAsked``, holding the face's encoding itself); the code
typed on the rider page (``ClaimEntered``) becomes a ``VerifyClaim`` effect, and only a
``ClaimChecked`` naming a person leads to an eject. A face out of view for
``claim_gone_s`` or no code within ``claim_s`` cancels it.

``out_of_service`` is entered from idle or checking whenever the runtime reports a reason
(maintenance, outbox full, roster too old, clock not set, board not answering); a rental
already under way finishes first. Returns are recorded in every phase.

An eject the board may have carried out is never recorded as failed on a guess: the flow
waits in ``confirming`` while the runtime asks the board again (same request id), and when
even that gives no answer it lets the rider go and hands the rental over (``Unsettled``)
to be settled from the slot's status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from edge.flow_values import (
    ClaimAsked,
    ClaimChecked,
    ClaimEntered,
    Effect,
    Eject,
    EjectAborted,
    Ejected,
    EjectFailed,
    EjectUnconfirmed,
    EjectUnsettled,
    FaceGone,
    FaceSeen,
    Input,
    Mode,
    NotRecognised,
    NotTaken,
    Recognised,
    Record,
    Returned,
    Screen,
    Service,
    Show,
    Taken,
    Tick,
    Timeouts,
    Unsettled,
    VerifyClaim,
    record,
)

__all__ = [
    "ClaimAsked",
    "ClaimChecked",
    "ClaimEntered",
    "Effect",
    "Eject",
    "EjectAborted",
    "EjectFailed",
    "EjectUnconfirmed",
    "EjectUnsettled",
    "Ejected",
    "FaceGone",
    "FaceSeen",
    "Flow",
    "Input",
    "Mode",
    "NotRecognised",
    "NotTaken",
    "Phase",
    "Recognised",
    "Record",
    "Returned",
    "Screen",
    "Service",
    "Show",
    "Taken",
    "Tick",
    "Timeouts",
    "Unsettled",
    "VerifyClaim",
    "record",
]

#: ``ClaimChecked`` reasons that mean "try again" (a wrong code or a face that did not verify).
CLAIM_WRONG = frozenset({"claim not recognised", "no match", "ambiguous", "claim shared"})
CLAIM_LOCKED = "claim locked"
NO_CLAIM_SET = "no claim set"


class Phase(StrEnum):
    IDLE = "idle"
    CHECKING = "checking"
    CLAIM = "claim"
    EJECTING = "ejecting"
    CONFIRMING = "confirming"
    TAKE = "take"
    RESULT = "result"
    OUT_OF_SERVICE = "out_of_service"


@dataclass
class _Rental:
    rental_id: str
    person_id: str
    first_name: str
    slot: int
    started: float
    powerbank_id: str | None = None


@dataclass
class Flow:
    """The kiosk's flow. Feed it inputs with ``handle``; carry out the effects it returns."""

    mode: Mode = "rental"
    timeouts: Timeouts = field(default_factory=Timeouts)
    route: str = ""
    vehicle: str = ""
    phase: Phase = Phase.IDLE
    since: float = 0.0
    out_of_service: str | None = None
    rental: _Rental | None = None
    _served: dict[str, float] = field(default_factory=dict)
    _rental_count: int = 0
    _verifying: bool = False  # a typed claim is being checked
    _gone_at: float | None = None  # the face left the camera during the claim step

    # The runtime supplies rental ids (ULIDs); the flow only needs them unique.
    def new_rental_id(self, at: float) -> str:
        self._rental_count += 1
        return f"r{int(at * 1000):x}-{self._rental_count}"

    def _go(self, phase: Phase, at: float, screen: Screen) -> list[Effect]:
        self.phase, self.since = phase, at
        return [Show(screen)]

    def _rest(self, at: float) -> list[Effect]:
        if self.out_of_service:
            return self._go(
                Phase.OUT_OF_SERVICE,
                at,
                Screen("out_of_service", "error", detail=self.out_of_service),
            )
        return self._go(Phase.IDLE, at, Screen("idle"))

    def _result(self, at: float, screen: Screen) -> list[Effect]:
        return self._go(Phase.RESULT, at, screen)

    def handle(self, event: Input, rental_id: str | None = None) -> list[Effect]:
        """Advance the machine; ``rental_id`` names the rental an eject would start."""
        match event:
            case Returned():
                return self._returned(event)
            case Service():
                return self._service(event)
            case Tick():
                return self._tick(event.at)
        match self.phase:
            case Phase.IDLE | Phase.CHECKING | Phase.RESULT:
                return self._looking(event, rental_id)
            case Phase.CLAIM:
                return self._claiming(event, rental_id)
            case Phase.EJECTING | Phase.CONFIRMING | Phase.TAKE:
                return self._renting(event)
            case Phase.OUT_OF_SERVICE:
                return []
        return []

    # -- phases -----------------------------------------------------------------------

    def _looking(self, event: Input, rental_id: str | None) -> list[Effect]:
        if isinstance(event, FaceSeen):
            if self.phase == Phase.RESULT:
                return []  # let the result be read; the next face starts afresh after it
            if event.faces > 1:
                return self._go(Phase.CHECKING, event.at, Screen("one_at_a_time"))
            return self._go(Phase.CHECKING, event.at, Screen("checking", detail=event.hint))
        if isinstance(event, FaceGone):
            return self._rest(event.at) if self.phase == Phase.CHECKING else []
        if isinstance(event, NotRecognised):
            if self.phase == Phase.RESULT:
                return []
            effects = self._result(event.at, Screen("not_recognised", "error", detail=event.reason))
            return [*effects, record("face.unrecognised", count=1, reason=event.reason)]
        if isinstance(event, Recognised):
            if self.phase == Phase.RESULT:
                return []
            return self._recognised(event, rental_id)
        if isinstance(event, ClaimAsked) and self.phase != Phase.RESULT:
            return self._ask_claim(event.at, event.tries_left)
        return []  # a claim typed or checked outside the claim step is stale

    # -- the claim step ------------------------------------------------------------------

    def _ask_claim(self, at: float, tries: int, detail: str | None = None) -> list[Effect]:
        self._verifying, self._gone_at = False, None
        if tries <= 0:
            return self._claim_ends(at, Screen("claim_locked", "error"), CLAIM_LOCKED)
        return self._go(Phase.CLAIM, at, Screen("claim", detail=detail, tries=tries))

    def _claim_ends(self, at: float, screen: Screen, reason: str) -> list[Effect]:
        self._verifying, self._gone_at = False, None
        effects = self._result(at, screen)
        return [*effects, record("face.unrecognised", count=1, reason=reason)]

    def _claiming(self, event: Input, rental_id: str | None) -> list[Effect]:
        if isinstance(event, FaceSeen):
            self._gone_at = None
        elif isinstance(event, FaceGone) and self._gone_at is None:
            self._gone_at = event.at
        elif isinstance(event, ClaimEntered) and not self._verifying:
            self._verifying = True
            return [Show(Screen("claim_checking")), VerifyClaim(event.code)]
        elif isinstance(event, ClaimChecked) and self._verifying:
            return self._claim_checked(event, rental_id)
        elif isinstance(event, ClaimAsked) and not self._verifying:
            return self._ask_claim(event.at, event.tries_left)  # a new track of the face
        elif isinstance(event, Recognised) and not self._verifying:
            self._verifying, self._gone_at = False, None
            return self._recognised(event, rental_id)  # certain after all, without the code
        return []

    def _claim_checked(self, event: ClaimChecked, rental_id: str | None) -> list[Effect]:
        at = event.at
        self._verifying = False
        if event.person_id is not None:
            self._gone_at = None
            recognised = Recognised(
                at, event.person_id, event.first_name, event.refusal, event.slot
            )
            return self._recognised(recognised, rental_id)
        if event.reason == NO_CLAIM_SET:
            return self._claim_ends(at, Screen("no_claim", "error"), NO_CLAIM_SET)
        if event.reason == CLAIM_LOCKED or (event.reason in CLAIM_WRONG and event.tries_left <= 0):
            return self._claim_ends(at, Screen("claim_locked", "error"), CLAIM_LOCKED)
        if event.reason in CLAIM_WRONG:
            return self._ask_claim(at, event.tries_left, detail="wrong")
        screen = Screen("not_recognised", "error", detail=event.reason)
        return self._claim_ends(at, screen, event.reason)

    def _recognised(self, event: Recognised, rental_id: str | None) -> list[Effect]:
        at, person = event.at, event.person_id
        if self.mode == "boarding":
            return self._board(event)
        last = self._served.get(person)
        if last is not None and at - last < self.timeouts.repeat_guard_s:
            return self._result(at, Screen("already_served", name=event.first_name))
        if event.refusal is not None:
            return self._result(
                at, Screen("not_eligible", "error", name=event.first_name, detail=event.refusal)
            )
        if event.slot is None:
            return self._result(at, Screen("no_powerbank", "error", name=event.first_name))
        rental = _Rental(
            rental_id or self.new_rental_id(at), person, event.first_name, event.slot, at
        )
        self.rental = rental
        effects = self._go(
            Phase.EJECTING, at, Screen("ejecting", name=event.first_name, slot=event.slot)
        )
        return [*effects, Eject(event.slot, rental.rental_id, person)]

    def _board(self, event: Recognised) -> list[Effect]:
        at, person = event.at, event.person_id
        if event.refusal is not None:
            return self._result(
                at, Screen("not_eligible", "error", name=event.first_name, detail=event.refusal)
            )
        last = self._served.get(person)
        if last is not None and at - last < self.timeouts.boarding_window_s:
            return self._result(at, Screen("boarded", "ok", name=event.first_name))
        self._served[person] = at
        effects = self._result(at, Screen("boarded", "ok", name=event.first_name))
        return [
            *effects,
            record("boarding.recorded", person_id=person, route=self.route, vehicle=self.vehicle),
        ]

    def _renting(self, event: Input) -> list[Effect]:
        rental = self.rental
        if rental is None:  # pragma: no cover - a phase invariant
            return self._rest(event.at)
        unsure = self.phase in (Phase.EJECTING, Phase.CONFIRMING)
        if isinstance(event, Ejected) and event.slot == rental.slot and unsure:
            rental.powerbank_id = event.powerbank_id
            return self._go(
                Phase.TAKE, event.at, Screen("take", "ok", name=rental.first_name, slot=rental.slot)
            )
        if isinstance(event, EjectUnconfirmed) and event.slot == rental.slot and unsure:
            return self._confirming(event.at) if self.phase == Phase.EJECTING else []
        if isinstance(event, EjectUnsettled) and event.slot == rental.slot and unsure:
            return self._let_go(event.at)
        if (
            isinstance(event, EjectAborted)
            and event.slot == rental.slot
            and self.phase == Phase.EJECTING
        ):
            self.rental = None
            self.out_of_service = event.reason
            return self._rest(event.at)
        if isinstance(event, EjectFailed) and event.slot == rental.slot:
            return self._fail(
                event.at, event.reason, Screen("eject_failed", "error", slot=rental.slot)
            )
        if (
            isinstance(event, Taken)
            and event.slot == rental.slot
            and rental.powerbank_id is not None
        ):
            self._served[rental.person_id] = event.at
            self.rental = None
            effects = self._result(event.at, Screen("enjoy", "ok", name=rental.first_name))
            started = record(
                "rental.started",
                rental_id=rental.rental_id,
                person_id=rental.person_id,
                slot=rental.slot,
                powerbank_id=rental.powerbank_id,
                request_id=rental.rental_id,
            )
            return [*effects, started]
        if isinstance(event, NotTaken) and event.slot == rental.slot:
            return self._fail(event.at, "not_taken", Screen("not_taken", "error", slot=rental.slot))
        return []  # faces, other slots: the rental in progress keeps the screen

    def _confirming(self, at: float) -> list[Effect]:
        rental = self.rental
        assert rental is not None
        screen = Screen("eject_wait", name=rental.first_name, slot=rental.slot)
        return self._go(Phase.CONFIRMING, at, screen)

    def _let_go(self, at: float) -> list[Effect]:
        rental = self.rental
        assert rental is not None
        self.rental = None
        screen = Screen("eject_unconfirmed", "error", slot=rental.slot)
        return [*self._result(at, screen), Unsettled(rental.slot, rental.rental_id)]

    def _fail(self, at: float, reason: str, screen: Screen) -> list[Effect]:
        rental = self.rental
        assert rental is not None
        self.rental = None
        failed = record(
            "rental.failed",
            rental_id=rental.rental_id,
            person_id=rental.person_id,
            slot=rental.slot,
            reason=reason,
        )
        return [*self._result(at, screen), failed]

    # -- inputs valid in every phase ---------------------------------------------------------

    def _returned(self, event: Returned) -> list[Effect]:
        returned = record(
            "rental.returned", slot=event.slot, powerbank_id=event.powerbank_id, charge=event.charge
        )
        if self.phase in (Phase.IDLE, Phase.CHECKING, Phase.RESULT):
            return [*self._result(event.at, Screen("returned", "ok", slot=event.slot)), returned]
        return [returned]

    def _service(self, event: Service) -> list[Effect]:
        if event.reason == self.out_of_service:
            return []
        self.out_of_service = event.reason
        if self.phase in (Phase.IDLE, Phase.CHECKING, Phase.CLAIM, Phase.OUT_OF_SERVICE):
            self._verifying = False
            return self._rest(event.at)
        return []  # a rental or a result finishes first; _tick rests afterwards

    def _tick(self, at: float) -> list[Effect]:
        elapsed = at - self.since
        timeouts = self.timeouts
        if self.phase == Phase.CHECKING and elapsed >= timeouts.checking_s:
            return self._rest(at)
        if self.phase == Phase.CLAIM:
            gone = self._gone_at is not None and at - self._gone_at >= timeouts.claim_gone_s
            if elapsed >= timeouts.claim_s or (gone and not self._verifying):
                self._verifying, self._gone_at = False, None
                return [
                    *self._rest(at),
                    record("face.unrecognised", count=1, reason="claim required"),
                ]
        if self.phase == Phase.EJECTING and elapsed >= timeouts.eject_s and self.rental is not None:
            return self._confirming(at)  # no word from the board: it may have ejected
        confirm_s = timeouts.confirm_s + timeouts.eject_s  # the runtime gives up before this
        if self.phase == Phase.CONFIRMING and elapsed >= confirm_s and self.rental is not None:
            return self._let_go(at)
        if self.phase == Phase.TAKE and elapsed >= timeouts.take_s and self.rental is not None:
            return self._fail(at, "not_taken", Screen("not_taken", "error", slot=self.rental.slot))
        if self.phase == Phase.RESULT and elapsed >= timeouts.result_s:
            return self._rest(at)
        return []
