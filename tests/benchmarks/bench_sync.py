"""Store-and-forward sync: durable outbox appends, draining a backlog into the local cloud
API, and ingest throughput on SQLite and PostgreSQL with batches of 100 and 500.

The cloud API runs as ``kiosk-cloud serve`` in its own process (as in production); the
outbox and the sync daemon run in this one. Targets (issue 6): appends >= 2,000/s,
drain >= 5,000 events/s, ingest >= 10,000 events/s on one API process.

    .venv/bin/python -m tests.benchmarks.bench_sync      (KIOSK_BENCH_QUICK=1: small sizes)
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ulid import ULID

from cloud_sync.batching import BatchLimits
from cloud_sync.client import CloudClient
from cloud_sync.daemon import SyncDaemon
from cloud_sync.outbox import Outbox
from cloud_sync.signing import new_nonce, public_key_text, sign_request
from tests.benchmarks.common import quick, report

BIN = Path(sys.executable).parent
ADMIN = "bench-admin-token"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def cloud_process(database_url: str, folder: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env.update(
        KIOSK_CLOUD_DATABASE_URL=database_url,
        KIOSK_CLOUD_ADMIN_TOKEN=ADMIN,
        KIOSK_CLOUD_PORT=str(port),
        KIOSK_CLOUD_LOG_LEVEL="warning",
    )
    log = (folder / f"cloud-{port}.log").open("wb")
    proc = subprocess.Popen([str(BIN / "kiosk-cloud"), "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kiosk-cloud serve did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        log.close()


@contextmanager
def pg_database() -> Iterator[str | None]:
    name = f"kiosk_bench_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        yield None
        return
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def register(url: str, kiosk_id: str, key: Ed25519PrivateKey) -> None:
    response = httpx.post(
        url + "/v1/admin/kiosks",
        json={"kiosk_id": kiosk_id, "public_key": public_key_text(key)},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    response.raise_for_status()


def rental(i: int) -> dict[str, Any]:
    return {
        "rental_id": f"r{i}",
        "person_id": f"p{i % 97}",
        "slot": 1 + i % 8,
        "powerbank_id": f"pb{i}",
        "request_id": f"q{i}",
    }


def bench_appends(folder: Path, count: int, rounds: int = 3) -> dict[str, Any]:
    """Median of ``rounds`` runs: each append is one fsync'd commit, so disk noise shows."""
    rates = []
    for round_no in range(rounds):
        outbox = Outbox(folder / f"appends-{round_no}.sqlite", "kiosk-bench")
        started = time.perf_counter()
        for i in range(count):
            outbox.append("rental.started", **rental(i))
        rates.append(count / (time.perf_counter() - started))
        outbox.close()
    rates.sort()
    return {
        "case": f"durable outbox append (money, synchronous=FULL, 1 event per commit), "
        f"median of {rounds} (min {rates[0]:,.0f}, max {rates[-1]:,.0f})",
        "events": count,
        "seconds": round(count / rates[len(rates) // 2], 3),
        "events_per_s": round(rates[len(rates) // 2]),
        "target": 2000,
    }


def bench_drain(folder: Path, count: int) -> dict[str, Any]:
    outbox = Outbox(folder / "backlog.sqlite", "kiosk-bench")
    for start in range(0, count, 5000):
        with outbox.transaction() as tx:
            for i in range(start, min(count, start + 5000)):
                tx.append("rental.started", **rental(i))
    key = Ed25519PrivateKey.generate()
    with cloud_process(f"sqlite:///{folder / 'drain-cloud.sqlite'}", folder) as url:
        register(url, "kiosk-bench", key)
        client = CloudClient(url, "kiosk-bench", key, timeout_s=60)
        daemon = SyncDaemon(outbox, client, BatchLimits(500, 1024 * 1024))
        started = time.perf_counter()
        result = daemon.sync_once()
        seconds = time.perf_counter() - started
        client.close()
    assert result.error is None and result.accepted == count, result
    outbox.close()
    return {
        "case": "backlog drain: outbox -> daemon -> API (SQLite), batches of 500, gzip",
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_s": round(count / seconds),
        "target": 5000,
    }


def bench_ingest(
    database_url: str, label: str, batch_size: int, count: int, folder: Path
) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    kiosk_id = f"kiosk-{batch_size}"
    now = datetime.now(UTC).isoformat()
    bodies = []
    for start in range(0, count, batch_size):
        events = [
            {
                "id": str(ULID()),
                "kiosk_id": kiosk_id,
                "seq": seq + 1,
                "type": "rental.started",
                "occurred_at": now,
                "schema": 1,
                "payload": rental(seq),
            }
            for seq in range(start, min(count, start + batch_size))
        ]
        raw = json.dumps({"kiosk_id": kiosk_id, "batch_id": str(ULID()), "events": events})
        bodies.append(gzip.compress(raw.encode(), compresslevel=5))
    with cloud_process(database_url, folder) as url:
        register(url, kiosk_id, key)
        with httpx.Client(base_url=url, timeout=60) as http:
            started = time.perf_counter()
            for body in bodies:
                headers = sign_request(
                    key, kiosk_id, "POST", "/v1/events:batch", body, int(time.time()), new_nonce()
                )
                headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip"})
                response = http.post("/v1/events:batch", content=body, headers=headers)
                assert response.status_code == 200, response.text
            seconds = time.perf_counter() - started
    return {
        "case": f"ingest on {label}, batches of {batch_size}",
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_s": round(count / seconds),
        "target": 10000,
    }


def main() -> None:
    appends = 300 if quick() else 3000
    backlog = 5_000 if quick() else 100_000
    ingest = 2_000 if quick() else 20_000
    folder = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    rows: list[dict[str, Any]] = []
    notes: dict[str, Any] = {}
    try:
        rows.append(bench_appends(folder, appends))
        rows.append(bench_drain(folder, backlog))
        for batch_size in (100, 500):
            sqlite_url = f"sqlite:///{folder / f'ingest-{batch_size}.sqlite'}"
            rows.append(bench_ingest(sqlite_url, "SQLite", batch_size, ingest, folder))
        for batch_size in (100, 500):
            with pg_database() as pg_url:
                if pg_url is None:
                    notes["postgresql"] = "not reachable at 127.0.0.1:5432: rows skipped"
                    break
                rows.append(bench_ingest(pg_url, "PostgreSQL", batch_size, ingest, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    notes["setup"] = "API as a kiosk-cloud serve subprocess on loopback; one client; 2-core machine"
    report("sync", rows, notes)


if __name__ == "__main__":
    main()
