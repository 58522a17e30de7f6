"""The rental's half of the rider flow (``edge.flow``): from a recognised rider to its end.

``RentalSteps`` decides what a recognised rider gets (served too recently, not eligible,
no powerbank, or an eject; in boarding mode a boarding instead), then follows the eject
through the board's answers: ``ejecting`` ──presented──> ``take`` ──taken──> result
(``rental.started``); a jam, a powerbank not taken or the take timeout end it as
``rental.failed``; a board that does not answer moves to ``confirming``, and one that
still gives no answer lets the rider go with the rental handed over (``Unsettled``).
A rider turned away (not eligible, no powerbank) leaves a ``rider.refused`` event with
the reason, counted per rider (``edge.flow.refusals``); the screen names nobody.
"""

from __future__ import annotations

from edge.flow.state import FlowState, Phase, Rental
from edge.flow.values import (
    Effect,
    Eject,
    EjectAborted,
    Ejected,
    EjectFailed,
    EjectUnconfirmed,
    EjectUnsettled,
    Input,
    NotTaken,
    Recognised,
    Screen,
    Taken,
    Unsettled,
    record,
)

NO_POWERBANK = "no_powerbank"  # the refusal reason when no charged powerbank is ready
SlotNews = (
    Ejected | EjectFailed | EjectUnconfirmed | EjectUnsettled | EjectAborted | Taken | NotTaken
)


def _ours(event: SlotNews, rental: Rental) -> bool:
    """The news is about this rental's eject: its slot, and its rental id when the board
    worker named one (a late answer about an eject the flow gave up on is not)."""
    rental_id = getattr(event, "rental_id", None)
    return event.slot == rental.slot and rental_id in (None, rental.rental_id)


class RentalSteps(FlowState):
    """The handlers of a recognised rider and of the ``ejecting``, ``confirming`` and
    ``take`` phases."""

    def _recognised(self, event: Recognised, rental_id: str | None) -> list[Effect]:
        at, person = event.at, event.person_id
        if self.mode == "boarding":
            return self._board(event)
        last = self._served.get(person)
        if last is not None and at - last < self.timeouts.repeat_guard_s:
            return self._result(at, Screen("already_served"))
        if event.refusal is not None:  # no name, no reason on screen: the app says why
            return self._refuse(at, person, event.refusal, Screen("not_eligible", "error"))
        if event.slot is None:
            return self._refuse(at, person, NO_POWERBANK, Screen("no_powerbank", "error"))
        rental = Rental(
            rental_id or self.new_rental_id(at), person, event.first_name, event.slot, at
        )
        self.rental = rental
        screen = Screen("ejecting", name=self._named(event.first_name), slot=event.slot)
        effects = self._go(Phase.EJECTING, at, screen)
        return [*effects, Eject(event.slot, rental.rental_id, person)]

    def _board(self, event: Recognised) -> list[Effect]:
        at, person = event.at, event.person_id
        if event.refusal is not None:
            return self._refuse(at, person, event.refusal, Screen("not_eligible", "error"))
        boarded = Screen("boarded", "ok", name=self._named(event.first_name))
        last = self._served.get(person)
        if last is not None and at - last < self.timeouts.boarding_window_s:
            return self._result(at, boarded)
        self._served[person] = at
        effects = self._result(at, boarded)
        return [
            *effects,
            record("boarding.recorded", person_id=person, route=self.route, vehicle=self.vehicle),
        ]

    def _renting(self, event: Input) -> list[Effect]:
        rental = self.rental
        if rental is None:  # pragma: no cover - a phase invariant
            return self._rest(event.at)
        unsure = self.phase in (Phase.EJECTING, Phase.CONFIRMING)
        if isinstance(event, Ejected) and _ours(event, rental) and unsure:
            rental.powerbank_id = event.powerbank_id
            screen = Screen("take", "ok", name=self._named(rental.first_name), slot=rental.slot)
            return self._go(Phase.TAKE, event.at, screen)
        if isinstance(event, EjectUnconfirmed) and _ours(event, rental) and unsure:
            return self._confirming(event.at) if self.phase == Phase.EJECTING else []
        if isinstance(event, EjectUnsettled) and _ours(event, rental) and unsure:
            return self._let_go(event.at)
        if (
            isinstance(event, EjectAborted)
            and _ours(event, rental)
            and self.phase == Phase.EJECTING
        ):
            self.rental = None
            self.out_of_service = event.reason
            return self._rest(event.at)
        if isinstance(event, EjectFailed) and _ours(event, rental):
            return self._fail(
                event.at, event.reason, Screen("eject_failed", "error", slot=rental.slot)
            )
        if isinstance(event, Taken) and _ours(event, rental) and rental.powerbank_id is not None:
            self._served[rental.person_id] = event.at
            self.rental = None
            effects = self._result(
                event.at, Screen("enjoy", "ok", name=self._named(rental.first_name))
            )
            started = record(
                "rental.started",
                rental_id=rental.rental_id,
                person_id=rental.person_id,
                slot=rental.slot,
                powerbank_id=rental.powerbank_id,
                request_id=rental.rental_id,
            )
            return [*effects, started]
        if isinstance(event, NotTaken) and _ours(event, rental):
            return self._fail(event.at, "not_taken", Screen("not_taken", "error", slot=rental.slot))
        return []  # faces, other slots: the rental in progress keeps the screen

    def _confirming(self, at: float) -> list[Effect]:
        rental = self.rental
        assert rental is not None
        screen = Screen("eject_wait", name=self._named(rental.first_name), slot=rental.slot)
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
