"""Fleet status in the cloud: kiosks' ``kiosk.status`` events through the real sync daemon
into a real cloud API (SQLite and PostgreSQL), read back with ``kiosk-cloud fleet``,
``GET /v1/admin/fleet`` and ``/metrics`` as an operator would."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cloud_sync.outbox import Outbox
from tests.helpers import run_cli
from tests.integration.sync.cloudkit import Cloud, Kiosk, make_kiosk

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def slots(*states: str, hot: int | None = None) -> list[dict[str, Any]]:
    """One slot per state; a docked one holds PB<n> at 90 % (``hot``: that slot's at 61 C)."""
    found = []
    for number, state in enumerate(states, start=1):
        docked = state not in ("empty", "disabled")
        found.append(
            {
                "number": number,
                "state": state,
                "powerbank_id": f"PB{number}" if docked else None,
                "charge": 90 if docked else None,
                "temperature": (61 if number == hot else 25) if docked else None,
                "health": "hot" if number == hot else None,
            }
        )
    return found


def status(kiosk: Kiosk, roster_version: int = 3, backlog: int = 0, **fields: Any) -> None:
    kiosk.outbox.append(
        "kiosk.status",
        version=fields.pop("version", "1.4.0"),
        roster_version=roster_version,
        backlog=backlog,
        board_online=True,
        **fields,
    )


def sync(cloud: Cloud, kiosk: Kiosk) -> None:
    result = kiosk.daemon(cloud.url).sync_once()
    assert result.error is None, result


def fleet_cli(cloud: Cloud, *args: str) -> dict[str, dict[str, Any]]:
    shown = run_cli(
        "fleet", "--json", "--database-url", cloud.settings.database_url, *args,
        program="kiosk-cloud",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return {kiosk["kiosk_id"]: kiosk for kiosk in json.loads(shown.stdout)}


def test_the_fleet_shows_each_kiosks_latest_status(cloud: Cloud, tmp_path: Path) -> None:
    a, b, quiet = (make_kiosk(tmp_path, name) for name in ("kiosk-a", "kiosk-b", "kiosk-c"))
    for kiosk in (a, b, quiet):
        cloud.register(kiosk.kiosk_id, kiosk.key)
    status(a, backlog=4, slots=slots("ready", "ready", "charging", "empty", "ready", hot=5))
    status(b, version="1.3.9", slots=slots("empty", "empty", "fault", "disabled"))
    sync(cloud, a)
    sync(cloud, b)

    shown = fleet_cli(cloud)
    assert set(shown) == {"kiosk-a", "kiosk-b", "kiosk-c"}
    assert shown["kiosk-a"]["online"] and shown["kiosk-b"]["online"]
    assert (shown["kiosk-a"]["free_slots"], shown["kiosk-a"]["charged"]) == (1, 2)
    assert (shown["kiosk-b"]["free_slots"], shown["kiosk-b"]["charged"]) == (2, 0)
    assert shown["kiosk-a"]["backlog"] == 4 and shown["kiosk-b"]["version"] == "1.3.9"
    assert shown["kiosk-a"]["flagged"] == [
        {"slot": 5, "powerbank_id": "PB5", "health": "hot", "charge": 90, "temperature": 61}
    ]
    assert shown["kiosk-c"]["last_seen"] is None and not shown["kiosk-c"]["online"]

    table = run_cli(
        "fleet", "--database-url", cloud.settings.database_url, program="kiosk-cloud"
    ).stdout.splitlines()
    assert table[0].split()[:3] == ["KIOSK", "LAST", "SEEN"]
    row_c = next(line for line in table if line.startswith("kiosk-c"))
    assert row_c.split()[1:3] == ["never", "no"]
    assert "flagged: PB5 at kiosk-a slot 5: hot, 61 C, 90 %" in table

    api = cloud.admin("GET", "/v1/admin/fleet")
    assert api.status_code == 200
    assert [k["charged"] for k in api.json()] == [2, 0, None]
    assert cloud.http.get(cloud.url + "/v1/admin/fleet").status_code == 401

    metrics = cloud.http.get(cloud.url + "/metrics").text
    assert 'kiosk_cloud_kiosk_free_slots{kiosk_id="kiosk-a"} 1.0' in metrics
    assert 'kiosk_cloud_kiosk_charged_powerbanks{kiosk_id="kiosk-a"} 2.0' in metrics
    assert 'kiosk_cloud_kiosk_flagged_powerbanks{kiosk_id="kiosk-a"} 1.0' in metrics
    assert 'kiosk_cloud_kiosk_outbox_backlog{kiosk_id="kiosk-a"} 4.0' in metrics
    assert 'kiosk_cloud_kiosk_last_seen_age_seconds{kiosk_id="kiosk-b"}' in metrics
    assert 'kiosk_id="kiosk-c"' not in metrics  # never reported: no gauges to mislead


def test_an_older_status_arriving_late_never_replaces_a_newer_one(
    cloud: Cloud, tmp_path: Path
) -> None:
    now = [T0]
    kiosk = make_kiosk(tmp_path)
    kiosk.outbox = Outbox(tmp_path / "clocked.sqlite", kiosk.kiosk_id, clock=lambda: now[0])
    cloud.register(kiosk.kiosk_id, kiosk.key)
    status(kiosk, roster_version=1, slots=slots("empty", "empty"))  # older, held back
    held = kiosk.outbox.events("pending")[0].seq
    now[0] = T0 + timedelta(minutes=5)
    status(kiosk, roster_version=2, slots=slots("ready", "empty"))
    kiosk.outbox.quarantine({held: "held back by the test"})
    sync(cloud, kiosk)
    assert fleet_cli(cloud)["kiosk-a"]["charged"] == 1

    kiosk.outbox.requeue()  # the older status reaches the cloud last
    sync(cloud, kiosk)
    assert len(cloud.events("kiosk-a")) == 2
    shown = fleet_cli(cloud)["kiosk-a"]
    assert (shown["charged"], shown["free_slots"], shown["roster_version"]) == (1, 1, 2)
    assert shown["reported_at"].startswith("2026-03-01T12:05:00")


def test_a_kiosk_that_stops_reporting_shows_offline(cloud: Cloud, tmp_path: Path) -> None:
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    status(kiosk, slots=slots("ready"))
    sync(cloud, kiosk)
    synced = time.monotonic()
    window = {"offline_after": 5}
    assert cloud.admin("GET", "/v1/admin/fleet", params=window).json()[0]["online"] is True
    time.sleep(max(0.0, synced + 5.2 - time.monotonic()))  # no status since
    assert cloud.admin("GET", "/v1/admin/fleet", params=window).json()[0]["online"] is False
    shown = fleet_cli(cloud, "--offline-after", "5")["kiosk-a"]
    assert not shown["online"] and shown["last_seen_age_s"] >= 5
    assert shown["charged"] == 1  # the last known status stays visible
    assert fleet_cli(cloud, "--offline-after", "600")["kiosk-a"]["online"]


def test_roster_lag_is_the_clouds_roster_version_minus_the_kiosks(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    status(kiosk, roster_version=3, slots=[])
    sync(cloud, kiosk)
    with cloud.service().store.db.transaction() as tx:
        tx.run(
            "INSERT INTO roster_state (id, version, key_id, key_version, tombstone_floor, "
            "updated_at) VALUES (1, 10, NULL, 1, 0, '2026-03-01T00:00:00.000000Z') "
            "ON CONFLICT (id) DO UPDATE SET version = 10"
        )
    assert fleet_cli(cloud)["kiosk-a"]["roster_lag"] == 7


def test_a_malformed_status_is_refused_with_the_event_named(cloud: Cloud, tmp_path: Path) -> None:
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    good = {"version": "1", "roster_version": 1, "backlog": 0, "board_online": True}
    bad_payloads = [
        {**good, "slots": [{"number": 1, "state": "ready", "charge": "90"}]},
        {**good, "slots": [{"number": 1, "state": "ready"}, {"number": 1, "state": "empty"}]},
        {**good, "slots": [{"number": n, "state": "empty"} for n in range(1, 66)]},
        {**good, "slots": [{"number": 1, "state": "exploded"}]},
        {**good, "backlog": -1},
        {k: v for k, v in good.items() if k != "board_online"},
    ]
    for seq, payload in enumerate(bad_payloads, start=1):
        event_id = f"01JQ{seq:022d}"
        body = {
            "kiosk_id": "kiosk-a",
            "batch_id": "01JQ0000000000000000000000",
            "events": [
                {
                    "id": event_id,
                    "kiosk_id": "kiosk-a",
                    "seq": seq,
                    "type": "kiosk.status",
                    "occurred_at": "2026-03-01T12:00:00Z",
                    "schema": 1,
                    "payload": payload,
                }
            ],
        }
        answer = cloud.signed("kiosk-a", kiosk.key, json.dumps(body).encode())
        assert answer.status_code == 422, (payload, answer.text)
        rejected = answer.json()["rejected"]
        assert [(r["index"], r["id"]) for r in rejected] == [(0, event_id)]
        assert rejected[0]["reason"].startswith("payload."), rejected[0]["reason"]
    assert cloud.events() == []
    assert fleet_cli(cloud)["kiosk-a"]["last_seen"] is None
