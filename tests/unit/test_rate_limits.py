"""The pure parts of the cloud's rate limits: sources, bucket names, Retry-After, and the
defaults against the fastest schedule a kiosk can be set to."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_sync.config import SyncConfig
from cloud_sync.server.config import CloudSettings
from cloud_sync.server.ratelimit import (
    RatePolicy,
    bucket,
    failure_buckets,
    limited_responses,
    retry_after_s,
    source_of,
)


@pytest.mark.parametrize(
    ("host", "source"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("testclient", "testclient"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_a_peer_counts_as_its_address_and_ipv6_by_its_64(host: str | None, source: str) -> None:
    assert source_of(host) == source


@pytest.mark.parametrize("subject", ["kiosk-a", "\x00", "\ud800lone", "é" * 10_000, ""])
def test_a_bucket_name_is_short_hex_whatever_it_counts(subject: str) -> None:
    name = bucket("fail:admin:source", subject)
    kind, digest = name.rsplit(":", 1)
    assert kind == "fail:admin:source" and len(digest) == 40
    assert all(c in "0123456789abcdef" for c in digest)


def test_a_missing_credential_counts_against_the_source_only() -> None:
    assert len(failure_buckets("admin", "10.0.0.1", "")) == 1
    assert len(failure_buckets("admin", "10.0.0.1", None)) == 1
    both = failure_buckets("kiosk", "10.0.0.1", "kiosk-a")
    assert len(set(both)) == 2
    assert failure_buckets("admin", "10.0.0.1", None) != failure_buckets("kiosk", "10.0.0.1", None)


@pytest.mark.parametrize(
    ("until", "now", "seconds"), [(10_000, 0, 10), (10_001, 0, 11), (5, 0, 1), (0, 9_000, 1)]
)
def test_retry_after_is_whole_seconds_and_at_least_one(until: int, now: int, seconds: int) -> None:
    assert retry_after_s(until, now) == seconds


def _fastest(field: str) -> float:
    info = SyncConfig.model_fields[field]
    bound: Any = next(m for m in info.metadata if hasattr(m, "ge"))
    return float(bound.ge)


def test_the_default_limits_leave_room_for_the_fastest_kiosk_schedule() -> None:
    policy = RatePolicy.from_settings(CloudSettings())
    window = policy.requests["pull"].window_s
    closed_fetches = window / _fastest("interval_s")  # one fetch per interval at most
    roster_pulls = window / _fastest("roster_interval_s")
    assert closed_fetches + roster_pulls <= policy.requests["pull"].limit
    passes = window / _fastest("interval_s")  # a steady kiosk: one batch per pass
    assert passes <= policy.requests["batch"].limit


def test_the_429_is_documented_with_its_retry_after() -> None:
    responses = limited_responses(401)
    assert set(responses) == {401, 429}
    assert "Retry-After" in responses[429]["headers"]
