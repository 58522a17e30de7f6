"""Battery health judged from the slots' status: pure values, no board, no clock."""

from __future__ import annotations

from edge.cabinet.battery import BatteryLimits, Flag, Progress, judge
from edge.cabinet.slots import Slot, SlotState, choose_slot

LIMITS = BatteryLimits(hot_battery_c=50, charge_stall_s=600)


def docked(number: int, charge: int, temperature: int = 25) -> Slot:
    state = SlotState.READY if charge >= 80 else SlotState.CHARGING
    return Slot(number, state, f"PB{number}", charge, temperature)


def test_a_hot_battery_is_flagged_at_once_and_a_cool_one_is_not() -> None:
    found = judge([docked(1, 95, 50), docked(2, 95, 49)], {}, {}, LIMITS, 0.0, "t")
    assert [(f.powerbank_id, f.reason) for f in found.new] == [("PB1", "hot")]


def test_no_charge_gained_for_the_stall_time_flags_it_and_a_gain_restarts_the_count() -> None:
    progress: dict[str, Progress] = {}
    for now, charge in ((0, 60), (300, 60), (599, 60)):
        verdict = judge([docked(1, charge)], progress, {}, LIMITS, now, "t")
        assert verdict.new == []
        progress = verdict.progress
    gained = judge([docked(1, 61)], progress, {}, LIMITS, 599, "t")
    assert gained.new == [] and gained.progress["PB1"] == Progress(61, 599)
    late = judge([docked(1, 61)], gained.progress, {}, LIMITS, 1199, "t")
    assert [f.reason for f in late.new] == ["not_charging"]


def test_a_full_or_faulted_battery_is_not_expected_to_charge() -> None:
    full = Slot(1, SlotState.READY, "PB1", 100, 25)
    faulted = Slot(2, SlotState.FAULT, "PB2", 40, 25, fault="slot_fault")
    progress: dict[str, Progress] = {}
    for now in (0, 700, 1400):
        verdict = judge([full, faulted], progress, {}, LIMITS, now, "t")
        assert verdict.new == []
        progress = verdict.progress


def test_a_flag_ends_when_its_powerbank_leaves_and_is_not_raised_twice() -> None:
    flag = Flag("PB1", 1, "hot", "61 C", "t")
    still = judge([docked(1, 90, 61)], {}, {"PB1": flag}, LIMITS, 0, "t")
    assert still.new == [] and still.gone == []
    left = judge([Slot(1)], {}, {"PB1": flag}, LIMITS, 0, "t")
    assert left.gone == ["PB1"]


def test_the_cabinet_never_chooses_a_flagged_powerbank() -> None:
    slots = [docked(1, 100, 61), docked(2, 90), docked(3, 85)]
    assert choose_slot(slots, 80) == 1
    assert choose_slot(slots, 80, skip={"PB1"}) == 2
    assert choose_slot(slots, 80, skip={"PB1", "PB2", "PB3"}) is None
