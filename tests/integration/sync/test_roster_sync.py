"""The roster from the cloud to the kiosk: a real API (uvicorn on a free port, SQLite and
PostgreSQL), real roster files on the kiosk, the sync daemon's pull.

A rider added in the cloud is matchable on the kiosk after its next pull; a rider deleted
there leaves no byte behind; a tampered, misdirected or gapped delta is refused (or
replaced by a snapshot) and the roster held stays whole; a data-key rotation re-seals the
rows in the cloud and leaves the kiosk with the new key only; "up to date" counts only
when the cloud signed it for this very request (a forged or replayed one is refused).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.backoff import BackoffPolicy
from cloud_sync.batching import BatchLimits
from cloud_sync.client import CloudClient
from cloud_sync.daemon import SyncDaemon
from cloud_sync.errors import SigningKeyError, StoreError
from cloud_sync.events import Event
from cloud_sync.roster_wire import build_current, sign_current
from cloud_sync.sealing import raw_public
from cloud_sync.server.config import CloudSettings
from cloud_sync.server.db import open_database
from cloud_sync.server.roster import CloudRoster, open_cloud_roster
from cloud_sync.server.roster_keys import RosterKeyFiles
from cloud_sync.signing import public_key_text
from edge.vault.files import read_pull_state
from edge.vault.keys import DeviceKeys, device_keys
from edge.vault.live import LiveRoster, open_roster
from edge.vault.store import RosterStore
from tests.integration.sync.cloudkit import (
    CONSENT,
    Cloud,
    Kiosk,
    make_kiosk,
)
from tests.vault_helpers import MODEL, template


@pytest.fixture
def cloud(roster_cloud: Cloud) -> Cloud:
    return roster_cloud


def cloud_roster(cloud: Cloud) -> CloudRoster:
    assert cloud.server is not None
    app: Any = cloud.server.config.app
    roster: CloudRoster = app.state.roster
    return roster


def add_rider(cloud: Cloud, person_id: str, seed: int, name: str = "", **extra: Any) -> int:
    body = {
        "person_id": person_id,
        "display_name": name or f"Name of {person_id}",
        "templates": [{"model": MODEL, "vector": template(seed).tolist()}],
        "consent": CONSENT,
        **extra,
    }
    cloud.accept_consent_text()
    response = cloud.admin("POST", "/v1/admin/riders", json=body)
    assert response.status_code == 201, response.text
    version: int = response.json()["roster_version"]
    return version


def delete_rider(cloud: Cloud, person_id: str) -> int:
    response = cloud.admin("DELETE", f"/v1/admin/riders/{person_id}")
    assert response.status_code == 200, response.text
    version: int = response.json()["roster_version"]
    return version


@dataclass
class RosterKiosk:
    """A kiosk as provisioned: signing key, outbox, box key, roster with the pinned key."""

    base: Kiosk
    keys: DeviceKeys
    store: RosterStore

    @property
    def kiosk_id(self) -> str:
        return self.base.kiosk_id

    def box_key(self) -> str:
        return base64.b64encode(raw_public(self.keys.box.public_key())).decode()

    def daemon(
        self, cloud: Cloud, transport: httpx.BaseTransport | None = None, **kwargs: Any
    ) -> SyncDaemon:
        client = CloudClient(cloud.url, self.kiosk_id, self.base.key, 5, transport=transport)
        return SyncDaemon(self.base.outbox, client, limits=_LIMITS, roster=self.store, **kwargs)

    def riders(self) -> list[str]:
        return sorted(self.store.load().riders)


_LIMITS = BatchLimits(100, 1024 * 1024, 0.5)


def make_roster_kiosk(
    tmp_path: Path, cloud: Cloud, kiosk_id: str = "kiosk-r", register: bool = True
) -> RosterKiosk:
    base = make_kiosk(tmp_path, kiosk_id)
    keys_dir = tmp_path / f"{kiosk_id}-keys"
    keys = device_keys(keys_dir, create=True)
    pinned = cloud.admin("GET", "/v1/admin/roster").json()["roster_public_key"]
    store = open_roster(tmp_path / f"{kiosk_id}-roster.sqlite", keys_dir, kiosk_id, pinned)
    kiosk = RosterKiosk(base, keys, store)
    if register:
        response = cloud.admin(
            "POST",
            "/v1/admin/kiosks",
            json={
                "kiosk_id": kiosk_id,
                "public_key": public_key_text(base.key),
                "box_public_key": kiosk.box_key(),
            },
        )
        assert response.status_code == 200, response.text
    return kiosk


def applied_events(kiosk: RosterKiosk) -> list[Event]:
    return [e for e in kiosk.base.outbox.events() if e.type == "roster.applied"]


def held_version(kiosk: RosterKiosk) -> int:
    """The version the roster file holds, read through its own connection (the daemon
    may be using the store's in another thread)."""
    state = read_pull_state(kiosk.store.path)
    return state.version if state is not None else 0


def wait_for_version(kiosk: RosterKiosk, version: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while held_version(kiosk) < version:
        assert time.monotonic() < deadline, f"the kiosk is at {held_version(kiosk)}, not {version}"
        time.sleep(0.02)


@contextmanager
def running(daemon: SyncDaemon) -> Iterator[None]:
    """``daemon.run`` in a thread for the block; stopped, and checked to end, after it."""
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        daemon.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def disk_bytes(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


class Proxy(httpx.BaseTransport):
    """Forwards to the real API and lets a test rewrite roster answers on the way back."""

    def __init__(self, rewrite: Callable[[httpx.Request, bytes], bytes | None]) -> None:
        self._inner = httpx.HTTPTransport()
        self._rewrite = rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        content = response.read()
        if request.url.path != "/v1/roster" or response.status_code != 200:
            return httpx.Response(response.status_code, headers=response.headers, content=content)
        changed = self._rewrite(request, content)
        headers = {"Content-Type": "application/json"}
        return httpx.Response(200, headers=headers, content=content if changed is None else changed)


# -- the tests ------------------------------------------------------------------------------


def test_a_rider_added_in_the_cloud_is_matchable_on_the_kiosk_after_a_pull(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    live = LiveRoster(kiosk.store)
    assert len(live.snapshot.gallery) == 0
    add_rider(cloud, "ann", 1, name="Ann Quixotic-Zephyr", max_open_rentals=2)
    version = add_rider(cloud, "bob", 2, may_rent=False)

    pulled = kiosk.daemon(cloud).pull_roster()
    assert (pulled.error, pulled.full, pulled.to_version, pulled.upserts) == (
        None,
        True,
        version,
        2,
    )
    snapshot = live.reload()
    assert snapshot.version == version
    assert sorted(set(snapshot.gallery.person_ids)) == ["ann", "bob"]
    assert snapshot.gallery.decide(template(1), 0.5, 0.05).person_id == "ann"
    assert snapshot.riders["ann"].display_name == "Ann Quixotic-Zephyr"
    assert snapshot.riders["ann"].entitlements.max_open_rentals == 2
    assert snapshot.riders["bob"].entitlements.may_rent is False
    ((event),) = applied_events(kiosk)
    assert (event.payload.from_version, event.payload.to_version) == (0, version)  # type: ignore[union-attr]

    # Up to date: a signed statement, nothing applied, nothing recorded.
    again = kiosk.daemon(cloud).pull_roster()
    assert (again.error, again.changed, again.to_version) == (None, False, version)
    assert len(applied_events(kiosk)) == 1
    state = read_pull_state(kiosk.store.path)
    assert state is not None and state.error is None and state.checked_at is not None

    # A later change arrives as a delta, not a snapshot.
    add_rider(cloud, "cyd", 3)
    delta = kiosk.daemon(cloud).pull_roster()
    assert (delta.full, delta.upserts, delta.from_version) == (False, 1, version)
    assert kiosk.riders() == ["ann", "bob", "cyd"]


def test_the_cloud_database_holds_nothing_personal_in_clear(cloud: Cloud) -> None:
    add_rider(cloud, "ann", 11, name="Ottoline Wraxall")
    raw_template = template(11).tobytes()
    url = cloud.settings.database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        raw = disk_bytes(path)
        assert b"Ottoline" not in raw and raw_template[:16] not in raw
    with _connect(url) as rows:
        stored = rows("SELECT person_id, key_id, models, sealed FROM roster_riders")
    ((person_id, _key, models, sealed),) = stored
    assert (person_id, models) == ("ann", MODEL)
    opened = base64.b64decode(sealed)
    assert b"Ottoline" not in opened and raw_template[:16] not in opened
    listed = cloud.admin("GET", "/v1/admin/riders").json()
    assert listed[0]["display_name"] == "Ottoline Wraxall"
    assert listed[0]["templates"] == {MODEL: 1} and "vector" not in json.dumps(listed)


def test_a_rider_deleted_in_the_cloud_leaves_the_kiosk_without_a_trace(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    add_rider(cloud, "gone-rider-x7q", 2)
    assert kiosk.daemon(cloud).pull_roster().error is None
    with sqlite3.connect(kiosk.store.path) as db:
        (sealed,) = db.execute(
            "SELECT sealed FROM riders WHERE person_id = 'gone-rider-x7q'"
        ).fetchone()
    assert sealed[20:52] in disk_bytes(kiosk.store.path)

    delete_rider(cloud, "gone-rider-x7q")
    pulled = kiosk.daemon(cloud).pull_roster()
    assert (pulled.error, pulled.full, pulled.deletions) == (None, False, 1)
    assert kiosk.riders() == ["ann"]
    assert "gone-rider-x7q" not in LiveRoster(kiosk.store).snapshot.gallery.person_ids
    raw = disk_bytes(kiosk.store.path)
    assert sealed[20:52] not in raw and sealed[-32:] not in raw
    assert b"gone-rider-x7q" not in raw
    assert cloud.admin("DELETE", "/v1/admin/riders/gone-rider-x7q").status_code == 404


@pytest.mark.parametrize("damage", ["version", "signature", "truncated", "sealed row"])
def test_a_tampered_delta_is_refused_and_the_old_roster_kept(
    cloud: Cloud, tmp_path: Path, damage: str
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    assert kiosk.daemon(cloud).pull_roster().error is None
    before = kiosk.store.version
    add_rider(cloud, "bob", 2)

    def tamper(request: httpx.Request, content: bytes) -> bytes:
        envelope = json.loads(content)
        if damage == "version":
            envelope["delta"]["to_version"] += 1
        elif damage == "signature":
            signature = bytearray(base64.b64decode(envelope["signature"]))
            signature[7] ^= 1
            envelope["signature"] = base64.b64encode(bytes(signature)).decode()
        elif damage == "truncated":
            return content[: len(content) // 2]
        return json.dumps(envelope).encode()

    if damage == "sealed row":  # the cloud's own stored row is damaged: it never opens
        with _connect(cloud.settings.database_url) as rows:
            (sealed,) = rows("SELECT sealed FROM roster_riders WHERE person_id = 'bob'")[0]
            blob = bytearray(base64.b64decode(sealed))
            blob[-3] ^= 0x40
            rows(
                "UPDATE roster_riders SET sealed = ? WHERE person_id = 'bob'",
                [base64.b64encode(bytes(blob)).decode()],
            )
        transport = None
    else:
        transport = Proxy(tamper)
    pulled = kiosk.daemon(cloud, transport).pull_roster()
    assert pulled.error is not None and pulled.error.startswith("roster refused")
    assert kiosk.store.version == before and kiosk.riders() == ["ann"]
    assert len(applied_events(kiosk)) == 1
    state = read_pull_state(kiosk.store.path)
    assert state is not None and state.error == pulled.error


def test_a_delta_for_another_kiosk_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    kiosk_a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    kiosk_b = make_roster_kiosk(tmp_path, cloud, "kiosk-b")
    add_rider(cloud, "ann", 1)
    for_a = kiosk_a.daemon(cloud).client.get_roster(0).content

    pulled = kiosk_b.daemon(cloud, Proxy(lambda request, content: for_a)).pull_roster()
    assert pulled.error is not None and "another kiosk" in pulled.error
    assert kiosk_b.store.version == 0
    # Kiosk B's own delta is wrapped for its own key and opens.
    assert kiosk_b.daemon(cloud).pull_roster().error is None
    assert kiosk_b.riders() == ["ann"]


def test_a_version_gap_makes_the_kiosk_ask_for_a_full_snapshot(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    add_rider(cloud, "bob", 2)
    stale = kiosk.daemon(cloud).client.get_roster(1).content  # a delta from 1, not 0
    asked: list[str] = []

    def serve_stale_once(request: httpx.Request, content: bytes) -> bytes | None:
        asked.append(request.url.params["since"])
        return stale if len(asked) == 1 else None

    pulled = kiosk.daemon(cloud, Proxy(serve_stale_once)).pull_roster()
    assert asked == ["0", "0"]  # the kiosk's own version, then a snapshot request
    assert (pulled.error, pulled.full) == (None, True)
    assert kiosk.riders() == ["ann", "bob"]


def test_a_kiosk_behind_the_kept_tombstones_gets_a_full_snapshot(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    add_rider(cloud, "bob", 2)
    assert kiosk.daemon(cloud).pull_roster().error is None
    # An operator deletes with tombstones kept for 0 s, as `kiosk-cloud riders delete` does
    # with KIOSK_CLOUD_ROSTER_TOMBSTONE_KEEP_S=0: the tombstone is pruned at once.
    keys = cloud_roster(cloud).keys
    database = open_database(cloud.settings.database_url, pool_size=1)
    try:
        operator = CloudRoster(
            database, RosterKeyFiles(keys.signing_path, keys.data_path), MODEL, 0
        )
        operator.delete("ann")
        assert operator.counts() == (1, 0)
    finally:
        database.close()
    pulled = kiosk.daemon(cloud).pull_roster()
    assert (pulled.error, pulled.full) == (None, True)
    assert kiosk.riders() == ["bob"]


def test_the_running_daemon_pulls_at_start_when_woken_and_on_schedule(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    slow = kiosk.daemon(cloud, interval_s=30.0, roster_interval_s=3600.0)
    with running(slow):
        wait_for_version(kiosk, 1)  # pulled at start
        add_rider(cloud, "bob", 2)
        slow.wake()  # SIGUSR1 / a remote sync-now command
        wait_for_version(kiosk, 2)

    fast = kiosk.daemon(cloud, interval_s=30.0, roster_interval_s=0.2)
    version = add_rider(cloud, "cyd", 3)
    with running(fast):
        wait_for_version(kiosk, version)
    assert kiosk.riders() == ["ann", "bob", "cyd"]
    assert [e.payload.to_version for e in applied_events(kiosk)] == [1, 2, 3]  # type: ignore[union-attr]


def test_a_rider_deleted_in_the_cloud_leaves_the_running_daemon_while_its_pushes_back_off(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    add_rider(cloud, "gone-rider-k3v", 2)

    def ingest_down(*args: Any) -> Any:  # the cloud answers every batch with 503
        raise StoreError("the events table is locked")

    monkeypatch.setattr(cloud.service().store, "ingest", ingest_down)
    kiosk.base.outbox.append("slot.fault", slot=2, code="jam")  # a push that keeps failing
    daemon = kiosk.daemon(
        cloud,
        interval_s=0.2,
        roster_interval_s=0.2,
        backoff=BackoffPolicy(base_s=0.05, cap_s=0.3),
    )

    with running(daemon):
        wait_for_version(kiosk, 2)  # pulled at start, before the first push
        deleted = delete_rider(cloud, "gone-rider-k3v")  # a rider who asked to be forgotten
        wait_for_version(kiosk, deleted)  # no wake: the roster pull keeps its own schedule
    assert kiosk.riders() == ["ann"]
    assert b"gone-rider-k3v" not in disk_bytes(kiosk.store.path)
    stats = kiosk.base.outbox.stats()
    assert stats.last_error is not None and "503" in stats.last_error
    pending = [e.type for e in kiosk.base.outbox.events("pending")]
    assert "slot.fault" in pending  # never sent: the roster did not wait for the pushes


def test_a_failing_roster_pull_backs_off_on_its_own_and_honours_retry_after(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    busy = Forger(lambda request: httpx.Response(503, headers={"Retry-After": "30"}))
    daemon = kiosk.daemon(
        cloud,
        busy,
        interval_s=0.1,
        roster_interval_s=0.1,
        backoff=BackoffPolicy(base_s=0.05, cap_s=0.1),
    )
    with running(daemon):
        kiosk.base.outbox.append("slot.fault", slot=2, code="jam")
        deadline = time.monotonic() + 10
        while not cloud.events(kiosk.kiosk_id):
            assert time.monotonic() < deadline, "the pushes go on while the roster fails"
            time.sleep(0.05)
        time.sleep(1.0)  # ten roster intervals, far short of the cloud's 30 s
    assert busy.roster_requests == 1, "the failed pull waits as long as the cloud asked"
    assert [e["type"] for e in cloud.events(kiosk.kiosk_id)] == ["slot.fault"]
    _, error = last_pull(kiosk)
    assert error is not None and "503" in error
    assert held_version(kiosk) == 0 and kiosk.riders() == []


def test_data_key_rotation_reseals_the_cloud_and_the_kiosk_forgets_the_old_key(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    add_rider(cloud, "bob", 2)
    assert kiosk.daemon(cloud).pull_roster().error is None
    old_key = kiosk.store.info().data_key_id
    keys = cloud_roster(cloud).keys
    old_file = keys.data_path.read_bytes()
    with _connect(cloud.settings.database_url) as rows:
        before = dict(rows("SELECT person_id, sealed FROM roster_riders"))

    rotated = cloud.admin("POST", "/v1/admin/roster:rotate-key")
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["data_key_id"]
    assert new_key != old_key and rotated.json()["riders"] == 2
    with _connect(cloud.settings.database_url) as rows:
        after = {
            pid: (kid, sealed)
            for pid, kid, sealed in rows("SELECT person_id, key_id, sealed FROM roster_riders")
        }
    assert {kid for kid, _ in after.values()} == {new_key}
    assert all(after[pid][1] != before[pid] for pid in before)
    assert keys.data_path.read_bytes() != old_file and not keys.next_path.exists()

    pulled = kiosk.daemon(cloud).pull_roster()
    assert (pulled.error, pulled.full, pulled.upserts) == (None, True, 2)
    assert kiosk.store.info().data_key_id == new_key
    with sqlite3.connect(kiosk.store.path) as db:
        held = [row[0] for row in db.execute("SELECT key_id FROM data_keys")]
        row_keys = {row[0] for row in db.execute("SELECT key_id FROM riders")}
    assert held == [new_key] and row_keys == {new_key}
    assert LiveRoster(kiosk.store).snapshot.gallery.decide(template(2), 0.5, 0.05).person_id == (
        "bob"
    )


def test_unknown_kiosks_and_kiosks_without_a_box_key_get_no_roster(
    cloud: Cloud, tmp_path: Path
) -> None:
    add_rider(cloud, "ann", 1)
    stranger = make_roster_kiosk(tmp_path, cloud, "kiosk-x", register=False)
    pulled = stranger.daemon(cloud).pull_roster()
    assert pulled.error is not None and "401 unknown_kiosk" in pulled.error
    assert stranger.store.version == 0
    answer = cloud.signed(
        "kiosk-x", stranger.base.key, b"", path="/v1/roster?since=0", method="GET"
    )
    assert answer.status_code == 401 and answer.json()["error"] == "unknown_kiosk"
    assert cloud.http.get(cloud.url + "/v1/roster?since=0").status_code == 401

    cloud.register("kiosk-x", stranger.base.key)  # signing key only
    answer = cloud.signed(
        "kiosk-x", stranger.base.key, b"", path="/v1/roster?since=0", method="GET"
    )
    assert answer.status_code == 409 and answer.json()["error"] == "no_box_key"


def test_provisioning_registers_the_box_key_and_names_the_roster_key(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud, "kiosk-p", register=False)
    token = cloud.admin("POST", "/v1/admin/provisioning-tokens", json={}).json()["token"]
    body = {
        "token": token,
        "kiosk_id": "kiosk-p",
        "public_key": public_key_text(kiosk.base.key),
        "box_public_key": kiosk.box_key(),
    }
    answer = cloud.http.post(cloud.url + "/v1/provision", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["roster_public_key"] == cloud_roster(cloud).keys.public_key
    assert answer.json()["box_public_key"] == kiosk.box_key()
    add_rider(cloud, "ann", 1)
    assert kiosk.daemon(cloud).pull_roster().error is None
    assert kiosk.riders() == ["ann"]
    bad = cloud.admin(
        "POST",
        "/v1/admin/kiosks",
        json={"kiosk_id": "kiosk-q", "public_key": body["public_key"], "box_public_key": "!" * 44},
    )
    assert bad.status_code == 422 and bad.json()["error"] == "bad_box_public_key"


def test_concurrent_changes_get_distinct_versions_and_all_reach_the_kiosk(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    with ThreadPoolExecutor(max_workers=4) as pool:
        versions = list(pool.map(lambda i: add_rider(cloud, f"r{i}", i), range(8)))
    assert sorted(versions) == list(range(1, 9))
    assert kiosk.daemon(cloud).pull_roster().to_version == 8
    assert kiosk.riders() == [f"r{i}" for i in range(8)]


def test_rider_administration_refuses_what_it_cannot_store(cloud: Cloud) -> None:
    add_rider(cloud, "ann", 1)
    again = cloud.admin(
        "POST",
        "/v1/admin/riders",
        json={
            "person_id": "ann",
            "templates": [{"model": MODEL, "vector": [0.0] * 128}],
            "consent": CONSENT,
        },
    )
    assert again.status_code == 409 and again.json()["error"] == "rider_exists"
    add_rider(cloud, "bea", 2)
    replaced = add_rider(cloud, "ann", 5, replace=True)
    status = cloud.admin("GET", "/v1/admin/roster").json()
    assert (status["version"], status["riders"]) == (replaced, 2)
    pages = [
        [r["person_id"] for r in cloud.admin("GET", "/v1/admin/riders", params=query).json()]
        for query in ({"limit": 1}, {"after": "ann", "limit": 1})
    ]
    assert pages == [["ann"], ["bea"]]
    for bad in (
        {"person_id": "ann", "templates": []},
        {"person_id": "a b", "templates": [{"model": MODEL, "vector": [0.0] * 128}]},
        {"person_id": "zed", "templates": [{"model": MODEL, "vector": [0.0] * 127}]},
    ):
        assert cloud.admin("POST", "/v1/admin/riders", json=bad).status_code == 422
    assert cloud.admin("GET", "/v1/admin/roster").json()["version"] == replaced


# -- "up to date" must be signed and fresh --------------------------------------------------


class Forger(httpx.BaseTransport):
    """Stands between kiosk and cloud and answers every roster request itself."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self._inner = httpx.HTTPTransport()
        self._answer = answer
        self.roster_requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/roster":
            return self._inner.handle_request(request)
        self.roster_requests += 1
        return self._answer(request)


def last_pull(kiosk: RosterKiosk) -> tuple[float | None, str | None]:
    """What `kiosk sync status` shows of the roster pull: its time and its error."""
    state = read_pull_state(kiosk.store.path)
    assert state is not None
    return state.checked_at, state.error


def pulled_once(kiosk: RosterKiosk, cloud: Cloud) -> float:
    """Pull successfully; the pull time recorded, after which a later pull shows later."""
    assert kiosk.daemon(cloud).pull_roster().error is None
    pulled_at, _ = last_pull(kiosk)
    assert pulled_at is not None
    time.sleep(0.02)
    return pulled_at


def test_an_up_to_date_kiosk_gets_a_signed_statement_for_its_request_and_the_pull_counts(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    version = add_rider(cloud, "ann", 1)
    first = pulled_once(kiosk, cloud)

    answer = kiosk.daemon(cloud).client.get_roster(version)
    assert answer.status == 200
    current = json.loads(answer.content)["current"]
    assert (current["kiosk_id"], current["version"], current["nonce"]) == (
        kiosk.kiosk_id,
        version,
        answer.nonce,
    )

    again = kiosk.daemon(cloud).pull_roster()
    assert (again.error, again.changed, again.to_version) == (None, False, version)
    later, error = last_pull(kiosk)
    assert error is None and later is not None and later > first
    assert len(applied_events(kiosk)) == 1


@pytest.mark.parametrize("forgery", ["204 no content", "200 empty", "signed by another key"])
def test_a_forged_up_to_date_is_refused_and_does_not_count_as_a_pull(
    cloud: Cloud, tmp_path: Path, forgery: str
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    held = add_rider(cloud, "bob", 2)
    pulled_at = pulled_once(kiosk, cloud)
    delete_rider(cloud, "bob")  # what a forged "up to date" would hold back
    impostor = Ed25519PrivateKey.generate()

    def up_to_date(request: httpx.Request) -> httpx.Response:
        headers = {"X-Roster-Version": str(held)}
        if forgery == "204 no content":  # what the cloud used to say, unsigned
            return httpx.Response(204, headers=headers)
        if forgery == "200 empty":
            return httpx.Response(200, headers=headers)
        statement = build_current(kiosk.kiosk_id, held, request.headers["X-Kiosk-Nonce"])
        return httpx.Response(200, headers=headers, content=sign_current(statement, impostor))

    forger = Forger(up_to_date)
    pulled = kiosk.daemon(cloud, forger).pull_roster()
    assert forger.roster_requests == 1
    assert pulled.error is not None and pulled.error.startswith("roster refused")
    expected = "signature does not verify" if forgery.startswith("signed") else "unsigned"
    assert expected in pulled.error
    assert last_pull(kiosk) == (pulled_at, pulled.error)
    assert kiosk.store.version == held and kiosk.riders() == ["ann", "bob"]

    # The genuine answer then brings the deletion that was held back.
    assert kiosk.daemon(cloud).pull_roster().error is None
    assert kiosk.riders() == ["ann"]
    checked_at, error = last_pull(kiosk)
    assert error is None and checked_at is not None and checked_at > pulled_at


def test_a_replayed_up_to_date_statement_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    held = add_rider(cloud, "bob", 2)
    pulled_at = pulled_once(kiosk, cloud)
    old = kiosk.daemon(cloud).client.get_roster(held).content  # genuine, for that request
    assert "current" in json.loads(old)
    delete_rider(cloud, "bob")

    pulled = kiosk.daemon(cloud, Proxy(lambda request, content: old)).pull_roster()
    assert pulled.error is not None and "replayed" in pulled.error
    assert last_pull(kiosk) == (pulled_at, pulled.error)
    assert kiosk.store.version == held and kiosk.riders() == ["ann", "bob"]
    assert kiosk.daemon(cloud).pull_roster().error is None
    assert kiosk.riders() == ["ann"]


def test_a_replayed_delta_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    pulled_at = pulled_once(kiosk, cloud)
    add_rider(cloud, "bob", 2)
    old = kiosk.daemon(cloud).client.get_roster(1).content  # a genuine delta from 1 to 2
    assert json.loads(old)["delta"]["to_version"] == 2
    delete_rider(cloud, "ann")  # version 3: the old delta would hold this back

    pulled = kiosk.daemon(cloud, Proxy(lambda request, content: old)).pull_roster()
    assert pulled.error is not None and "not made for this request" in pulled.error
    assert last_pull(kiosk) == (pulled_at, pulled.error)
    assert kiosk.store.version == 1 and kiosk.riders() == ["ann"]
    assert kiosk.daemon(cloud).pull_roster().error is None
    assert (kiosk.store.version, kiosk.riders()) == (3, ["bob"])


# -- helpers for reading the cloud database directly -----------------------------------------


class _Rows:
    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        if url.startswith("sqlite:///"):
            self._sqlite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        else:
            self._pg = psycopg.connect(url, autocommit=True)

    def __call__(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            return self._sqlite.execute(sql, params or []).fetchall()
        assert self._pg is not None
        cursor = self._pg.execute(sql.replace("?", "%s"), params or [])
        return cursor.fetchall() if cursor.description else []

    def __enter__(self) -> _Rows:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            self._pg.close()


def _connect(url: str) -> _Rows:
    return _Rows(url)


def test_cloud_key_files_are_private_and_a_half_done_rotation_is_finished(
    tmp_path: Path,
) -> None:
    on_postgres = CloudSettings(
        database_url="postgresql://nowhere/db",
        roster_key_file=tmp_path / "sign.pem",
        roster_data_key_file=tmp_path / "data.key",
    )
    with pytest.raises(SigningKeyError, match="kiosk-cloud keys init"):
        open_cloud_roster(on_postgres, database=None)  # type: ignore[arg-type]
    assert CloudSettings(database_url="postgresql://nowhere/db").roster_key_paths is None

    keys = RosterKeyFiles(tmp_path / "sign.pem", tmp_path / "data.key")
    assert keys.init() == [keys.signing_path, keys.data_path]
    for path in (keys.signing_path, keys.data_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    old = keys.data_key()
    keys.data_path.chmod(0o640)
    with pytest.raises(SigningKeyError, match="readable by others"):
        RosterKeyFiles(keys.signing_path, keys.data_path).data_key()
    keys.data_path.chmod(0o600)

    # A rotation that committed its rows but died before renaming the key file: the next
    # process to need the key finishes the swap; a key the database does not name is refused.
    fresh = keys.stage_next()
    later = RosterKeyFiles(keys.signing_path, keys.data_path)
    assert later.data_key(fresh.key_id) == fresh and later.data_key().key_id != old.key_id
    assert keys.data_path.read_bytes() == fresh.material and not keys.next_path.exists()
    with pytest.raises(SigningKeyError, match="not the one the database is sealed with"):
        RosterKeyFiles(keys.signing_path, keys.data_path).data_key(old.key_id)
