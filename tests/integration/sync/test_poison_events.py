"""One event the cloud cannot take never holds back the others (issue 16, defect 1b).

The real cloud API under uvicorn, behind a small ASGI gate that answers what a cloud with
an event it cannot store answers: ``503 unavailable`` (with ``Retry-After``) for every batch
holding that event, or a stall past the kiosk's timeout. The kiosk side is real: its outbox
file, ``kiosk sync now`` / ``status`` / ``requeue`` / ``events`` and the daemon.
A cloud that is down (503 for every batch, or nothing listening) must count against no
event, however many passes fail.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from cloud_sync.backoff import BackoffPolicy
from cloud_sync.batching import BatchLimits
from cloud_sync.client import CloudClient
from cloud_sync.daemon import SyncDaemon
from cloud_sync.errors import CloudUnavailableError
from cloud_sync.outbox import Outbox
from cloud_sync.signing import kiosk_key
from edge.cli.main import app as kiosk_app
from edge.cli.runner import run_app
from tests.conftest import free_port
from tests.helpers import run_cli
from tests.integration.ops.test_ops_cli import valid
from tests.integration.sync.cloudkit import Cloud, Kiosk, gated_cloud, make_kiosk

pytestmark = pytest.mark.timeout(120)

Scope = dict[str, Any]
BATCH_PATH = "/v1/events:batch"


class PoisonGate:
    """ASGI middleware in front of the real cloud app. A batch holding an id in ``poison``
    (or any batch while ``down``) is answered 503 ``unavailable`` with ``Retry-After: 2``,
    after ``stall_s`` seconds; everything else goes through untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.poison: set[str] = set()
        self.down = False
        self.stall_s = 0.0
        self.batches = 0  # batch requests seen

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != BATCH_PATH:
            await self.app(scope, receive, send)
            return
        messages = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.batches += 1
        if self.down or self._ids(scope, body) & self.poison:
            if self.stall_s:
                await asyncio.sleep(self.stall_s)
            await self._unavailable(send)
            return

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _ids(scope: Scope, body: bytes) -> set[str]:
        if (b"content-encoding", b"gzip") in scope["headers"]:
            body = gzip.decompress(body)
        return {event["id"] for event in json.loads(body)["events"]}

    @staticmethod
    async def _unavailable(send: Any) -> None:
        payload = json.dumps(
            {
                "error": "unavailable",
                "reason": "the database is unavailable; retry",
                "request_id": "01JTESTTESTTESTTESTTESTTES",
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", b"2"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[Cloud, PoisonGate]]:
    with gated_cloud(tmp_path / "cloud.sqlite", PoisonGate) as running:
        yield running


def rent(outbox: Outbox, name: str) -> str:
    event = outbox.append(
        "rental.started",
        rental_id=f"r-{name}",
        person_id="p1",
        slot=1,
        powerbank_id=f"pb-{name}",
        request_id=f"q-{name}",
    )
    assert event is not None
    return event.id


def kiosk_env(state: Path, cloud_url: str, quarantine_after: int = 2) -> dict[str, str]:
    return {
        "KIOSK_KIOSK__ID": "kiosk-cli",
        "KIOSK_KIOSK__STATE_DIR": str(state),
        "KIOSK_SYNC__CLOUD_URL": cloud_url,
        "KIOSK_SYNC__QUARANTINE_AFTER": str(quarantine_after),
    }


def kiosk(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> Any:
    """The real ``kiosk`` CLI in this process (a subprocess costs seconds to start)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def call(*args: str) -> tuple[int, str, str]:
        code = run_app(kiosk_app, "kiosk", ["--log-format", "json", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def stored_seqs(cloud: Cloud, kiosk_id: str) -> list[int]:
    return [event["seq"] for event in cloud.events(kiosk_id)]


# -- the defect as a technician meets it ------------------------------------------------------


def test_one_bad_event_ahead_of_fifty_no_longer_holds_them_back(
    gated: tuple[Cloud, PoisonGate],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cloud, gate = gated
    state = tmp_path / "kiosk"
    cloud.register("kiosk-cli", kiosk_key(state, "kiosk-ed25519.pem"))
    outbox = Outbox(state / "outbox.sqlite", "kiosk-cli")
    gate.poison.add(rent(outbox, "bad"))  # seq 1, ahead of 50 good ones
    for i in range(50):
        rent(outbox, str(i))
    outbox.close()
    env = kiosk_env(state, cloud.url, quarantine_after=2)

    # Before: exit 7, "0 events sent, 51 pending", every time. Now the 50 go through.
    first = run_cli("sync", "now", env=env)
    assert first.returncode == 7, first.stderr
    assert "sent 50 events" in first.stdout and "1 still pending" in first.stdout
    assert "failing alone #1 rental.started (failed alone 1 time so far)" in first.stdout
    assert "503 unavailable: the database is unavailable; retry" in first.stderr
    assert stored_seqs(cloud, "kiosk-cli") == list(range(2, 52))

    call = kiosk(capsys, monkeypatch, env)
    code, out, _ = call("sync", "status")
    assert code == 0
    assert "failing      1 (sent alone; quarantined after 2 failures alone)" in out
    assert "failing #1 rental.started: 1 of 2 failures, last: 503 unavailable" in out

    code, out, err = call("sync", "now", "--json")  # the second failure alone: quarantined
    assert code == 7
    summary = json.loads(out)
    assert (summary["accepted"], summary["quarantined"], summary["pending"]) == (0, 1, 0)
    (quarantined,) = summary["quarantined_events"]
    assert quarantined["seq"] == 1 and quarantined["reason"].startswith(
        "503 unavailable: the database is unavailable; retry (failed alone 2 times"
    )
    assert "1 quarantined" in err and "money events the cloud has no record of" in err

    code, out, _ = call("sync", "status")
    assert code == 0
    assert "quarantined  1 (1 money)" in out and "failing      0" in out
    assert "WARNING: 1 money events (rentals, returns, ejects) are quarantined" in out
    assert "quarantined #1 rental.started (money): 503 unavailable" in out
    code, out, _ = call("sync", "status", "--json")
    status = valid("sync-status", json.loads(out))
    assert (status["quarantined"], status["quarantined_money"], status["pending_total"]) == (
        1,
        1,
        0,
    )
    assert status["quarantined_examples"][0]["reason"].startswith("503 unavailable")
    code, out, _ = call("events", "tail", "-n", "100", "--json")
    listed = {event["seq"]: event for event in map(json.loads, out.splitlines())}
    assert listed[1]["state"] == "quarantined" and "503" in listed[1]["reason"]

    code, out, _ = call("sync", "now")  # nothing left to send: all is well again
    assert code == 0 and "0 quarantined, 0 still pending" in out

    gate.poison.clear()  # the cloud is fixed; the technician requeues
    code, out, _ = call("sync", "requeue")
    assert code == 0 and out.startswith("1 events back to pending")
    code, out, _ = call("sync", "now")
    assert code == 0, out
    assert stored_seqs(cloud, "kiosk-cli") == list(range(1, 52))


def test_the_running_daemon_delivers_the_rest_and_quarantines_the_bad_one_loudly(
    gated: tuple[Cloud, PoisonGate], tmp_path: Path
) -> None:
    cloud, gate = gated
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(10)
    gate.poison.add(kiosk.outbox.events()[3].id)
    kiosk.rent(20, start=10)
    daemon = kiosk.daemon(
        cloud.url,
        max_events=8,
        interval_s=0.2,
        quarantine_after=3,
        backoff=BackoffPolicy(base_s=0.05, cap_s=0.2, retry_after_cap_s=0.1),
    )
    with capture_logs() as logs:
        runner = threading.Thread(target=daemon.run, daemon=True)
        runner.start()
        try:
            deadline = time.monotonic() + 60
            while kiosk.outbox.stats().quarantined == 0:
                assert time.monotonic() < deadline, kiosk.outbox.stats()
                time.sleep(0.05)
            kiosk.rent(2, start=30)  # recorded after: they go through too
            while kiosk.outbox.count("pending"):
                assert time.monotonic() < deadline, kiosk.outbox.stats()
                time.sleep(0.05)
        finally:
            daemon.stop()
            runner.join(timeout=10)
    assert stored_seqs(cloud, kiosk.kiosk_id) == [s for s in range(1, 33) if s != 4]
    ((seq, _id, kind, reason),) = kiosk.outbox.quarantined()
    assert (seq, kind) == (4, "rental.started")
    assert reason.startswith("503 unavailable: the database is unavailable; retry")
    assert "failed alone 3 times" in reason
    loud = [entry for entry in logs if entry["event"] == "outbox.quarantined_money"]
    assert loud and loud[0]["log_level"] == "error" and loud[0]["seq"] == 4


def test_a_batch_that_stalls_past_the_timeout_is_narrowed_too(
    gated: tuple[Cloud, PoisonGate], tmp_path: Path
) -> None:
    cloud, gate = gated
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(6)
    gate.poison.add(kiosk.outbox.events()[4].id)
    # the kiosk gives up after 1.5 s: a read timeout mid-batch; the innocent halves, answered
    # at once, never come near it even on a loaded machine
    gate.stall_s = 3.0
    client = CloudClient(cloud.url, kiosk.kiosk_id, kiosk.key, timeout_s=1.5)
    daemon = SyncDaemon(kiosk.outbox, client, BatchLimits(10, 10**6), quarantine_after=1)
    result = daemon.sync_once()
    assert (result.accepted, result.quarantined, result.error) == (5, 1, None)
    assert stored_seqs(cloud, kiosk.kiosk_id) == [1, 2, 3, 4, 6]
    assert kiosk.outbox.quarantined()[0][3].startswith("timed out (ReadTimeout)")


# -- a cloud that is down blames no event -------------------------------------------------------


def outage_daemon(kiosk: Kiosk, url: str) -> SyncDaemon:
    return kiosk.daemon(url, max_events=4, quarantine_after=2)


@pytest.mark.parametrize("acknowledged_before", [0, 3], ids=["fresh", "with-sent-events"])
def test_503_for_every_batch_quarantines_nothing(
    gated: tuple[Cloud, PoisonGate], tmp_path: Path, acknowledged_before: int
) -> None:
    cloud, gate = gated
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(acknowledged_before)
    daemon = outage_daemon(kiosk, cloud.url)
    assert daemon.sync_once().error is None  # the kiosk has events the cloud acknowledged
    kiosk.rent(9, start=acknowledged_before)
    gate.down = True  # ingest answers 503 for everything (its /healthz still answers)
    for _ in range(6):  # three times quarantine_after
        before = gate.batches
        result = daemon.sync_once()
        assert result.error is not None and "503" in result.error
        assert gate.batches - before <= 3, "a down cloud gets at most three requests a pass"
    stats = kiosk.outbox.stats()
    assert (stats.pending_total, stats.quarantined, stats.failing) == (9, 0, 0)
    gate.down = False
    assert daemon.sync_once().error is None
    assert stored_seqs(cloud, kiosk.kiosk_id) == list(range(1, acknowledged_before + 10))


def test_a_single_pending_event_is_not_blamed_for_an_outage(
    gated: tuple[Cloud, PoisonGate], tmp_path: Path
) -> None:
    cloud, gate = gated
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(2)
    daemon = outage_daemon(kiosk, cloud.url)
    assert daemon.sync_once().error is None
    kiosk.rent(1, start=2)
    gate.down = True
    for _ in range(5):
        result = daemon.sync_once()
        assert result.error is not None
    assert (kiosk.outbox.count("pending"), kiosk.outbox.stats().failing) == (1, 0)
    assert kiosk.outbox.quarantined() == []


def test_nothing_listening_quarantines_nothing(tmp_path: Path) -> None:
    kiosk = make_kiosk(tmp_path)
    kiosk.rent(5)
    daemon = outage_daemon(kiosk, f"http://127.0.0.1:{free_port()}")
    for _ in range(5):
        assert "cannot connect" in (daemon.sync_once().error or "")
    stats = kiosk.outbox.stats()
    assert (stats.pending_total, stats.quarantined, stats.failing) == (5, 0, 0)


# -- which failures may be the content's ---------------------------------------------------------


def test_a_reset_mid_request_may_be_the_content_a_refused_connection_is_not(
    tmp_path: Path,
) -> None:
    kiosk = make_kiosk(tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up() -> None:  # reads the request, then closes without an answer
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)

    server = threading.Thread(target=hang_up, daemon=True)
    server.start()
    client = CloudClient(f"http://127.0.0.1:{port}", kiosk.kiosk_id, kiosk.key, timeout_s=5)
    with pytest.raises(CloudUnavailableError) as reset:
        client.post_batch(kiosk.kiosk_id, "01JTESTTESTTESTTESTTESTTES", ["{}"])
    server.join(timeout=5)
    listener.close()
    assert reset.value.reached, reset.value
    refused = CloudClient(f"http://127.0.0.1:{free_port()}", kiosk.kiosk_id, kiosk.key)
    with pytest.raises(CloudUnavailableError) as down:
        refused.post_batch(kiosk.kiosk_id, "01JTESTTESTTESTTESTTESTTES", ["{}"])
    assert not down.value.reached and "cannot connect" in str(down.value)
