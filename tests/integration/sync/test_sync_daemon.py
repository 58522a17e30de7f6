"""The sync daemon against a real cloud API (and a mock transport for odd answers):
live first, quarantine and move on, back off while the cloud is away, drain in order."""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_sync.backoff import BackoffPolicy
from cloud_sync.batching import BatchLimits
from cloud_sync.client import CloudClient
from cloud_sync.daemon import SyncDaemon
from cloud_sync.outbox import Outbox
from tests.conftest import free_port
from tests.integration.sync.cloudkit import Cloud, Kiosk, make_kiosk, start_cloud


@pytest.fixture
def kiosk(tmp_path: Path) -> Kiosk:
    return make_kiosk(tmp_path)


def test_a_pass_sends_everything_once(cloud: Cloud, kiosk: Kiosk) -> None:
    cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(250)
    result = kiosk.daemon(cloud.url, max_events=100).sync_once()
    assert (result.accepted, result.batches, result.error) == (250, 3, None)
    assert kiosk.outbox.count("pending") == 0
    # The acknowledgement was lost? Sending again reports duplicates, stores nothing twice.
    kiosk.outbox.connection.execute("UPDATE events SET state = 'pending'")
    again = kiosk.daemon(cloud.url, max_events=100).sync_once()
    assert (again.accepted, again.duplicate) == (0, 250)
    assert [e["seq"] for e in cloud.events(kiosk.kiosk_id)] == list(range(1, 251))


def test_rejected_events_are_quarantined_and_the_rest_go_through(
    cloud: Cloud, tmp_path: Path
) -> None:
    future = datetime.now(UTC) + timedelta(days=2)
    clock_now = [datetime.now(UTC)]
    kiosk = make_kiosk(tmp_path)
    kiosk.outbox = Outbox(tmp_path / "clock.sqlite", "kiosk-a", clock=lambda: clock_now[0])
    cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(3)
    clock_now[0] = future  # a kiosk clock gone wrong
    kiosk.rent(1, start=3)
    clock_now[0] = datetime.now(UTC)
    kiosk.rent(2, start=4)
    result = kiosk.daemon(cloud.url).sync_once()
    assert (result.accepted, result.quarantined, result.error) == (5, 1, None)
    ((seq, _id, _type, reason),) = kiosk.outbox.quarantined()
    assert seq == 4 and "in the future" in reason
    assert [e["seq"] for e in cloud.events("kiosk-a")] == [1, 2, 3, 5, 6]


def test_an_unregistered_kiosk_keeps_its_events_and_says_why(cloud: Cloud, kiosk: Kiosk) -> None:
    kiosk.rent(3)
    result = kiosk.daemon(cloud.url).sync_once()
    assert result.error is not None and "not registered" in result.error
    stats = kiosk.outbox.stats()
    assert stats.pending_total == 3 and stats.quarantined == 0
    assert stats.last_error is not None and "401" in stats.last_error


def test_the_cloud_down_then_back_drains_the_backlog_in_order(tmp_path: Path) -> None:
    kiosk = make_kiosk(tmp_path)
    kiosk.rent(1500)
    backdate = sqlite3.connect(kiosk.outbox.path)  # recorded an hour ago: a backlog
    with backdate:
        backdate.execute("UPDATE events SET created_at = created_at - 3600")
    backdate.close()
    port = free_port()
    daemon = kiosk.daemon(
        f"http://127.0.0.1:{port}",
        max_events=100,
        interval_s=0.2,
        live_window_s=60.0,  # the live events stay live however slowly the backlog drains
        backoff=BackoffPolicy(base_s=0.05, cap_s=0.3),
    )
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 10
    while kiosk.outbox.stats().last_error is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "cannot connect" in (kiosk.outbox.stats().last_error or "")
    cloud = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}", port=port)
    try:
        cloud.register(kiosk.kiosk_id, kiosk.key)
        kiosk.rent(5, start=1500)  # live events recorded while the backlog drains
        deadline = time.monotonic() + 30
        while kiosk.outbox.count("pending"):
            assert time.monotonic() < deadline, kiosk.outbox.stats()
            time.sleep(0.05)
        daemon.stop()
        runner.join(timeout=10)
        stored = cloud.events(kiosk.kiosk_id)
    finally:
        cloud.stop()
    assert [e["seq"] for e in stored] == list(range(1, 1506))
    arrival = [e["seq"] for e in sorted(stored, key=lambda e: (e["received_at"], e["seq"]))]
    backlog = [seq for seq in arrival if seq <= 1500]
    assert backlog == sorted(backlog), "the backlog arrives oldest first"
    live_position = arrival.index(1501)
    assert live_position < 1000, "live events do not wait behind the whole backlog"
    assert kiosk.outbox.stats().last_error is None


