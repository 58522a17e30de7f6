"""Rentals returned at another kiosk, confirmed to the renting kiosk by the cloud: a real
cloud API (SQLite and PostgreSQL), real outboxes and ledgers, the real sync daemon."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.backoff import BackoffPolicy
from cloud_sync.closed_pull import closed_cursor, read_fetch_state
from cloud_sync.errors import StoreError
from cloud_sync.roster_wire import Entitlements
from cloud_sync.server.db import open_database
from cloud_sync.server.migrations import MIGRATIONS, _apply, migrate
from edge.cabinet.rentals import Ledger, refusal
from tests.conftest import free_port
from tests.integration.sync.cloudkit import Cloud, Kiosk, make_kiosk, start_cloud

PATH = "/v1/rentals:closed"
ONE_AT_A_TIME = Entitlements(max_open_rentals=1)


def rent(kiosk: Kiosk, ledger: Ledger, rental_id: str, person_id: str, powerbank: str) -> None:
    ledger.begin(rental_id, person_id, 1, powerbank)
    assert ledger.started(rental_id, powerbank)


def give_back(kiosk: Kiosk, powerbank: str, slot: int = 3) -> None:
    kiosk.outbox.append("rental.returned", slot=slot, powerbank_id=powerbank, charge=40)


def test_a_rental_returned_at_another_kiosk_frees_the_rider_at_the_first(
    cloud: Cloud, tmp_path: Path
) -> None:
    a, b = make_kiosk(tmp_path, "kiosk-a"), make_kiosk(tmp_path, "kiosk-b")
    cloud.register(a.kiosk_id, a.key)
    cloud.register(b.kiosk_id, b.key)
    ledger = Ledger(a.outbox)
    rent(a, ledger, "r-1", "p1", "pb-1")
    assert refusal(ONE_AT_A_TIME, ledger.open_count("p1"), date.today()) == "open_rental"
    daemon_a = a.daemon(cloud.url, close_rentals=ledger.close_confirmed)
    assert daemon_a.sync_once().accepted == 1
    assert daemon_a.pull_closed().confirmed == 0  # not returned yet
    give_back(b, "pb-1")
    assert b.daemon(cloud.url).sync_once().accepted == 1

    pulled = daemon_a.pull_closed()

    assert (pulled.confirmed, pulled.closed, pulled.error) == (1, 1, None)
    assert ledger.open_count("p1") == 0
    assert refusal(ONE_AT_A_TIME, ledger.open_count("p1"), date.today()) is None
    assert closed_cursor(a.outbox) == pulled.to_cursor > 0
    assert a.outbox.count("pending") == 0, "closing a confirmed rental records no event"
    again = daemon_a.pull_closed()  # each is sent once
    assert (again.confirmed, again.to_cursor) == (0, pulled.to_cursor)
    answer = cloud.signed(a.kiosk_id, a.key, b"", path=f"{PATH}?since=0", method="GET").json()
    assert answer["rentals"] == [
        {
            "rental_id": "r-1",
            "returned_at": answer["rentals"][0]["returned_at"],
            "return_kiosk_id": "kiosk-b",
        }
    ]
    assert answer["rentals"][0]["returned_at"].endswith("Z")


def test_a_return_that_reaches_the_cloud_first_is_confirmed_too(
    cloud: Cloud, tmp_path: Path
) -> None:
    a, b = make_kiosk(tmp_path, "kiosk-a"), make_kiosk(tmp_path, "kiosk-b")
    cloud.register(a.kiosk_id, a.key)
    cloud.register(b.kiosk_id, b.key)
    ledger = Ledger(a.outbox)
    rent(a, ledger, "r-1", "p1", "pb-1")
    give_back(b, "pb-1")
    b.daemon(cloud.url).sync_once()  # the return waits, unmatched
    daemon_a = a.daemon(cloud.url, close_rentals=ledger.close_confirmed)
    daemon_a.sync_once()  # the rental arrives and closes at once
    assert daemon_a.pull_closed().closed == 1
    assert ledger.open_count("p1") == 0


def test_another_kiosks_rentals_are_never_sent(cloud: Cloud, tmp_path: Path) -> None:
    a, b, c = (make_kiosk(tmp_path, k) for k in ("kiosk-a", "kiosk-b", "kiosk-c"))
    for kiosk in (a, b, c):
        cloud.register(kiosk.kiosk_id, kiosk.key)
    ledger_a, ledger_c = Ledger(a.outbox), Ledger(c.outbox)
    rent(a, ledger_a, "r-1", "p1", "pb-a")
    rent(c, ledger_c, "r-1", "p1", "pb-c")  # the same rental id, at another kiosk
    rent(c, ledger_c, "r-2", "p2", "pb-c2")
    for kiosk in (a, c):
        kiosk.daemon(cloud.url).sync_once()
    give_back(b, "pb-c")
    give_back(b, "pb-c2", slot=4)
    b.daemon(cloud.url).sync_once()

    pulled = a.daemon(cloud.url, close_rentals=ledger_a.close_confirmed).pull_closed()

    assert (pulled.confirmed, pulled.closed, pulled.error) == (0, 0, None)
    assert ledger_a.open_count("p1") == 1, "kiosk-a's r-1 is still out"
    answer = cloud.signed(a.kiosk_id, a.key, b"", path=f"{PATH}?since=0", method="GET")
    assert answer.status_code == 200 and answer.json()["rentals"] == []
    assert c.daemon(cloud.url, close_rentals=ledger_c.close_confirmed).pull_closed().closed == 2
    assert ledger_c.open_count("p1") == ledger_c.open_count("p2") == 0


def test_pages_are_bounded_and_the_cursor_moves_on(cloud: Cloud, tmp_path: Path) -> None:
    a, b = make_kiosk(tmp_path, "kiosk-a"), make_kiosk(tmp_path, "kiosk-b")
    cloud.register(a.kiosk_id, a.key)
    cloud.register(b.kiosk_id, b.key)
    a.rent(5)
    a.daemon(cloud.url).sync_once()
    for i in range(5):
        give_back(b, f"pb-kiosk-a-{i}", slot=1 + i)
    b.daemon(cloud.url).sync_once()

    def page(since: int, limit: int) -> dict[str, Any]:
        path = f"{PATH}?since={since}&limit={limit}"
        response = cloud.signed(a.kiosk_id, a.key, b"", path=path, method="GET")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    first = page(0, 2)
    assert first["more"] is True and len(first["rentals"]) == 2
    second = page(first["cursor"], 2)
    third = page(second["cursor"], 2)
    assert third["more"] is False
    ids = [r["rental_id"] for p in (first, second, third) for r in p["rentals"]]
    assert sorted(ids) == [f"r-kiosk-a-{i}" for i in range(5)]
    assert page(third["cursor"], 2) == {"rentals": [], "cursor": third["cursor"], "more": False}
    assert page(10_000, 2)["cursor"] == third["cursor"], "a cursor from the future comes back"
    too_big = cloud.signed(a.kiosk_id, a.key, b"", path=f"{PATH}?limit=5000", method="GET")
    assert too_big.status_code == 422


def test_unsigned_replayed_stale_and_foreign_requests_get_401(cloud: Cloud, tmp_path: Path) -> None:
    a = make_kiosk(tmp_path, "kiosk-a")
    cloud.register(a.kiosk_id, a.key)
    assert cloud.http.get(cloud.url + PATH).status_code == 401
    nonce = "0" * 31 + "7"
    path = f"{PATH}?since=0"
    assert (
        cloud.signed(a.kiosk_id, a.key, b"", path=path, method="GET", nonce=nonce).status_code
        == 200
    )
    replay = cloud.signed(a.kiosk_id, a.key, b"", path=path, method="GET", nonce=nonce)
    assert (replay.status_code, replay.json()["error"]) == (401, "replayed")
    stale = cloud.signed(
        a.kiosk_id, a.key, b"", path=path, method="GET", timestamp=int(time.time()) - 3600
    )
    assert (stale.status_code, stale.json()["error"]) == (401, "bad_signature")
    intruder = Ed25519PrivateKey.generate()
    cloud.register("kiosk-b", intruder)
    forged = cloud.signed(a.kiosk_id, intruder, b"", path=path, method="GET")
    assert (forged.status_code, forged.json()["error"]) == (401, "bad_signature")
    # The signature covers the query: another cursor under the same signature is refused.
    from cloud_sync.signing import new_nonce, sign_request

    headers = sign_request(a.key, a.kiosk_id, "GET", path, b"", int(time.time()), new_nonce())
    moved = cloud.http.get(cloud.url + f"{PATH}?since=5", headers=headers)
    assert moved.status_code == 401


def test_a_cloud_that_is_down_leaves_the_ledger_and_the_daemon_keeps_going(
    tmp_path: Path,
) -> None:
    a, b = make_kiosk(tmp_path, "kiosk-a"), make_kiosk(tmp_path, "kiosk-b")
    ledger = Ledger(a.outbox)
    rent(a, ledger, "r-1", "p1", "pb-1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon = a.daemon(
        url,
        interval_s=0.2,
        backoff=BackoffPolicy(base_s=0.05, cap_s=0.3),
        close_rentals=ledger.close_confirmed,
    )
    down = daemon.pull_closed()
    assert down.error is not None and "cannot connect" in down.error
    assert ledger.open_count("p1") == 1 and closed_cursor(a.outbox) == 0
    noted = read_fetch_state(a.outbox)
    assert noted.error == down.error and noted.error_at and noted.success_at is None
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # the daemon backs off against the dead port
        assert thread.is_alive() and ledger.open_count("p1") == 1
        cloud = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}", port=port)
        try:
            cloud.register(a.kiosk_id, a.key)
            cloud.register(b.kiosk_id, b.key)
            give_back(b, "pb-1")
            assert b.daemon(cloud.url).sync_once().accepted == 1
            deadline = time.monotonic() + 20
            while ledger.open_count("p1") and time.monotonic() < deadline:
                daemon.wake()
                time.sleep(0.1)
            assert ledger.open_count("p1") == 0
            assert closed_cursor(a.outbox) == 1
            noted = read_fetch_state(a.outbox)
            assert (noted.cursor, noted.error) == (1, None) and noted.success_at
        finally:
            daemon.stop()
            thread.join(timeout=10)
            cloud.stop()
    finally:
        daemon.stop()
    assert not thread.is_alive()


def test_closed_rentals_are_fetched_while_the_pushes_back_off(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make_kiosk(tmp_path, "kiosk-a"), make_kiosk(tmp_path, "kiosk-b")
    cloud.register(a.kiosk_id, a.key)
    cloud.register(b.kiosk_id, b.key)
    ledger = Ledger(a.outbox)
    rent(a, ledger, "r-1", "p1", "pb-1")
    assert a.daemon(cloud.url).sync_once().accepted == 1
    give_back(b, "pb-1")
    assert b.daemon(cloud.url).sync_once().accepted == 1
    store = cloud.service().store
    ingest = store.ingest

    def ingest_down_for_a(kiosk_id: str, *args: Any) -> Any:
        if kiosk_id == a.kiosk_id:
            raise StoreError("the events table is locked")
        return ingest(kiosk_id, *args)

    monkeypatch.setattr(store, "ingest", ingest_down_for_a)
    a.outbox.append("slot.fault", slot=2, code="jam")  # a push that will keep failing
    daemon = a.daemon(
        cloud.url,
        interval_s=0.2,
        backoff=BackoffPolicy(base_s=0.05, cap_s=0.3),
        close_rentals=ledger.close_confirmed,
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # no wake: the fetch runs on its own schedule
            if not ledger.open_count("p1") and read_fetch_state(a.outbox).cursor == 1:
                break  # the fetch notes its cursor just after it closes the rental
            time.sleep(0.05)

        assert ledger.open_count("p1") == 0, "the rental closed while the pushes back off"
        stats = a.outbox.stats()
        assert a.outbox.count("pending") == 1, "the push is still failing"
        assert stats.last_error is not None and "503" in stats.last_error
        noted = read_fetch_state(a.outbox)  # later fetches find nothing more to close
        assert (noted.cursor, noted.error) == (1, None) and noted.success_at
    finally:
        daemon.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_migration_3_numbers_the_rentals_closed_before_it(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        with database.transaction() as tx:
            for _version, _name, script in MIGRATIONS[:2]:
                _apply(tx, script)
            tx.run(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            tx.run("INSERT INTO schema_migrations VALUES (1, 'a', 'x'), (2, 'b', 'x')")
            for kiosk, rental, status in [
                ("kiosk-a", "r-2", "closed"),
                ("kiosk-a", "r-1", "closed"),
                ("kiosk-a", "r-3", "open"),
                ("kiosk-b", "r-9", "closed"),
            ]:
                tx.run(
                    "INSERT INTO rentals (kiosk_id, rental_id, powerbank_id, person_id, "
                    "started_at, start_event_id, status) VALUES (?, ?, 'pb', 'p', 't', 'e', ?)",
                    [kiosk, rental, status],
                )
        assert migrate(database) == [version for version, _, _ in MIGRATIONS[2:]]
        with database.transaction() as tx:
            rows = tx.rows("SELECT kiosk_id, rental_id, closed_seq FROM rentals ORDER BY 1, 2")
        assert rows == [
            ("kiosk-a", "r-1", 1),
            ("kiosk-a", "r-2", 2),
            ("kiosk-a", "r-3", None),
            ("kiosk-b", "r-9", 1),
        ]
    finally:
        database.close()
