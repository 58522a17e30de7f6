"""The rider flow: every path with plain values, and invariants over random input sequences."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.flow import (
    ClaimAsked,
    ClaimCancelled,
    ClaimChecked,
    ClaimEntered,
    Eject,
    EjectAborted,
    Ejected,
    EjectFailed,
    EjectUnconfirmed,
    EjectUnsettled,
    FaceGone,
    FaceSeen,
    Flow,
    Input,
    NotRecognised,
    NotTaken,
    Phase,
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
)
from models.hints import Hint
from models.quality import ALL_ISSUES


def screens(effects: Sequence[object]) -> list[str]:
    return [effect.screen.key for effect in effects if isinstance(effect, Show)]


def records(effects: Sequence[object]) -> list[Record]:
    return [effect for effect in effects if isinstance(effect, Record)]


def asha(at: float, **kw: object) -> Recognised:
    return Recognised(at=at, person_id="p-asha", first_name="Asha", **{"slot": 4, **kw})  # type: ignore[arg-type]


def rent(flow: Flow, at: float = 1.0) -> list[object]:
    out: list[object] = []
    out += flow.handle(FaceSeen(at))
    out += flow.handle(asha(at + 0.3), rental_id="R1")
    out += flow.handle(Ejected(at + 1.0, 4, "PB-9"))
    out += flow.handle(Taken(at + 3.0, 4))
    return out


def test_happy_rental_records_started_only_when_taken() -> None:
    flow = Flow()
    assert screens(flow.handle(FaceSeen(1.0, hint="come_closer"))) == ["checking"]
    effects = flow.handle(asha(1.3), rental_id="R1")
    assert Eject(4, "R1", "p-asha") in effects
    assert screens(effects) == ["ejecting"]
    assert records(effects) == []
    effects = flow.handle(Ejected(2.0, 4, "PB-9"))
    assert screens(effects) == ["take"] and records(effects) == []
    assert flow.handle(Taken(4.0, 4))[-1].as_dict() == {  # type: ignore[union-attr]
        "rental_id": "R1",
        "person_id": "p-asha",
        "slot": 4,
        "powerbank_id": "PB-9",
        "request_id": "R1",
    }
    assert flow.phase == Phase.RESULT
    assert flow.handle(FaceGone(5.0)) == []  # the result is read for result_s
    assert screens(flow.handle(Tick(4.0 + Timeouts().result_s))) == ["idle"]


def test_take_screen_greets_by_first_name_and_slot_when_allowed() -> None:
    flow = Flow(greet_by_name=True)
    flow.handle(FaceSeen(0))
    flow.handle(asha(0.1))
    show = flow.handle(Ejected(0.5, 4, "PB-1"))[0]
    assert isinstance(show, Show)
    assert (show.screen.name, show.screen.slot) == ("Asha", 4)


def every_screen_of_a_rental(flow: Flow) -> list[Screen]:
    effects = [*flow.handle(FaceSeen(0)), *flow.handle(asha(0.1))]
    effects += flow.handle(Ejected(0.5, 4, "PB-1")) + flow.handle(Taken(1.0, 4))
    return [effect.screen for effect in effects if isinstance(effect, Show)]


def test_no_name_travels_to_the_screen_by_default() -> None:
    shown = every_screen_of_a_rental(Flow())
    assert [screen.key for screen in shown] == ["checking", "ejecting", "take", "enjoy"]
    assert all(screen.name is None for screen in shown)
    greeted = every_screen_of_a_rental(Flow(greet_by_name=True))
    assert [screen.name for screen in greeted] == [None, "Asha", "Asha", "Asha"]


@pytest.mark.parametrize("refusal", ["open_rental", "blocked", "expired", "not_allowed"])
@pytest.mark.parametrize("greet", [False, True])
def test_refusals_name_nobody_and_no_account_detail(refusal: str, greet: bool) -> None:
    flow = Flow(greet_by_name=greet)
    flow.handle(FaceSeen(0))
    (screen,) = shown(flow.handle(asha(0.2, refusal=refusal)))
    assert screen.screen == Screen("not_eligible", "error")  # no name, no reason
    served = Flow(greet_by_name=greet)
    served._served["p-asha"] = 0.0
    assert shown(served.handle(asha(1.0)))[0].screen == Screen("already_served")
    empty = Flow(greet_by_name=greet)
    assert shown(empty.handle(asha(1.0, slot=None)))[0].screen == Screen("no_powerbank", "error")


def test_not_recognised_is_refused_and_counted() -> None:
    flow = Flow()
    flow.handle(FaceSeen(0))
    effects = flow.handle(NotRecognised(1, "unknown"))
    assert screens(effects) == ["not_recognised"]
    assert [r.type for r in records(effects)] == ["face.unrecognised"]
    assert not any(isinstance(e, Eject) for e in effects)


def test_not_eligible_ejects_nothing() -> None:
    flow = Flow()
    flow.handle(FaceSeen(0))
    effects = flow.handle(asha(0.2, refusal="open_rental"))
    assert screens(effects) == ["not_eligible"]
    assert not any(isinstance(e, Eject) for e in effects)


def test_no_charged_powerbank() -> None:
    flow = Flow()
    effects = flow.handle(asha(0.2, slot=None))
    assert screens(effects) == ["no_powerbank"]
    assert not any(isinstance(e, Eject) for e in effects)


def test_jammed_slot_records_failure_never_started() -> None:
    flow = Flow()
    flow.handle(asha(0.0), rental_id="R1")
    effects = flow.handle(EjectFailed(1.0, 4, "jammed"))
    assert screens(effects) == ["eject_failed"]
    assert [(r.type, r.as_dict()["reason"]) for r in records(effects)] == [
        ("rental.failed", "jammed")
    ]


def test_board_silent_during_eject_asks_the_rider_to_wait_and_records_nothing() -> None:
    """The powerbank may be out: a silent board is never recorded as a failed rental."""
    flow = Flow()
    flow.handle(asha(0.0), rental_id="R1")
    assert flow.handle(Tick(Timeouts().eject_s - 0.1)) == []
    effects = flow.handle(Tick(Timeouts().eject_s))
    assert screens(effects) == ["eject_wait"] and records(effects) == []
    assert flow.phase == Phase.CONFIRMING
    assert flow.handle(Tick(Timeouts().eject_s + Timeouts().confirm_s)) == []


def test_an_unconfirmed_eject_waits_then_completes_when_the_board_answers() -> None:
    flow = Flow()
    flow.handle(asha(0.0), rental_id="R1")
    effects = flow.handle(EjectUnconfirmed(1.0, 4))
    assert screens(effects) == ["eject_wait"] and records(effects) == []
    assert flow.handle(FaceSeen(1.5)) == [] and flow.handle(asha(1.6)) == []
    assert flow.handle(Service(2.0, "board_offline")) == []
    assert screens(flow.handle(Ejected(5.0, 4, "PB-9"))) == ["take"]
    assert [r.type for r in records(flow.handle(Taken(6.0, 4)))] == ["rental.started"]


def test_an_unconfirmed_jam_is_a_failure_once_the_board_says_so() -> None:
    flow = Flow()
    flow.handle(asha(0.0), rental_id="R1")
    flow.handle(EjectUnconfirmed(1.0, 4))
    effects = flow.handle(EjectFailed(3.0, 4, "jammed"))
    assert [(r.type, r.as_dict()["reason"]) for r in records(effects)] == [
        ("rental.failed", "jammed")
    ]


def test_an_eject_never_confirmed_lets_the_rider_go_without_an_event() -> None:
    flow = Flow()
    flow.handle(asha(0.0), rental_id="R1")
    flow.handle(EjectUnconfirmed(1.0, 4))
    effects = flow.handle(EjectUnsettled(20.0, 4))
    assert screens(effects) == ["eject_unconfirmed"] and records(effects) == []
    assert Unsettled(4, "R1") in effects
    assert flow.rental is None and flow.phase == Phase.RESULT
    # a late answer about that eject changes nothing
    assert flow.handle(Ejected(21.0, 4, "PB-9")) == [] and flow.handle(Taken(22.0, 4)) == []


def test_the_flow_lets_go_by_itself_if_the_runtime_never_answers() -> None:
    flow = Flow()
    timeouts = Timeouts()
    flow.handle(asha(0.0), rental_id="R1")
    flow.handle(EjectUnconfirmed(1.0, 4))
    give_up = 1.0 + timeouts.confirm_s + timeouts.eject_s
    assert flow.handle(Tick(give_up - 0.1)) == []
    effects = flow.handle(Tick(give_up))
    assert Unsettled(4, "R1") in effects and records(effects) == []


def test_an_eject_aborted_before_it_was_sent_goes_out_of_service_without_an_event() -> None:
    flow = Flow()
    flow.handle(FaceSeen(0.0))
    flow.handle(asha(0.1), rental_id="R1")
    effects = flow.handle(EjectAborted(0.1, 4, "outbox_full"))
    assert records(effects) == [] and flow.rental is None
    show = effects[0]
    assert isinstance(show, Show)
    assert (show.screen.key, show.screen.detail) == ("out_of_service", "outbox_full")
    assert flow.handle(asha(1.0)) == []
    assert flow.handle(Service(2.0, "outbox_full")) == []
    assert screens(flow.handle(Service(3.0, None))) == ["checking"]  # the face is still there


def test_powerbank_not_taken_latch_relocks() -> None:
    flow = Flow()
    flow.handle(asha(0.0), rental_id="R1")
    flow.handle(Ejected(1.0, 4, "PB-9"))
    effects = flow.handle(NotTaken(20.0, 4))
    assert screens(effects) == ["not_taken"]
    assert [(r.type, r.as_dict()["reason"]) for r in records(effects)] == [
        ("rental.failed", "not_taken")
    ]


def test_rider_walking_away_while_checking_resets() -> None:
    flow = Flow()
    flow.handle(FaceSeen(0))
    assert screens(flow.handle(FaceGone(1))) == ["idle"]
    flow.handle(FaceSeen(2))
    assert flow.handle(Tick(2 + Timeouts().checking_s)) == []  # still in view: still checking


def test_walking_away_mid_rental_does_not_cancel_it() -> None:
    flow = Flow()
    flow.handle(asha(0.0), rental_id="R1")
    assert flow.handle(FaceGone(0.5)) == []
    assert flow.phase == Phase.EJECTING


def test_two_faces_get_no_decision() -> None:
    flow = Flow()
    assert screens(flow.handle(FaceSeen(0, faces=2))) == ["one_at_a_time"]


def test_same_rider_twice_in_a_row_never_gets_two_rentals() -> None:
    flow = Flow()
    first = rent(flow)
    assert sum(isinstance(e, Eject) for e in first) == 1
    flow.handle(Tick(100.0 - 50))  # result screen gone
    second = flow.handle(asha(10.0))
    assert not any(isinstance(e, Eject) for e in second)
    assert screens(second) == ["already_served"]


def test_recognition_during_a_rental_is_ignored() -> None:
    flow = Flow()
    flow.handle(asha(0.0), rental_id="R1")
    other = Recognised(at=0.5, person_id="p-bo", first_name="Bo", slot=5)
    assert flow.handle(other) == []


def test_return_is_recorded_in_every_phase() -> None:
    flow = Flow()
    effects = flow.handle(Returned(1.0, 7, "PB-3", 80))
    assert screens(effects) == ["returned"]
    assert records(effects)[0].as_dict() == {"slot": 7, "powerbank_id": "PB-3", "charge": 80}
    flow2 = Flow()
    flow2.handle(asha(0.0))
    effects = flow2.handle(Returned(0.5, 7, "PB-3"))
    assert screens(effects) == [] and [r.type for r in records(effects)] == ["rental.returned"]
    assert flow2.phase == Phase.EJECTING


def test_out_of_service_blocks_rentals_and_lifts() -> None:
    flow = Flow()
    effects = flow.handle(Service(0, "maintenance"))
    assert screens(effects) == ["out_of_service"]
    assert flow.handle(asha(1.0)) == []
    assert screens(flow.handle(Service(2, None))) == ["idle"]
    assert any(isinstance(e, Eject) for e in flow.handle(asha(3.0)))


def test_out_of_service_waits_for_the_rental_under_way() -> None:
    flow = Flow()
    flow.handle(asha(0.0), rental_id="R1")
    assert flow.handle(Service(0.5, "outbox_full")) == []
    flow.handle(Ejected(1.0, 4, "PB-9"))
    assert [r.type for r in records(flow.handle(Taken(2.0, 4)))] == ["rental.started"]
    assert screens(flow.handle(Tick(2.0 + Timeouts().result_s))) == ["out_of_service"]


def test_boarding_records_once_per_window() -> None:
    flow = Flow(mode="boarding", route="42", vehicle="bus-7")
    first = flow.handle(asha(0.0))
    assert [r.as_dict() for r in records(first)] == [
        {"person_id": "p-asha", "route": "42", "vehicle": "bus-7"}
    ]
    assert not any(isinstance(e, Eject) for e in first)
    flow.handle(Tick(10.0))
    assert records(flow.handle(asha(20.0))) == []
    flow.handle(Tick(Timeouts().boarding_window_s + 5))
    assert len(records(flow.handle(asha(Timeouts().boarding_window_s + 10)))) == 1


# -- invariants over arbitrary input sequences ----------------------------------------------


def inputs() -> st.SearchStrategy[Input]:
    slots = st.integers(1, 3)
    return st.one_of(
        st.builds(FaceSeen, at=st.just(0.0), faces=st.integers(1, 2)),
        st.builds(FaceGone, at=st.just(0.0)),
        st.builds(
            Recognised,
            at=st.just(0.0),
            person_id=st.sampled_from(["a", "b"]),
            first_name=st.just("N"),
            refusal=st.sampled_from([None, None, "open_rental"]),
            slot=st.one_of(st.none(), slots),
        ),
        st.builds(NotRecognised, at=st.just(0.0), reason=st.just("unknown")),
        st.builds(Ejected, at=st.just(0.0), slot=slots, powerbank_id=st.just("PB")),
        st.builds(EjectFailed, at=st.just(0.0), slot=slots, reason=st.just("jammed")),
        st.builds(EjectUnconfirmed, at=st.just(0.0), slot=slots),
        st.builds(EjectUnsettled, at=st.just(0.0), slot=slots),
        st.builds(EjectAborted, at=st.just(0.0), slot=slots, reason=st.just("outbox_full")),
        st.builds(Taken, at=st.just(0.0), slot=slots),
        st.builds(NotTaken, at=st.just(0.0), slot=slots),
        st.builds(Returned, at=st.just(0.0), slot=slots, powerbank_id=st.just("PB")),
        st.builds(Service, at=st.just(0.0), reason=st.sampled_from([None, "maintenance"])),
        st.builds(Tick, at=st.just(0.0)),
        st.builds(ClaimAsked, at=st.just(0.0), tries_left=st.integers(0, 3)),
        st.builds(ClaimEntered, at=st.just(0.0), code=st.sampled_from(["1234", "9999"])),
        st.builds(
            ClaimChecked,
            at=st.just(0.0),
            person_id=st.sampled_from([None, None, "a"]),
            reason=st.sampled_from(["match", "claim not recognised", "no claim set", "no match"]),
            tries_left=st.integers(0, 2),
            first_name=st.just("N"),
            slot=st.one_of(st.none(), slots),
        ),
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(inputs(), st.floats(0.0, 40.0)), max_size=40))
def test_invariants_hold_for_any_sequence(steps: list[tuple[Input, float]]) -> None:
    flow = Flow()
    now = 0.0
    open_ejects: dict[int, str] = {}  # slot -> rental id ejected and not yet settled
    settled: set[str] = set()  # by an event, or handed over unsettled
    for event, gap in steps:
        now += gap
        event = type(event)(**{**event.__dict__, "at": now})
        was_out = flow.out_of_service is not None and flow.phase in (Phase.OUT_OF_SERVICE,)
        phase_before = flow.phase
        effects = flow.handle(event)
        for effect in effects:
            if isinstance(effect, VerifyClaim):
                assert isinstance(event, ClaimEntered) and phase_before == Phase.CLAIM
            if isinstance(effect, Eject):
                accepted = isinstance(event, Recognised) or (
                    isinstance(event, ClaimChecked)
                    and event.person_id is not None
                    and phase_before == Phase.CLAIM
                )
                assert accepted, "ejected without an accepted identity"
                assert not was_out, "ejected while out of service"
                assert effect.person_id == event.person_id  # type: ignore[union-attr]
                assert not open_ejects, "a second eject while one is unsettled"
                open_ejects[effect.slot] = effect.rental_id
            if isinstance(effect, Record) and effect.type in ("rental.started", "rental.failed"):
                data = effect.as_dict()
                rental_id, slot = str(data["rental_id"]), int(data["slot"])  # type: ignore[arg-type]
                assert open_ejects.get(slot) == rental_id, "a rental settled that was never ejected"
                assert rental_id not in settled, "a rental settled twice"
                settled.add(rental_id)
                del open_ejects[slot]
            if isinstance(effect, Unsettled):
                assert open_ejects.get(effect.slot) == effect.rental_id
                assert effect.rental_id not in settled, "handed over after it settled"
                settled.add(effect.rental_id)
                del open_ejects[effect.slot]
        if isinstance(event, EjectAborted) and flow.rental is None:
            assert not any(isinstance(effect, Record) for effect in effects)
            open_ejects.clear()  # never sent: nothing to settle
        if flow.phase not in (Phase.EJECTING, Phase.CONFIRMING, Phase.TAKE):
            assert not open_ejects, f"phase {flow.phase} left an eject unsettled"


# -- the claim step --------------------------------------------------------------------------


def asked(flow: Flow, at: float = 1.0, tries: int = 3) -> list[object]:
    return [*flow.handle(FaceSeen(at)), *flow.handle(ClaimAsked(at + 0.5, tries))]


def shown(effects: Sequence[object]) -> list[Show]:
    return [effect for effect in effects if isinstance(effect, Show)]


def test_a_claim_asked_shows_the_keypad_screen_with_the_tries_left() -> None:
    flow = Flow()
    effects = asked(flow)
    assert screens(effects) == ["checking", "claim"]
    assert shown(effects)[-1].screen.tries == 3 and flow.phase == Phase.CLAIM


def test_a_typed_code_is_verified_and_an_accepted_claim_ejects() -> None:
    flow = Flow()
    asked(flow)
    effects = flow.handle(ClaimEntered(3.0, "1234"))
    assert screens(effects) == ["claim_checking"]
    assert [e for e in effects if isinstance(e, VerifyClaim)] == [VerifyClaim("1234")]
    assert "1234" not in repr(effects) and "1234" not in repr(ClaimEntered(3.0, "1234"))
    assert flow.handle(ClaimEntered(3.1, "5555")) == []  # one check at a time
    checked = ClaimChecked(3.4, "p-asha", "match", 3, "Asha", None, 4)
    effects = flow.handle(checked, rental_id="R1")
    assert screens(effects) == ["ejecting"]
    assert [e for e in effects if isinstance(e, Eject)] == [Eject(4, "R1", "p-asha")]


def test_an_accepted_claim_goes_through_eligibility_like_a_face() -> None:
    flow = Flow()
    asked(flow)
    flow.handle(ClaimEntered(3.0, "1234"))
    effects = flow.handle(ClaimChecked(3.4, "p-asha", "match", 3, "Asha", "open_rental", None))
    assert screens(effects) == ["not_eligible"] and not any(isinstance(e, Eject) for e in effects)


def test_a_wrong_code_asks_again_then_locks() -> None:
    flow = Flow()
    asked(flow)
    flow.handle(ClaimEntered(3.0, "1111"))
    effects = flow.handle(ClaimChecked(3.4, None, "claim not recognised", 2))
    assert [(s.screen.key, s.screen.detail, s.screen.tries) for s in shown(effects)] == [
        ("claim", "wrong", 2)
    ]
    assert not records(effects)
    flow.handle(ClaimEntered(4.0, "2222"))
    flow.handle(ClaimChecked(4.4, None, "no match", 1))
    flow.handle(ClaimEntered(5.0, "3333"))
    effects = flow.handle(ClaimChecked(5.4, None, "claim locked", 0))
    assert screens(effects) == ["claim_locked"] and flow.phase == Phase.RESULT
    assert [r.as_dict()["reason"] for r in records(effects)] == ["claim locked"]
    assert flow.handle(ClaimEntered(5.6, "4444")) == []  # nothing is checked while locked


def test_a_locked_face_is_told_at_once() -> None:
    flow = Flow()
    assert screens(asked(flow, tries=0)) == ["checking", "claim_locked"]


def test_no_claim_set_tells_the_rider_to_set_one() -> None:
    flow = Flow()
    asked(flow)
    flow.handle(ClaimEntered(3.0, "1234"))
    effects = flow.handle(ClaimChecked(3.4, None, "no claim set", 3))
    assert screens(effects) == ["no_claim"]
    assert [r.as_dict()["reason"] for r in records(effects)] == ["no claim set"]
    assert flow.handle(Tick(3.4 + Timeouts().result_s)) == []  # read while the rider stays
    assert screens(flow.handle(FaceGone(3.5 + Timeouts().result_s))) == ["idle"]


def test_other_outcomes_are_not_recognised() -> None:
    flow = Flow()
    asked(flow)
    flow.handle(ClaimEntered(3.0, "1234"))
    effects = flow.handle(ClaimChecked(3.4, None, "claim expired", 0))
    assert screens(effects) == ["not_recognised"]


def test_the_claim_times_out_to_a_result_while_the_rider_stays() -> None:
    flow = Flow()
    asked(flow)
    assert flow.handle(Tick(1.5 + Timeouts().claim_s - 0.1)) == []
    effects = flow.handle(Tick(1.5 + Timeouts().claim_s))
    assert screens(effects) == ["not_recognised"]
    assert [r.as_dict()["reason"] for r in records(effects)] == ["claim required"]


def test_walking_away_cancels_but_looking_down_does_not() -> None:
    flow = Flow()
    asked(flow)
    flow.handle(FaceGone(2.0))
    flow.handle(FaceSeen(3.0))  # back after looking at the keypad
    assert flow.handle(Tick(2.0 + Timeouts().claim_gone_s + 1)) == []
    flow.handle(FaceGone(7.0))
    assert flow.handle(Tick(7.0 + Timeouts().claim_gone_s - 0.1)) == []
    assert screens(flow.handle(Tick(7.0 + Timeouts().claim_gone_s))) == ["idle"]


def test_a_stale_check_or_code_outside_the_claim_step_does_nothing() -> None:
    flow = Flow()
    assert flow.handle(ClaimEntered(1.0, "1234")) == []
    assert flow.handle(ClaimChecked(1.0, "p-asha", "match", 3, "Asha", None, 4)) == []
    asked(flow)
    assert flow.handle(ClaimChecked(2.0, "p-asha", "match", 3, "Asha", None, 4)) == []  # unasked
    assert flow.phase == Phase.CLAIM


def test_service_ends_the_claim_step() -> None:
    flow = Flow()
    asked(flow)
    assert screens(flow.handle(Service(2.0, "maintenance"))) == ["out_of_service"]


def test_a_face_certain_after_all_rents_without_the_code() -> None:
    flow = Flow()
    asked(flow)
    effects = flow.handle(asha(2.0), rental_id="R1")
    assert screens(effects) == ["ejecting"]


def test_boarding_accepts_a_verified_claim() -> None:
    flow = Flow(mode="boarding")
    asked(flow)
    flow.handle(ClaimEntered(3.0, "1234"))
    effects = flow.handle(ClaimChecked(3.4, "p-asha", "match", 3, "Asha"))
    assert screens(effects) == ["boarded"]
    assert [r.type for r in records(effects)] == ["boarding.recorded"]


def test_the_claim_screen_counts_down_and_not_me_ends_it() -> None:
    flow = Flow(timeouts=Timeouts(claim_s=25.0))
    effects = asked(flow)
    assert shown(effects)[-1].screen.seconds == 25
    effects = flow.handle(ClaimCancelled(3.0))
    assert screens(effects) == ["claim_cancelled"] and flow.phase == Phase.RESULT
    assert [r.as_dict()["reason"] for r in records(effects)] == ["claim cancelled"]
    assert flow.handle(ClaimCancelled(3.5)) == []  # not on the claim screen any more


def test_not_me_while_the_code_is_checked_waits_for_the_check() -> None:
    flow = Flow()
    asked(flow)
    flow.handle(ClaimEntered(3.0, "1234"))
    assert flow.handle(ClaimCancelled(3.1)) == []


def test_every_quality_hint_reaches_the_checking_screen_as_its_key() -> None:
    # the vision's own issues, not a hand list: each hint arrives as the key the page looks up
    for issue in ALL_ISSUES:
        flow = Flow()
        (show,) = shown(flow.handle(FaceSeen(0.0, hint=issue.hint)))
        assert show.screen == Screen("checking", detail=issue.hint.value)
        assert issue.hint in set(Hint)


def test_a_face_that_stays_in_view_never_brings_the_idle_screen_back() -> None:
    """A still rider: no decision for long, a refusal read and left on screen; idle only
    once the face has gone."""
    flow = Flow()
    shown_keys = screens(flow.handle(FaceSeen(0.0, hint="blink")))
    at = 0.0
    while at < 40:
        at += 0.5
        shown_keys += screens(flow.handle(Tick(at)))
        if at == 8.0:
            shown_keys += screens(flow.handle(NotRecognised(at, "liveness not confirmed")))
        if at == 20.0:
            shown_keys += screens(flow.handle(FaceSeen(at, hint="look_and_blink")))
    assert shown_keys == ["checking", "not_recognised"]
    assert screens(flow.handle(FaceGone(41.0))) == ["idle"]


def refused(effects: Sequence[object]) -> list[dict[str, str | int | float | None]]:
    return [r.as_dict() for r in records(effects) if r.type == "rider.refused"]


@pytest.mark.parametrize("mode", ["rental", "boarding"])
def test_a_refused_rider_is_recorded_once_then_counted_within_the_window(mode: str) -> None:
    flow = Flow(mode=mode)  # type: ignore[arg-type]
    window = flow.timeouts.refusal_window_s
    effects = flow.handle(asha(1.0, refusal="blocked"))
    assert screens(effects) == ["not_eligible"]
    assert all(s.screen.name is None for s in shown(effects))  # the page is told no name
    assert refused(effects) == [{"person_id": "p-asha", "reason": "blocked", "count": 1}]
    at = 1.0
    for _ in range(3):  # the rider walks off and comes back, refused each time
        at += 7.0
        flow.handle(FaceGone(at - 1.0))
        flow.handle(Tick(at - 0.5))
        assert refused(flow.handle(asha(at, refusal="blocked"))) == []
    assert refused(flow.handle(Tick(1.0 + window - 0.1))) == []
    assert refused(flow.handle(Tick(1.0 + window))) == [
        {"person_id": "p-asha", "reason": "blocked", "count": 3}
    ]
    assert refused(flow.handle(Tick(1.0 + 2 * window))) == []
    # another reason is its own count; a stop records what is counted
    effects = flow.handle(asha(2 * window, refusal="expired"))
    assert [r["reason"] for r in refused(effects)] == ["expired"]
    flow.handle(FaceGone(2 * window + 1))
    flow.handle(Tick(2 * window + 7))
    flow.handle(asha(2 * window + 8, refusal="expired"))
    assert [r.as_dict()["count"] for r in flow.drain() if isinstance(r, Record)] == [1]
    assert flow.drain() == []


def test_no_charged_powerbank_is_a_refusal_too() -> None:
    flow = Flow()
    effects = flow.handle(asha(1.0, slot=None))
    assert screens(effects) == ["no_powerbank"]
    assert refused(effects) == [{"person_id": "p-asha", "reason": "no_powerbank", "count": 1}]


def test_a_late_answer_about_an_eject_the_flow_gave_up_on_never_moves_the_next_rental() -> None:
    flow = Flow()
    flow.handle(FaceSeen(1.0))
    flow.handle(asha(1.1), rental_id="R1")
    flow.handle(EjectUnconfirmed(2.0, 4, "R1"))
    assert Unsettled(4, "R1") in flow.handle(EjectUnsettled(3.0, 4, "R1"))  # rider let go
    flow.handle(Tick(3.0 + Timeouts().result_s))
    flow.handle(FaceSeen(20.0))
    bob = Recognised(at=20.1, person_id="p-bob", first_name="Bob", slot=4)
    assert Eject(4, "R2", "p-bob") in flow.handle(bob, rental_id="R2")
    # the board's late answers about R1 arrive while R2's eject is under way
    assert flow.handle(EjectFailed(20.5, 4, "jammed", "R1")) == []
    assert flow.handle(Ejected(20.6, 4, "PB-OLD", "R1")) == []
    assert flow.handle(Taken(20.7, 4, "R1")) == []
    assert flow.phase == Phase.EJECTING
    assert screens(flow.handle(Ejected(21.0, 4, "PB-9", "R2"))) == ["take"]
    started = records(flow.handle(Taken(22.0, 4)))  # the board's notification names no rental
    assert [r.as_dict()["rental_id"] for r in started] == ["R2"]
    assert started[0].as_dict()["powerbank_id"] == "PB-9"