# -- odd answers, through a mock transport ----------------------------------------------------------


def mock_daemon(kiosk: Kiosk, handler: object, max_events: int = 10) -> SyncDaemon:
    client = CloudClient(
        "http://cloud.invalid",
        kiosk.kiosk_id,
        kiosk.key,
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )
    return SyncDaemon(
        kiosk.outbox,
        client,
        BatchLimits(max_events, 10**6),
        backoff=BackoffPolicy(base_s=0.01, cap_s=0.02),
    )


def batch_of(request: httpx.Request) -> dict[str, Any]:
    """The batch a mock transport was sent, gunzipped and parsed."""
    body = request.content
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    batch: dict[str, Any] = json.loads(body)
    return batch


def test_a_generic_400_is_narrowed_to_the_offending_event(kiosk: Kiosk) -> None:
    kiosk.rent(8)
    bad = kiosk.outbox.events()[5].id

    def handler(request: httpx.Request) -> httpx.Response:
        batch = batch_of(request)
        events = batch["events"]
        if any(e["id"] == bad for e in events):
            return httpx.Response(400, json={"error": "bad_thing", "reason": "no"})
        accepted = [e["id"] for e in events]
        return httpx.Response(200, json={"batch_id": batch["batch_id"], "accepted": accepted})

    result = mock_daemon(kiosk, handler).sync_once()
    assert (result.accepted, result.quarantined) == (7, 1)
    assert kiosk.outbox.quarantined()[0][1] == bad


def test_429_and_5xx_keep_the_events_and_honour_retry_after(kiosk: Kiosk) -> None:
    kiosk.rent(2)
    answers = iter(
        [
            httpx.Response(
                429, headers={"Retry-After": "0"}, json={"error": "slow", "reason": "down"}
            ),
            httpx.Response(503, text="<html>proxy</html>"),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers, None)
        if answer is not None:
            return answer
        batch = batch_of(request)
        accepted = [e["id"] for e in batch["events"]]
        return httpx.Response(200, json={"batch_id": batch["batch_id"], "accepted": accepted})

    daemon = mock_daemon(kiosk, handler)
    first = daemon.sync_once()
    assert first.error is not None and "429" in first.error
    assert first.failure is not None and first.failure.retry_after == 0  # type: ignore[union-attr]
    assert kiosk.outbox.count("pending") == 2
    result = daemon.sync_with_retry()  # 503, then success
    assert result.accepted == 2 and kiosk.outbox.count("pending") == 0


def test_an_answer_that_is_not_the_cloud_api_is_a_clear_error(kiosk: Kiosk) -> None:
    kiosk.rent(1)
    daemon = mock_daemon(
        kiosk, lambda request: httpx.Response(200, text="<html>captive portal</html>")
    )
    result = daemon.sync_once()
    assert result.error is not None and "not a batch response" in result.error
    assert kiosk.outbox.count("pending") == 1


def test_an_answer_that_acknowledges_nothing_does_not_spin(kiosk: Kiosk) -> None:
    kiosk.rent(3)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        batch_id = batch_of(request)["batch_id"]
        return httpx.Response(200, json={"batch_id": batch_id, "accepted": [], "duplicate": []})

    result = mock_daemon(kiosk, handler).sync_once()
    assert len(calls) == 1
    assert result.error is not None and "acknowledged none" in result.error
    assert kiosk.outbox.count("pending") == 3
