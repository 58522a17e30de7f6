"""Lockouts and per-kiosk limits of the cloud API, on real uvicorn servers over SQLite and
PostgreSQL: wrong credentials lock their source and the credential out with 429 and
Retry-After (for every replica), a locked-out source is refused even with the right
credential, the lockout ends, and a kiosk past its request limit is told when to come back,
which the real sync daemon honours."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ulid import ULID

from cloud_sync.backoff import BackoffPolicy
from cloud_sync.server.db import open_database
from cloud_sync.server.migrations import migrate
from cloud_sync.server.ratelimit import RateLimiter, RatePolicy, Rule
from cloud_sync.signing import public_key_text
from tests.conftest import free_port
from tests.integration.sync.cloudkit import (
    ADMIN_TOKEN,
    Cloud,
    CloudProcess,
    make_kiosk,
    start_cloud,
)

WRONG_KEY = Ed25519PrivateKey.generate()


def problem(response: httpx.Response, code: str) -> int:
    """The Retry-After of a 429 with error ``code`` in the usual error body."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == code and body["reason"] and body["request_id"]
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return int(retry_after)


def admin_as(cloud: Cloud, token: str, source: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if source:
        headers["X-Forwarded-For"] = source
    return cloud.http.get(cloud.url + "/v1/admin/kiosks", headers=headers)


def provision(cloud: Cloud, token: str, source: str, kiosk_id: str = "kiosk-new") -> httpx.Response:
    body = {"token": token, "kiosk_id": kiosk_id, "public_key": public_key_text(WRONG_KEY)}
    return cloud.http.post(
        cloud.url + "/v1/provision", json=body, headers={"X-Forwarded-For": source}
    )


def one_batch(kiosk_id: str, seq: int) -> bytes:
    event = {
        "id": str(ULID()),
        "kiosk_id": kiosk_id,
        "seq": seq,
        "type": "kiosk.started",
        "occurred_at": "2026-01-02T03:04:05+00:00",
        "schema": 1,
        "payload": {"version": "1.0", "mode": "rental"},
    }
    return json.dumps({"kiosk_id": kiosk_id, "batch_id": str(ULID()), "events": [event]}).encode()


def later(cloud: Cloud, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the server's rate-limit clock ``seconds`` ahead (nothing else changes)."""
    limiter = cloud.service().limiter
    monkeypatch.setattr(limiter, "clock", lambda: time.time() + seconds)


# -- lockouts ------------------------------------------------------------------------------------


def test_wrong_admin_tokens_lock_the_source_out_even_for_the_right_token(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = cloud.settings.auth_max_failures
    answers = [admin_as(cloud, f"guess-{n}").status_code for n in range(limit)]
    assert answers == [401] * limit
    wait = problem(admin_as(cloud, "guess-again"), "locked_out")
    assert wait <= cloud.settings.auth_lockout_s
    problem(admin_as(cloud, ADMIN_TOKEN), "locked_out")  # the right token, same source
    assert admin_as(cloud, ADMIN_TOKEN, source="198.51.100.7").status_code == 200
    later(cloud, monkeypatch, cloud.settings.auth_lockout_s + 1)
    assert admin_as(cloud, ADMIN_TOKEN).status_code == 200  # the lockout is over
    assert admin_as(cloud, "guess-after").status_code == 401  # and counting starts afresh


def test_guessed_provisioning_tokens_lock_out_and_a_real_token_is_not_spent(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = cloud.settings.auth_max_failures
    guesses = [
        provision(cloud, f"kpt_guess{n:04d}", "203.0.113.5").status_code for n in range(limit)
    ]
    assert guesses == [401] * limit
    token = cloud.admin("POST", "/v1/admin/provisioning-tokens", json={}).json()["token"]
    problem(provision(cloud, token, "203.0.113.5"), "locked_out")
    assert cloud.admin("GET", "/v1/admin/kiosks").json() == []  # refused unread, unspent
    later(cloud, monkeypatch, cloud.settings.auth_lockout_s + 1)
    done = provision(cloud, token, "203.0.113.5")
    assert done.status_code == 201, done.text


def test_one_token_tried_from_many_addresses_is_locked_out(cloud: Cloud) -> None:
    limit = cloud.settings.auth_max_failures
    for n in range(limit):
        assert provision(cloud, "kpt_stolen-guess", f"192.0.2.{n + 1}").status_code == 401
    problem(provision(cloud, "kpt_stolen-guess", "192.0.2.200"), "locked_out")
    assert provision(cloud, "kpt_other-guess", "192.0.2.201").status_code == 401


def test_an_ipv6_attacker_counts_as_one_source_per_64(cloud: Cloud) -> None:
    limit = cloud.settings.auth_max_failures
    for n in range(limit):
        assert admin_as(cloud, f"guess-{n}", source=f"2001:db8:1:2::{n + 1:x}").status_code == 401
    problem(admin_as(cloud, ADMIN_TOKEN, source="2001:db8:1:2:ffff::9"), "locked_out")
    assert admin_as(cloud, ADMIN_TOKEN, source="2001:db8:1:3::1").status_code == 200


def test_wrong_kiosk_signatures_lock_out_the_source_and_the_kiosk_id(cloud: Cloud) -> None:
    key = Ed25519PrivateKey.generate()
    cloud.register("kiosk-a", key)
    limit = cloud.settings.kiosk_auth_max_failures
    for seq in range(1, limit + 1):  # signed with a key that is not kiosk-a's
        wrong = cloud.signed("kiosk-a", WRONG_KEY, one_batch("kiosk-a", seq))
        assert wrong.status_code == (401 if seq < limit else 429), wrong.text
    right = cloud.signed("kiosk-a", key, one_batch("kiosk-a", 1))
    problem(right, "locked_out")  # the right key, from the locked-out source
    other = {"X-Forwarded-For": "198.51.100.20"}
    forged = cloud.signed("kiosk-a", WRONG_KEY, one_batch("kiosk-a", 1), headers=other)
    problem(forged, "locked_out")  # the kiosk id is locked out for wrong signatures anywhere
    assert cloud.events("kiosk-a") == []
    # ...but a stranger's forgeries never lock the real kiosk out: its own signature passes
    fine = cloud.signed("kiosk-a", key, one_batch("kiosk-a", 1), headers=other)
    assert fine.status_code == 200, fine.text
    assert len(cloud.events("kiosk-a")) == 1


def test_the_lockout_is_answered_before_the_route_does_anything(cloud: Cloud) -> None:
    for n in range(cloud.settings.auth_max_failures):
        admin_as(cloud, f"guess-{n}")
    locked = cloud.http.post(
        cloud.url + "/v1/admin/provisioning-tokens",
        json={},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    problem(locked, "locked_out")
    assert "token" not in locked.json()


# -- across replicas -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def two_replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Cloud, Cloud]]:
    """Two API processes' worth of apps (two uvicorn servers) on one database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
    first = start_cloud(url)
    second = start_cloud(url)
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_wrong_tokens_split_between_replicas_still_lock_out(
    two_replicas: tuple[Cloud, Cloud],
) -> None:
    first, second = two_replicas
    limit = first.settings.auth_max_failures
    for n in range(limit):
        replica = (first, second)[n % 2]
        assert admin_as(replica, f"guess-{n}").status_code == 401
    problem(admin_as(first, ADMIN_TOKEN), "locked_out")
    problem(admin_as(second, ADMIN_TOKEN), "locked_out")


def test_a_kiosks_limit_holds_across_replicas(tmp_path: Path, pg_url: str) -> None:
    first = start_cloud(pg_url, kiosk_batch_limit=4)
    second = start_cloud(pg_url, kiosk_batch_limit=4)
    try:
        key = Ed25519PrivateKey.generate()
        first.register("kiosk-a", key)
        for seq in range(1, 5):
            replica = (first, second)[seq % 2]
            sent = replica.signed("kiosk-a", key, one_batch("kiosk-a", seq))
            assert sent.status_code == 200, sent.text
        wait = problem(second.signed("kiosk-a", key, one_batch("kiosk-a", 5)), "rate_limited")
        assert wait <= first.settings.kiosk_rate_window_s
        assert [e["seq"] for e in first.events("kiosk-a")] == [1, 2, 3, 4]
    finally:
        first.stop()
        second.stop()


# -- per-kiosk request limits ------------------------------------------------------------------------


def limited_cloud(folder: Path, window_s: int) -> Cloud:
    return start_cloud(
        f"sqlite:///{folder / 'cloud.sqlite'}",
        kiosk_batch_limit=2,
        kiosk_pull_limit=2,
        kiosk_rate_window_s=window_s,
    )


@pytest.fixture
def tight_cloud(tmp_path: Path) -> Iterator[Cloud]:
    """Two requests of each kind per 30 s: a loaded machine's third comes well inside."""
    running = limited_cloud(tmp_path, 30)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def quick_cloud(tmp_path: Path) -> Iterator[Cloud]:
    """Two requests of each kind per 2 s: a daemon that waits its Retry-After gets through."""
    running = limited_cloud(tmp_path, 2)
    try:
        yield running
    finally:
        running.stop()


def test_batches_past_a_kiosks_limit_get_429_and_store_nothing(tight_cloud: Cloud) -> None:
    key = Ed25519PrivateKey.generate()
    tight_cloud.register("kiosk-a", key)
    for seq in (1, 2):
        assert tight_cloud.signed("kiosk-a", key, one_batch("kiosk-a", seq)).status_code == 200
    wait = problem(tight_cloud.signed("kiosk-a", key, one_batch("kiosk-a", 3)), "rate_limited")
    assert wait <= 30
    assert [e["seq"] for e in tight_cloud.events("kiosk-a")] == [1, 2]
    tight_cloud.register("kiosk-b", key)  # another kiosk has its own limit
    assert tight_cloud.signed("kiosk-b", key, one_batch("kiosk-b", 1)).status_code == 200


def test_roster_and_closed_rental_fetches_share_a_limit(tight_cloud: Cloud) -> None:
    key = Ed25519PrivateKey.generate()
    tight_cloud.register("kiosk-a", key)
    closed = tight_cloud.signed(
        "kiosk-a", key, b"", path="/v1/rentals:closed?since=0", method="GET"
    )
    assert closed.status_code == 200, closed.text
    roster = tight_cloud.signed("kiosk-a", key, b"", path="/v1/roster?since=0", method="GET")
    assert roster.status_code == 409  # no box key: past the limit check, refused by the route
    again = tight_cloud.signed("kiosk-a", key, b"", path="/v1/roster?since=0", method="GET")
    problem(again, "rate_limited")
    batch = tight_cloud.signed("kiosk-a", key, one_batch("kiosk-a", 1))
    assert batch.status_code == 200  # batches count apart


def test_the_daemon_waits_retry_after_and_then_delivers(quick_cloud: Cloud, tmp_path: Path) -> None:
    kiosk = make_kiosk(tmp_path)
    quick_cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(5)
    daemon = kiosk.daemon(quick_cloud.url, max_events=1, backoff=BackoffPolicy(base_s=0.01))
    waits: list[float] = []
    asked: list[float | None] = []
    real_sleep = daemon._backoff_sleep

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        real_sleep(seconds)

    real_pass = daemon.sync_once

    def one_pass() -> Any:
        result = real_pass()
        asked.append(getattr(result.failure, "retry_after", None))
        return result

    daemon._backoff_sleep = sleep  # type: ignore[method-assign]
    daemon.sync_once = one_pass  # type: ignore[method-assign]
    daemon.sync_with_retry()
    assert kiosk.outbox.count("pending") == 0
    assert len(quick_cloud.events(kiosk.kiosk_id)) == 5
    refused = [seconds for seconds in asked if seconds is not None]
    assert refused, "the cloud never answered 429: the test proves nothing"
    assert len(waits) == len(refused)
    for wait, retry_after in zip(waits, refused, strict=True):
        assert wait >= retry_after >= 1


def test_the_closed_rentals_fetch_backs_off_for_retry_after(
    tight_cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_kiosk(tmp_path)
    tight_cloud.register(kiosk.kiosk_id, kiosk.key)
    daemon = kiosk.daemon(tight_cloud.url, close_rentals=len)
    assert daemon.pull_closed().error is None
    assert daemon.pull_closed().error is None
    refused = daemon.pull_closed()
    assert refused.error is not None and "429" in refused.error
    assert refused.retry_after is not None and refused.retry_after >= 1
    assert daemon._closed_schedule.seconds_left(time.monotonic()) >= refused.retry_after - 0.5


# -- the shipped server ------------------------------------------------------------------------


def test_kiosk_cloud_serve_ignores_forwarded_for_unless_told(tmp_path: Path) -> None:
    server = CloudProcess(f"sqlite:///{tmp_path / 'cloud.sqlite'}", free_port(), tmp_path / "log")
    server.start()
    try:
        answers = []
        with httpx.Client(timeout=10) as http:
            for n in range(11):  # a fresh X-Forwarded-For each time does not make a new source
                answers.append(
                    http.get(
                        server.url + "/v1/admin/kiosks",
                        headers={"Authorization": f"Bearer g{n}", "X-Forwarded-For": f"10.9.0.{n}"},
                    ).status_code
                )
        assert answers == [401] * 10 + [429]
    finally:
        server.stop()


# -- the store -----------------------------------------------------------------------------------


def test_old_rows_are_pruned_and_a_lockout_outlives_its_window(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'cloud.sqlite'}")
    migrate(database)
    now = [1_000_000.0]
    rule = Rule(2, 60.0, 600.0)
    policy = RatePolicy(
        {"admin": rule, "provision": rule, "kiosk": rule}, {"batch": rule, "pull": rule}
    )
    limiter = RateLimiter(database, policy, clock=lambda: now[0])
    try:
        limiter.failed("admin", "10.0.0.1", "token-a")
        limiter.failed("admin", "10.0.0.1", "token-b")  # the source reaches 2: locked
        with pytest.raises(Exception, match="locked_out"):
            limiter.check("admin", "10.0.0.1", "token-c")
        limiter.hit("batch", "kiosk-a")
        now[0] += 120  # every window is over; the lockout is not
        assert limiter.prune() == 3  # both tokens and the kiosk's counter
        with pytest.raises(Exception, match="locked_out"):
            limiter.check("admin", "10.0.0.1", None)
        now[0] += 600
        assert limiter.prune() == 1
        limiter.check("admin", "10.0.0.1", "token-a")
        with database.transaction() as tx:
            assert tx.rows("SELECT COUNT(*) FROM rate_limits") == [(0,)]
    finally:
        database.close()
