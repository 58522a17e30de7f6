"""The rider's flow at the kiosk, as a pure state machine.

Inputs (``edge.flow.values``, re-exported by ``edge.flow``) are frozen dataclasses that carry the monotonic time they happened (``at``); the
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
                                ├──"not me" (cancelled)──> result
                                └──locked / no claim set / timeout / walked away──> result / idle

    ejecting ──board silent / unsure──> confirming ("please wait") ──board answers──> take / result
                                            └──still unsure──> result (no event: the ledger settles it)

The claim step (``claim``): when the automatic decision is not certain enough, the runtime
asks for the rider's claim (``ClaimAsked``, holding the face's encoding itself); the code
typed on the rider page (``ClaimEntered``) becomes a ``VerifyClaim`` effect, and only a
``ClaimChecked`` naming a person leads to an eject. A face out of view for
``claim_gone_s``, no code within ``claim_s`` (the screen counts it down) or the rider's
"not me" (``ClaimCancelled``) ends it.

What the screen shows is all that travels to the rider page: a refusal names no person
and no account detail (the ``rider.refused`` event, for the cloud, holds the person id and
the reason code), and the rider's first name is shown on a success only when the
kiosk greets by name (``greet_by_name``, off by default: see ``edge.flow.state``).

``out_of_service`` is entered from idle or checking whenever the runtime reports a reason
(maintenance, outbox full, roster too old, clock not set, board not answering); a rental
already under way finishes first. Returns are recorded in every phase.

An eject the board may have carried out is never recorded as failed on a guess: the flow
waits in ``confirming`` while the runtime asks the board again (same request id), and when
even that gives no answer it lets the rider go and hands the rental over (``Unsettled``)
to be settled from the slot's status.

A face in view never sees the idle screen: ``checking`` lasts while the face stays (its
timeout only rests a flow whose face has gone), a result is read for ``result_s`` and then
stays while that face is in view (a new decision replaces it), and going back from a
phase with a face still in view shows ``checking`` (``FlowState._rest``).

Here: the dispatch (``Flow.handle``), looking at faces, the claim step, and the inputs
valid in every phase. The flow's fields and its moves between phases are in
``edge.flow.state``; a recognised rider and the ``ejecting``, ``confirming`` and ``take``
phases in ``edge.flow.rental``.
"""

from __future__ import annotations

from edge.flow.rental import RentalSteps
from edge.flow.state import Phase, face_screen
from edge.flow.values import (
    ClaimAsked,
    ClaimCancelled,
    ClaimChecked,
    ClaimEntered,
    Effect,
    FaceGone,
    FaceSeen,
    Input,
    NotRecognised,
    Recognised,
    Returned,
    Screen,
    Service,
    Show,
    Tick,
    VerifyClaim,
    record,
)

#: ``ClaimChecked`` reasons that mean "try again" (a wrong code or a face that did not verify).
CLAIM_WRONG = frozenset({"claim not recognised", "no match", "ambiguous", "claim shared"})
CLAIM_LOCKED = "claim locked"
NO_CLAIM_SET = "no claim set"


class Flow(RentalSteps):
    """The kiosk's flow. Feed it inputs with ``handle``; carry out the effects it returns.

    Its fields are ``FlowState``'s; the rental's handlers are ``RentalSteps``'s."""

    def handle(self, event: Input, rental_id: str | None = None) -> list[Effect]:
        """Advance the machine; ``rental_id`` names the rental an eject would start."""
        if isinstance(event, FaceSeen):
            self._face = event
        elif isinstance(event, FaceGone):
            self._face = None
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

    # -- idle, checking, result: looking at faces ----------------------------------------

    def _looking(self, event: Input, rental_id: str | None) -> list[Effect]:
        # A result is read for ``result_s``; after that it stays while the face that saw it
        # is still in view, and a new decision (another face, a second look) replaces it.
        reading = self.phase == Phase.RESULT and event.at - self.since < self.timeouts.result_s
        if isinstance(event, FaceSeen):
            if self.phase == Phase.RESULT:
                return []  # let the result be read; the next face starts afresh after it
            return self._go(Phase.CHECKING, event.at, face_screen(event))
        if isinstance(event, FaceGone):
            if self.phase == Phase.CHECKING or (self.phase == Phase.RESULT and not reading):
                return self._rest(event.at)
            return []
        if isinstance(event, NotRecognised):
            if reading:
                return []
            effects = self._result(event.at, Screen("not_recognised", "error"))
            return [*effects, record("face.unrecognised", count=1, reason=event.reason)]
        if isinstance(event, Recognised):
            if reading:
                return []
            return self._recognised(event, rental_id)
        if isinstance(event, ClaimAsked) and not reading:
            return self._ask_claim(event.at, event.tries_left)
        return []  # a claim typed or checked outside the claim step is stale

    # -- the claim step ------------------------------------------------------------------

    def _ask_claim(self, at: float, tries: int, detail: str | None = None) -> list[Effect]:
        self._verifying, self._gone_at = False, None
        if tries <= 0:
            return self._claim_ends(at, Screen("claim_locked", "error"), CLAIM_LOCKED)
        seconds = max(1, round(self.timeouts.claim_s))
        screen = Screen("claim", detail=detail, tries=tries, seconds=seconds)
        return self._go(Phase.CLAIM, at, screen)

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
        elif isinstance(event, ClaimCancelled) and not self._verifying:
            return self._claim_ends(event.at, Screen("claim_cancelled"), "claim cancelled")
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
        return self._claim_ends(at, Screen("not_recognised", "error"), event.reason)

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
        return [*self._refusals.due(at), *self._tick_phase(at)]

    def _tick_phase(self, at: float) -> list[Effect]:
        elapsed = at - self.since
        timeouts = self.timeouts
        if self.phase == Phase.CHECKING and elapsed >= timeouts.checking_s and self._face is None:
            return self._rest(at)  # a face that stays keeps its checking screen
        if self.phase == Phase.CLAIM:
            gone = self._gone_at is not None and at - self._gone_at >= timeouts.claim_gone_s
            if elapsed >= timeouts.claim_s or (gone and not self._verifying):
                self._verifying, self._gone_at = False, None
                unrecognised = record("face.unrecognised", count=1, reason="claim required")
                if self._face is not None and not gone:  # still there: say so, not idle
                    return [*self._result(at, Screen("not_recognised", "error")), unrecognised]
                return [*self._rest(at), unrecognised]
        if self.phase == Phase.EJECTING and elapsed >= timeouts.eject_s and self.rental is not None:
            return self._confirming(at)  # no word from the board: it may have ejected
        confirm_s = timeouts.confirm_s + timeouts.eject_s  # the runtime gives up before this
        if self.phase == Phase.CONFIRMING and elapsed >= confirm_s and self.rental is not None:
            return self._let_go(at)
        if self.phase == Phase.TAKE and elapsed >= timeouts.take_s and self.rental is not None:
            return self._fail(at, "not_taken", Screen("not_taken", "error", slot=self.rental.slot))
        if self.phase == Phase.RESULT and elapsed >= timeouts.result_s and self._face is None:
            return self._rest(at)  # while the face stays in view, its result stays
        return []
