"""The cloud API as tests meet it: a real uvicorn server on a free port, in this process
(a thread) or as a ``kiosk-cloud serve`` subprocess, on a real SQLite file or a fresh
PostgreSQL database of its own; and kiosks with real keys and real outboxes.
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.batching import BatchLimits
from cloud_sync.client import CloudClient
from cloud_sync.daemon import SyncDaemon
from cloud_sync.outbox import Outbox
from cloud_sync.server.app import Service, create_app
from cloud_sync.server.config import CloudSettings
from cloud_sync.signing import new_nonce, public_key_text, sign_request
from tests.conftest import free_port, need
from tests.helpers import BIN

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_TOKEN = "test-admin-token"
#: The consent text riders enrolled by tests agree to, and their consent record.
CONSENT_TEXT = {"version": "test-1", "text": "I agree to my face templates being kept."}
CONSENT = {
    "version": "test-1",
    "given_at": "2026-01-01T00:00:00Z",
    "channel": "desk",
    "taken_by": "test-operator",
}


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    need(postgres_available(), "PostgreSQL on 127.0.0.1:5432")
    name = f"kiosk_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Cloud:
    """A running cloud API and an admin's view of it."""

    url: str
    settings: CloudSettings
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.http.request(method, self.url + path, headers=headers, **kwargs)

    def accept_consent_text(self) -> None:
        """Make ``CONSENT_TEXT`` known (no change when it is)."""
        response = self.admin("POST", "/v1/admin/consent-texts", json=CONSENT_TEXT)
        assert response.status_code in (200, 201), response.text

    def register(self, kiosk_id: str, key: Ed25519PrivateKey) -> None:
        response = self.admin(
            "POST",
            "/v1/admin/kiosks",
            json={"kiosk_id": kiosk_id, "public_key": public_key_text(key)},
        )
        assert response.status_code == 200, response.text

    def events(self, kiosk_id: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            params: dict[str, Any] = {"after_seq": after, "limit": 1000}
            if kiosk_id:
                params["kiosk_id"] = kiosk_id
            page = self.admin("GET", "/v1/admin/events", params=params).json()
            if not page:
                return found
            found.extend(page)
            if kiosk_id is None:  # pages by seq only make sense per kiosk
                return found
            after = page[-1]["seq"]

    def signed(
        self,
        kiosk_id: str,
        key: Ed25519PrivateKey,
        body: bytes,
        path: str = "/v1/events:batch",
        method: str = "POST",
        headers: dict[str, str] | None = None,
        nonce: str | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        signature = sign_request(
            key,
            kiosk_id,
            method,
            path,
            body,
            int(time.time()) if timestamp is None else timestamp,
            nonce or new_nonce(),
        )
        all_headers = {"Content-Type": "application/json", **signature, **(headers or {})}
        return self.http.request(method, self.url + path, content=body, headers=all_headers)

    def service(self) -> Service:
        assert self.server is not None
        app: Any = self.server.config.app
        service: Service = app.state.service
        return service

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)
        self.http.close()


@contextmanager
def table_refuses(url: str, table: str, column: str, test: str) -> Iterator[None]:
    """Make ``table`` of the cloud's database at ``url`` refuse every new row whose
    ``column`` passes ``test`` (SQL such as ``IN ('a', 'b')`` or ``LIKE '%x%'``), as a check
    constraint no parse-time rule knows about, or a full disk for that one row, would: a
    trigger on SQLite, a CHECK constraint on PostgreSQL; removed after."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            db.execute(
                f"CREATE TRIGGER refuse_rows BEFORE INSERT ON {table} WHEN NEW.{column} {test} "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        try:
            yield
        finally:
            with sqlite3.connect(path) as db:
                db.execute("DROP TRIGGER refuse_rows")
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT refuse_rows CHECK (NOT ({column} {test}))"
        )
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT refuse_rows")


Gate = TypeVar("Gate")


@contextmanager
def sqlite_cloud(database: Path, wrap: Callable[[Any], Any] | None = None) -> Iterator[Cloud]:
    """The cloud API on the SQLite file ``database`` (``wrap`` as for ``start_cloud``),
    stopped after."""
    cloud = start_cloud(f"sqlite:///{database}", wrap=wrap)
    try:
        yield cloud
    finally:
        cloud.stop()


@contextmanager
def gated_cloud(database: Path, gate: Callable[[Any], Gate]) -> Iterator[tuple[Cloud, Gate]]:
    """The cloud API on a SQLite file with ``gate(app)`` in front of it (an ASGI app that
    rewrites, holds or poisons what the real one answers), and that gate; stopped after."""
    gates: list[Gate] = []

    def wrap(inner: Any) -> Gate:
        gates.append(gate(inner))
        return gates[0]

    with sqlite_cloud(database, wrap) as cloud:
        yield cloud, gates[0]


def start_cloud(
    database_url: str,
    port: int | None = None,
    wrap: Callable[[Any], Any] | None = None,
    **overrides: Any,
) -> Cloud:
    """The real cloud app under uvicorn; ``wrap`` puts an ASGI middleware of the test's in
    front of it (it must offer the app's ``state``)."""
    settings = CloudSettings(
        database_url=database_url, admin_token=ADMIN_TOKEN, pool_size=4, **overrides
    )
    port = port or free_port()
    app: Any = create_app(settings)
    config = uvicorn.Config(
        wrap(app) if wrap is not None else app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the cloud API did not start")
        time.sleep(0.02)
    return Cloud(f"http://127.0.0.1:{port}", settings, server, thread)


def at_once(cloud: Cloud, requests: list[tuple[str, str, str, Any]]) -> list[httpx.Response]:
    """``(token, method, path, json body)`` each sent on its own connection, opened first,
    and all released together: requests that race on the server."""
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[str, str, str, Any]) -> httpx.Response:
        token, method, path, body = request
        with httpx.Client(timeout=30) as client:
            client.get(cloud.url + "/healthz")
            barrier.wait()
            headers = {"Authorization": f"Bearer {token}"}
            return client.request(method, cloud.url + path, json=body, headers=headers)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def empty_database(url: str) -> None:
    """Delete every row (the schema stays): a clean cloud without a new server."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            tables = [
                row[0]
                for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if row[0] != "schema_migrations"
            ]
            for table in tables:
                db.execute(f'DELETE FROM "{table}"')
        return
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_migrations'"
            )
        ]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables))


# -- the cloud as a subprocess --------------------------------------------------------------


class CloudProcess:
    """``kiosk-cloud serve`` in a subprocess, which a test may SIGKILL and start again."""

    def __init__(
        self,
        database_url: str,
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        open_files: int | None = None,
    ) -> None:
        """``env``: more ``KIOSK_CLOUD_*`` settings; ``open_files``: the process's open-file
        limit (``ulimit -n``), as a small systemd or container default would give it."""
        self.database_url = database_url
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.env = env or {}
        self.open_files = open_files
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
        env.update(
            KIOSK_CLOUD_DATABASE_URL=self.database_url,
            KIOSK_CLOUD_ADMIN_TOKEN=ADMIN_TOKEN,
            KIOSK_CLOUD_PORT=str(self.port),
            KIOSK_CLOUD_LOG_LEVEL="warning",
            **self.env,
        )
        command = [str(BIN / "kiosk-cloud"), "serve"]
        if self.open_files is not None:
            command = ["bash", "-c", f'ulimit -n {self.open_files} && exec "$@"', "-", *command]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=out)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiosk-cloud serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("kiosk-cloud serve did not become ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


# -- kiosks -----------------------------------------------------------------------------------


@dataclass
class Kiosk:
    kiosk_id: str
    key: Ed25519PrivateKey
    outbox: Outbox

    def daemon(self, cloud_url: str, max_events: int = 100, **kwargs: Any) -> SyncDaemon:
        client = CloudClient(cloud_url, self.kiosk_id, self.key, timeout_s=5)
        limits = BatchLimits(max_events, 1024 * 1024, kwargs.pop("live_share", 0.5))
        return SyncDaemon(self.outbox, client, limits, **kwargs)

    def rent(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            self.outbox.append(
                "rental.started",
                rental_id=f"r-{self.kiosk_id}-{i}",
                person_id=f"p{i % 7}",
                slot=1 + i % 8,
                powerbank_id=f"pb-{self.kiosk_id}-{i}",
                request_id=f"q{i}",
            )


def make_kiosk(tmp_path: Path, kiosk_id: str = "kiosk-a") -> Kiosk:
    key = Ed25519PrivateKey.generate()
    return Kiosk(kiosk_id, key, Outbox(tmp_path / f"{kiosk_id}.sqlite", kiosk_id))
