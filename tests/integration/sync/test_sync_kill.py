"""Crash safety with real processes: ``kiosk sync run`` and ``kiosk-cloud serve`` are
SIGKILLed mid-batch and mid-commit, again and again, and restarted; in the end every
event is stored exactly once. And two API processes share one PostgreSQL database."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ulid import ULID

from cloud_sync.outbox import Outbox
from cloud_sync.server.migrations import MIGRATIONS
from cloud_sync.signing import kiosk_key, new_nonce, sign_request
from tests.conftest import free_port
from tests.helpers import BIN
from tests.integration.sync.cloudkit import ADMIN_TOKEN, CloudProcess, fresh_pg_database

ROUNDS = 6


class DaemonProcess:
    def __init__(self, state_dir: Path, cloud_url: str, log: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
        self.env.update(
            KIOSK_KIOSK__ID="kiosk-k",
            KIOSK_KIOSK__STATE_DIR=str(state_dir),
            KIOSK_SYNC__CLOUD_URL=cloud_url,
            KIOSK_SYNC__INTERVAL_S="0.5",
            KIOSK_SYNC__BATCH_MAX_EVENTS="40",
            KIOSK_SYNC__BACKOFF_BASE_S="0.05",
            KIOSK_SYNC__BACKOFF_MAX_S="1",
            KIOSK_SYNC__TIMEOUT_S="3",
            KIOSK_LOG__LEVEL="warning",
        )
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "kiosk"), "sync", "run"], env=self.env, stdout=out, stderr=out
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def stored_events(cloud: CloudProcess) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    found: list[dict[str, object]] = []
    after = 0
    while True:
        page = httpx.get(
            f"{cloud.url}/v1/admin/events",
            params={"kiosk_id": "kiosk-k", "after_seq": after, "limit": 1000},
            headers=headers,
            timeout=10,
        ).json()
        if not page:
            return found
        found.extend(page)
        after = int(page[-1]["seq"])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_loop_loses_nothing_and_stores_nothing_twice(tmp_path: Path, backend: str) -> None:
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
        kill_loop(tmp_path, database_url)
    else:
        with fresh_pg_database() as database_url:
            kill_loop(tmp_path, database_url)


def kill_loop(tmp_path: Path, database_url: str) -> None:
    state = tmp_path / "kiosk"
    key = kiosk_key(state)  # what `kiosk sync run` will load
    cloud = CloudProcess(database_url, free_port(), tmp_path / "cloud.log")
    cloud.start()
    from cloud_sync.signing import public_key_text

    response = httpx.post(
        f"{cloud.url}/v1/admin/kiosks",
        json={"kiosk_id": "kiosk-k", "public_key": public_key_text(key)},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    outbox = Outbox(state / "outbox.sqlite", "kiosk-k")
    daemon = DaemonProcess(state, cloud.url, tmp_path / "daemon.log")
    daemon.start()
    rng = random.Random(6)  # fixed: the same schedule every run
    total = 0
    kills = {"daemon": 0, "cloud": 0}
    try:
        for round_no in range(ROUNDS):
            for _ in range(200):
                outbox.append(
                    "rental.started",
                    rental_id=f"r{total}",
                    person_id="p",
                    slot=1 + total % 8,
                    powerbank_id=f"pb{total}",
                    request_id=f"q{total}",
                )
                total += 1
            time.sleep(rng.uniform(0.15, 0.5))  # batches are in flight now
            victim = "cloud" if round_no % 2 else "daemon"
            kills[victim] += 1
            if victim == "daemon":
                daemon.kill()
                daemon.start()
            else:
                cloud.kill()
                cloud.start(wait=False)
                time.sleep(rng.uniform(0.0, 0.3))
                cloud.wait_ready()
        deadline = time.monotonic() + 60
        while outbox.count("pending"):
            assert time.monotonic() < deadline, outbox.stats()
            time.sleep(0.1)
        events = stored_events(cloud)
    finally:
        daemon.stop()
        cloud.stop()
        outbox.close()
    ids = [str(e["id"]) for e in events]
    assert len(ids) == total, f"{total - len(ids)} events lost"
    assert len(set(ids)) == total, "an event was stored twice"
    assert [e["seq"] for e in events] == list(range(1, total + 1))
    assert outbox.path.exists()
    assert kills == {"daemon": ROUNDS // 2, "cloud": ROUNDS // 2}


def test_two_api_processes_share_one_postgresql(tmp_path: Path) -> None:
    with fresh_pg_database() as database_url:
        port_a, port_b = free_port(), free_port()
        servers = [
            CloudProcess(database_url, port_a, tmp_path / "a.log"),
            CloudProcess(database_url, port_b, tmp_path / "b.log"),
        ]
        for server in servers:  # both migrate the empty database at the same moment
            server.start(wait=False)
        try:
            for server in servers:
                server.wait_ready()
            two_replicas(servers)
        finally:
            for server in servers:
                server.stop()
        with psycopg.connect(database_url) as conn:
            versions = conn.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            ).fetchall()
        # each migration applied once, not twice
        assert versions == [(version,) for version, _, _ in MIGRATIONS]


def two_replicas(servers: list[CloudProcess]) -> None:
    from cloud_sync.signing import public_key_text

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    keys = {f"kiosk-{n}": Ed25519PrivateKey.generate() for n in "abc"}
    for kiosk_id, key in keys.items():
        registration = {"kiosk_id": kiosk_id, "public_key": public_key_text(key)}
        assert httpx.post(
            f"{servers[0].url}/v1/admin/kiosks", json=registration, headers=admin
        ).is_success

    def signed(kiosk_id: str, body: bytes, nonce: str | None = None) -> dict[str, str]:
        headers = sign_request(
            keys[kiosk_id],
            kiosk_id,
            "POST",
            "/v1/events:batch",
            body,
            int(time.time()),
            nonce or new_nonce(),
        )
        return {"Content-Type": "application/json", **headers}

    def batch(kiosk_id: str, first: int, count: int) -> bytes:
        events = [
            {
                "id": str(ULID()),
                "kiosk_id": kiosk_id,
                "seq": seq,
                "type": "rental.started",
                "occurred_at": "2026-01-01T00:00:00+00:00",
                "schema": 1,
                "payload": {
                    "rental_id": f"r{seq}",
                    "person_id": "p",
                    "slot": 1,
                    "powerbank_id": f"{kiosk_id}-pb{seq}",
                    "request_id": "q",
                },
            }
            for seq in range(first, first + count)
        ]
        return json.dumps(
            {"kiosk_id": kiosk_id, "batch_id": str(ULID()), "events": events}
        ).encode()

    # Every batch is sent to both replicas at the same time: each event is stored once.
    results: list[dict[str, list[str]]] = []
    lock = threading.Lock()

    def send(server: CloudProcess, kiosk_id: str, body: bytes) -> None:
        with httpx.Client(timeout=30) as client:
            response = client.post(
                f"{server.url}/v1/events:batch", content=body, headers=signed(kiosk_id, body)
            )
        assert response.status_code == 200, response.text
        with lock:
            results.append(response.json())

    threads = []
    for kiosk_id in keys:
        for start in range(1, 401, 100):
            body = batch(kiosk_id, start, 100)
            threads += [threading.Thread(target=send, args=(s, kiosk_id, body)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [i for r in results for i in r["accepted"]]
    duplicate = [i for r in results for i in r["duplicate"]]
    assert len(accepted) == len(set(accepted)) == 3 * 400
    assert sorted(duplicate) == sorted(accepted)
    for kiosk_id in keys:
        events = httpx.get(
            f"{servers[1].url}/v1/admin/events",
            params={"kiosk_id": kiosk_id, "limit": 1000},
            headers=admin,
        ).json()
        assert [e["seq"] for e in events] == list(range(1, 401))
    # A signed request replayed to the other replica is refused there.
    body = batch("kiosk-a", 401, 1)
    nonce = new_nonce()
    first = httpx.post(
        f"{servers[0].url}/v1/events:batch", content=body, headers=signed("kiosk-a", body, nonce)
    )
    replay = httpx.post(
        f"{servers[1].url}/v1/events:batch", content=body, headers=signed("kiosk-a", body, nonce)
    )
    assert first.status_code == 200 and replay.status_code == 401
    assert replay.json()["error"] == "replayed"
