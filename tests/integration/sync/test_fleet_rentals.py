"""Rentals the cloud owns: due at ingest, overdue then lost by the sweep (time compressed
through the sweep's clock, or tiny settings), safe with several sweepers at once; the real
cloud API on SQLite and PostgreSQL, signed batches over HTTP."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ulid import ULID

from cloud_sync.errors import ConfigError
from cloud_sync.server.config import load_cloud_settings
from cloud_sync.server.db import open_database
from cloud_sync.server.migrations import migrate
from cloud_sync.server.sweep import LOCK_KEY, sweep
from tests.helpers import run_cli
from tests.integration.sync.cloudkit import Cloud, start_cloud

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


def started(seq: int, at: datetime, person: str = "p1", pb: str | None = None) -> dict[str, Any]:
    return {
        "id": str(ULID.from_datetime(at)),
        "kiosk_id": "kiosk-a",
        "seq": seq,
        "type": "rental.started",
        "occurred_at": at.isoformat(),
        "schema": 1,
        "payload": {
            "rental_id": f"r{seq}",
            "person_id": person,
            "slot": 1,
            "powerbank_id": pb or f"pb{seq}",
            "request_id": f"q{seq}",
        },
    }


def returned(seq: int, at: datetime, pb: str) -> dict[str, Any]:
    return {
        "id": str(ULID.from_datetime(at)),
        "kiosk_id": "kiosk-a",
        "seq": seq,
        "type": "rental.returned",
        "occurred_at": at.isoformat(),
        "schema": 1,
        "payload": {"slot": 2, "powerbank_id": pb},
    }


def send(cloud: Cloud, key: Ed25519PrivateKey, *events: dict[str, Any]) -> None:
    body = {"kiosk_id": "kiosk-a", "batch_id": str(ULID()), "events": list(events)}
    answer = cloud.signed("kiosk-a", key, json.dumps(body).encode())
    assert answer.status_code == 200, answer.text


def rentals(cloud: Cloud, status: str = "all") -> dict[str, dict[str, Any]]:
    rows = cloud.admin("GET", "/v1/admin/rentals", params={"status": status, "limit": 1000})
    assert rows.status_code == 200, rows.text
    return {row["rental_id"]: row for row in rows.json()}


def fleet_row(cloud: Cloud, person: str) -> tuple[Any, ...] | None:
    with cloud.service().store.db.transaction() as tx:
        rows = tx.rows(
            "SELECT version, overdue, lost FROM rider_fleet WHERE person_id = ?", [person]
        )
    return tuple(rows[0]) if rows else None


@pytest.fixture
def key(cloud: Cloud) -> Ed25519PrivateKey:
    made = Ed25519PrivateKey.generate()
    cloud.register("kiosk-a", made)
    return made


def test_a_rental_is_due_a_day_after_it_started(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    send(cloud, key, started(1, at))
    assert rentals(cloud)["r1"]["due_at"] == "2026-01-03T03:04:05.000000Z"


def test_the_sweep_turns_rentals_overdue_then_lost_and_a_return_still_closes_them(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    now = datetime.now(UTC)
    send(cloud, key, started(1, now - timedelta(minutes=5)))
    database = cloud.service().store.db
    assert sweep(database, DAY, WEEK, now).overdue == 0  # not due yet
    version_before = fleet_row(cloud, "p1")

    later = now + DAY
    done = sweep(database, DAY, WEEK, later)

    assert (done.ran, done.overdue, done.lost, done.riders) == (True, 1, 0, 1)
    row = rentals(cloud, "overdue")["r1"]
    assert row["overdue_at"] is not None and row["lost_at"] is None
    (bank,) = cloud.admin("GET", "/v1/admin/powerbanks", params={"state": "overdue"}).json()
    assert bank["rental_id"] == "r1"
    view = cloud.admin("GET", "/v1/admin/riders/p1").json()["rentals"]
    assert (view["open"], view["overdue"], view["lost"]) == (0, 1, 0)
    fleet = fleet_row(cloud, "p1")
    assert version_before is not None and fleet is not None
    assert fleet[0] > version_before[0] and fleet[1:] == (1, 0), "kiosks hear it"
    assert sweep(database, DAY, WEEK, later).overdue == 0, "each rental moves once"

    done = sweep(database, DAY, WEEK, later + WEEK)

    assert (done.overdue, done.lost) == (0, 1)
    row = rentals(cloud, "lost")["r1"]
    assert row["lost_at"] is not None and row["overdue_at"] is not None
    assert cloud.admin("GET", "/v1/admin/riders/p1").json()["rentals"]["lost"] == 1
    assert fleet_row(cloud, "p1")[1:] == (0, 1)  # type: ignore[index]

    send(cloud, key, returned(2, now, "pb1"))  # it came back after all

    row = rentals(cloud, "closed")["r1"]
    assert row["lost_at"] is not None and row["overdue_at"] is not None, "kept as history"
    assert fleet_row(cloud, "p1")[1:] == (0, 0)  # type: ignore[index]
    (bank,) = cloud.admin("GET", "/v1/admin/powerbanks").json()
    assert bank["state"] == "docked"


def test_a_rental_long_past_due_goes_straight_to_lost(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    now = datetime.now(UTC)
    send(cloud, key, started(1, now - 10 * DAY), started(2, now - 2 * DAY, person="p2"))
    done = sweep(cloud.service().store.db, DAY, WEEK, now)
    assert (done.overdue, done.lost, done.riders) == (1, 1, 2)
    assert {r: row["status"] for r, row in rentals(cloud).items()} == {
        "r1": "lost",
        "r2": "overdue",
    }


def test_sweeps_at_once_mark_each_rental_once(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    now = datetime.now(UTC)
    send(cloud, key, *(started(n, now - timedelta(minutes=n)) for n in range(1, 41)))
    database = cloud.service().store.db
    barrier = threading.Barrier(4)
    done: list[Any] = []

    def run() -> None:
        barrier.wait()
        done.append(sweep(database, DAY, WEEK, now + 2 * DAY))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(d.overdue for d in done) == 40
    assert len(rentals(cloud, "overdue")) == 40


def test_on_postgresql_a_second_sweeper_skips_while_one_runs(pg_url: str) -> None:
    database = open_database(pg_url, pool_size=2)
    try:
        migrate(database)
        with psycopg.connect(pg_url) as other:  # another replica, mid-sweep
            other.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [LOCK_KEY])
            assert sweep(database, DAY, WEEK, datetime.now(UTC)).ran is False
            other.rollback()  # it finished
        assert sweep(database, DAY, WEEK, datetime.now(UTC)).ran is True
    finally:
        database.close()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_background_sweep_marks_rentals_while_the_api_runs(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'cloud.sqlite'}"
        if store == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    # due 3 s after it starts and lost 3 s later: the first look (a loaded machine's fresh
    # cloud) sees it open, and "overdue" lasts long enough for the 0.1 s polls to see it
    cloud = start_cloud(url, rental_due_s=3, rental_lost_after_s=3, sweep_interval_s=0.2)
    try:
        key = Ed25519PrivateKey.generate()
        cloud.register("kiosk-a", key)
        send(cloud, key, started(1, datetime.now(UTC)))
        states = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "lost" not in states:
            states.append(rentals(cloud)["r1"]["status"])
            time.sleep(0.1)
        assert states[0] == "open" and "overdue" in states and states[-1] == "lost", states
    finally:
        cloud.stop()


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("rental_due_s", 0, "KIOSK_CLOUD_RENTAL_DUE_S"),
        ("rental_lost_after_s", 10 * 365 * 86400, "KIOSK_CLOUD_RENTAL_LOST_AFTER_S"),
        ("sweep_interval_s", 0.01, "KIOSK_CLOUD_SWEEP_INTERVAL_S"),
        ("sweep_interval_s", -1, "KIOSK_CLOUD_SWEEP_INTERVAL_S"),
    ],
)
def test_a_bad_fleet_setting_is_a_clear_error(field: str, value: float, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        load_cloud_settings(**{field: value})


def test_the_rentals_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    cloud = start_cloud(url)
    try:
        key = Ed25519PrivateKey.generate()
        cloud.register("kiosk-a", key)
        send(cloud, key, started(1, datetime.now(UTC) - 2 * DAY))
    finally:
        cloud.stop()
    swept = run_cli("rentals", "sweep", "--database-url", url, program="kiosk-cloud")
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout) == {"ran": True, "overdue": 1, "lost": 0, "riders": 1}
    listed = run_cli("rentals", "--state", "overdue", "--database-url", url, program="kiosk-cloud")
    row = json.loads(listed.stdout)
    assert (row["rental_id"], row["status"]) == ("r1", "overdue")
    assert row["due_at"] < row["overdue_at"] and row["lost_at"] is None
    alias = run_cli("rentals", "--status", "overdue", "--database-url", url, program="kiosk-cloud")
    assert alias.stdout == listed.stdout
    none_open = run_cli("rentals", "--database-url", url, program="kiosk-cloud")
    assert none_open.returncode == 0 and none_open.stdout == ""
    bad = run_cli("rentals", "--state", "late", "--database-url", url, program="kiosk-cloud")
    assert bad.returncode == 4 and len(bad.stderr.splitlines()) == 1, bad.stderr
