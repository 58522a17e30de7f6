"""Choosing a batch: bounded by count and bytes, live events first, backlog never starved."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cloud_sync.batching import BatchLimits, Candidate, FailureStreak, halves, plan_batch
from cloud_sync.config import SyncConfig


def run(first: int, last: int, size: int = 100) -> list[Candidate]:
    return [Candidate(seq, size) for seq in range(first, last + 1)]


def test_live_events_go_ahead_of_a_long_backlog() -> None:
    backlog = run(1, 10)  # the oldest of 10,000 pending
    live = run(10_001, 10_003)  # just recorded
    batch = plan_batch(live, backlog, BatchLimits(max_events=10, max_bytes=10**6))
    assert {10_001, 10_002, 10_003} <= set(batch)
    assert batch == [1, 2, 3, 4, 5, 6, 7, 10_001, 10_002, 10_003]


def test_a_burst_of_live_events_leaves_room_for_the_backlog() -> None:
    batch = plan_batch(run(500, 600), run(1, 100), BatchLimits(10, 10**6, live_share=0.3))
    assert batch == [1, 2, 3, 4, 5, 6, 7, 500, 501, 502]


def test_without_a_backlog_live_events_fill_the_batch() -> None:
    live = run(1, 20)
    assert plan_batch(live, live, BatchLimits(10, 10**6)) == list(range(1, 11))


def test_the_byte_bound_holds() -> None:
    batch = plan_batch([], run(1, 100, size=300), BatchLimits(100, 1000))
    assert batch == [1, 2, 3]


def test_an_event_larger_than_the_bound_goes_alone() -> None:
    assert plan_batch([], [Candidate(1, 5000), Candidate(2, 10)], BatchLimits(10, 1000)) == [1]


def test_nothing_pending_is_an_empty_batch() -> None:
    assert plan_batch([], [], BatchLimits(10, 1000)) == []


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        BatchLimits(0, 100)
    with pytest.raises(ValueError):
        BatchLimits(10, 100, live_share=0)


sizes = st.integers(min_value=1, max_value=2000)


@given(
    st.lists(sizes, max_size=60),
    st.lists(sizes, max_size=60),
    st.integers(1, 50),
    st.integers(1, 20_000),
    st.floats(0.05, 1.0),
)
def test_any_plan_respects_the_limits(
    backlog_sizes: list[int], live_sizes: list[int], max_events: int, max_bytes: int, share: float
) -> None:
    backlog = [Candidate(i + 1, s) for i, s in enumerate(backlog_sizes)]
    live = [Candidate(1000 + i, s) for i, s in enumerate(live_sizes)]
    sizes_by_seq = {c.seq: c.size for c in backlog + live}
    batch = plan_batch(live, backlog, BatchLimits(max_events, max_bytes, share))
    assert batch == sorted(set(batch))
    assert set(batch) <= set(sizes_by_seq)
    if backlog or live:
        assert batch, "something pending always makes a batch"
    if len(batch) > 1:
        assert len(batch) <= max_events
        assert sum(sizes_by_seq[s] for s in batch) <= max_bytes
    chosen_backlog = [c.seq for c in backlog if c.seq in batch]
    assert chosen_backlog == [c.seq for c in backlog][: len(chosen_backlog)], "oldest first"


# -- narrowing a batch that fails --------------------------------------------------------------


def test_halves_keep_the_order_and_every_event() -> None:
    assert halves([1, 2, 3, 4, 5]) == [[1, 2], [3, 4, 5]]
    assert halves([7, 8]) == [[7], [8]]
    with pytest.raises(ValueError):
        halves([1])


@given(st.integers(min_value=2, max_value=600))
def test_narrowing_always_ends_at_single_events(size: int) -> None:
    pending: list[Sequence[int]] = [list(range(size))]
    singles = 0
    while pending:
        batch = pending.pop()
        if len(batch) == 1:
            singles += 1
            continue
        parts = halves(batch)
        assert [x for part in parts for x in part] == list(batch) and all(parts)
        pending.extend(parts)
    assert singles == size


def test_a_success_now_and_then_lets_narrowing_go_on() -> None:
    streak = FailureStreak()
    for _ in range(20):  # fail, fail, succeed: one bad event searched among good ones
        assert streak.failure(can_probe=False) == "go on"
        assert streak.failure(can_probe=False) == "go on"
        streak.success()


def test_failures_in_a_row_mean_the_cloud_is_down() -> None:
    without_probe = FailureStreak()
    assert [without_probe.failure(can_probe=False) for _ in range(3)] == [
        "go on",
        "go on",
        "stop",
    ]
    with_probe = FailureStreak()
    assert [with_probe.failure(can_probe=True) for _ in range(2)] == ["go on", "probe"]
    with_probe.success()  # the probe went through: the failures were the events' own
    assert with_probe.failure(can_probe=True) == "go on"


def test_quarantine_after_is_a_bounded_setting() -> None:
    assert SyncConfig().quarantine_after == 5
    for wrong in (0, 101):
        with pytest.raises(ValidationError, match="quarantine_after"):
            SyncConfig(quarantine_after=wrong)
