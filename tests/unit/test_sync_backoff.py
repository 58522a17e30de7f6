"""Backoff: exponential with full jitter, capped, never sooner than Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tenacity import Retrying, stop_after_attempt

from cloud_sync.backoff import BackoffPolicy, parse_retry_after, wait_full_jitter
from cloud_sync.errors import CloudUnavailableError

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_the_ceiling_doubles_then_stops_at_the_cap() -> None:
    policy = BackoffPolicy(base_s=1, cap_s=60)
    assert [policy.ceiling(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.ceiling(10_000) == 60


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    policy = BackoffPolicy(base_s=1, cap_s=60)
    assert policy.delay(4, rand=0.0) == 0.0
    assert policy.delay(4, rand=0.5) == 4.0
    assert policy.delay(4, rand=0.999) < 8.0


def test_retry_after_is_a_floor_and_is_capped() -> None:
    policy = BackoffPolicy(base_s=1, cap_s=60, retry_after_cap_s=120)
    assert policy.delay(1, rand=0.1, retry_after=30) == 30
    assert policy.delay(7, rand=0.9, retry_after=30) == pytest.approx(54)
    assert policy.delay(1, rand=0.1, retry_after=10**9) == 120
    assert policy.delay(1, rand=0.5, retry_after=-5) == 0.5


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Fri, 01 May 2026 12:01:30 GMT", 90.0),
        ("Fri, 01 May 2026 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_in_both_forms(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_the_tenacity_wait_reads_retry_after_from_the_failure() -> None:
    waits: list[float] = []
    failures = iter(
        [CloudUnavailableError("busy", 429, retry_after=9.0), CloudUnavailableError("down")]
    )

    def call() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "ok"

    retrying = Retrying(
        wait=wait_full_jitter(BackoffPolicy(base_s=1, cap_s=60), rand=lambda: 0.5),
        sleep=waits.append,
        stop=stop_after_attempt(5),
    )
    assert retrying(call) == "ok"
    assert waits == [9.0, 1.0]
