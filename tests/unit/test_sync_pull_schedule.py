"""The pulls' own schedule: due at start, on its interval and when wanted; after a failure
a jittered backoff of at least 1 s, within the interval when asked, never sooner than the
cloud's Retry-After (capped by the policy)."""

from __future__ import annotations

from cloud_sync.backoff import BackoffPolicy
from cloud_sync.pull_schedule import PullSchedule

POLICY = BackoffPolicy(base_s=2, cap_s=60, retry_after_cap_s=600)


def test_a_new_schedule_is_due_at_once_then_after_its_interval() -> None:
    schedule = PullSchedule(POLICY)
    assert schedule.is_due(now=0.0)
    assert schedule.finished(now=100.0, interval_s=10, failed=False, rand=0.5) == 10
    assert not schedule.is_due(105.0) and schedule.seconds_left(105.0) == 5
    assert schedule.is_due(110.0)


def test_a_wanted_pull_is_due_whatever_the_time_until_it_starts() -> None:
    schedule = PullSchedule(POLICY)
    schedule.finished(0.0, 300, failed=False, rand=0.5)
    schedule.want()
    assert schedule.is_due(1.0) and schedule.seconds_left(1.0) == 0
    schedule.started()
    assert not schedule.is_due(1.0) and schedule.seconds_left(1.0) == 299


def test_failures_back_off_with_jitter_at_least_one_second_and_reset_on_success() -> None:
    schedule = PullSchedule(POLICY)
    waits = [schedule.finished(0.0, 300, failed=True, rand=0.5) for _ in range(5)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]  # half of 2, 4, 8, 16, 32; 1 s at least
    assert schedule.finished(0.0, 300, failed=True, rand=0.0) == 1.0
    assert schedule.finished(0.0, 300, failed=False, rand=0.5) == 300
    assert schedule.finished(0.0, 300, failed=True, rand=0.5) == 1.0  # counted afresh


def test_a_failure_may_be_retried_within_the_interval() -> None:
    capped = PullSchedule(POLICY, retry_within_interval=True)
    free = PullSchedule(POLICY)
    for _ in range(6):
        assert capped.finished(0.0, 20, failed=True, rand=0.99) <= 20
        free.finished(0.0, 20, failed=True, rand=0.99)
    assert free.finished(0.0, 20, failed=True, rand=0.99) > 20


def test_retry_after_wins_over_the_jitter_and_the_interval_up_to_the_policys_cap() -> None:
    schedule = PullSchedule(POLICY, retry_within_interval=True)
    assert schedule.finished(0.0, 20, failed=True, rand=0.1, retry_after=45) == 45
    assert not schedule.is_due(44.0) and schedule.is_due(45.0)
    assert schedule.finished(0.0, 20, failed=True, rand=0.1, retry_after=86400) == 600
    assert schedule.finished(0.0, 20, failed=False, rand=0.1, retry_after=45) == 20
