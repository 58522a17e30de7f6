"""Each kiosk's automatic set reaches it in the signed delta, without templates: a real API
(SQLite and PostgreSQL), real kiosk rosters.

The set of a kiosk holds its riders' home kiosk first, then the riders most recently
active there, at most ``auto_set_size``; an operator or the riders' app sets a home kiosk;
a change of membership is a list of person ids in the next delta."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_sync.server.sweep import refresh_auto_sets
from tests.integration.sync.cloudkit import ADMIN_TOKEN, Cloud, at_once
from tests.integration.sync.test_roster_sync import RosterKiosk, add_rider, make_roster_kiosk

APP_TOKEN = "app-token-for-auto-sets-0123456789"


#: this module's cloud settings (``roster_module_cloud`` in conftest reads them)
CLOUD_SETTINGS = {"auto_set_size": 2, "sweep_interval_s": 0, "app_token": APP_TOKEN}


@pytest.fixture
def cloud(roster_cloud: Cloud) -> Cloud:
    """The roster-serving cloud of conftest, empty, on SQLite and PostgreSQL."""
    return roster_cloud


def sync(kiosk: RosterKiosk, cloud: Cloud) -> Any:
    daemon = kiosk.daemon(cloud)
    pulled = daemon.pull_roster()
    assert pulled.error is None, pulled.error
    assert daemon.sync_once().error is None
    return pulled


def refresh(cloud: Cloud) -> int:
    return refresh_auto_sets(cloud.service().store.db, cloud.settings, datetime.now(UTC))


def test_a_kiosk_gets_its_home_riders_then_its_recent_riders_as_ids_only(
    cloud: Cloud, tmp_path: Path
) -> None:
    a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    b = make_roster_kiosk(tmp_path, cloud, "kiosk-b")
    for seed, rider in enumerate(("r1", "r2", "r3", "r4"), start=1):
        add_rider(cloud, rider, seed)
    sync(a, cloud)
    sync(b, cloud)
    assert a.store.load().auto_set is None  # nothing chosen yet: the whole roster, as before

    home = cloud.admin("PUT", "/v1/admin/riders/r1/home", json={"kiosk_id": "kiosk-a"})
    assert home.status_code == 200, home.text
    assert home.json()["kiosks_changed"] >= 1
    pulled = sync(a, cloud)
    assert (pulled.upserts, pulled.deletions) == (0, 0)  # membership only, no template
    assert a.store.load().auto_set == frozenset({"r1"})

    # r2 rents at kiosk-a, then r3 rents at kiosk-b and returns at kiosk-a: r3 is the most
    # recent there, and the set holds two riders
    a.base.outbox.append("rental.started", rental_id="x2", person_id="r2", slot=1,
                         powerbank_id="pb-2", request_id="q2")  # fmt: skip
    sync(a, cloud)
    b.base.outbox.append("rental.started", rental_id="x3", person_id="r3", slot=1,
                         powerbank_id="pb-3", request_id="q3")  # fmt: skip
    sync(b, cloud)
    a.base.outbox.append("rental.returned", slot=4, powerbank_id="pb-3", charge=60)
    sync(a, cloud)
    assert refresh(cloud) == 2  # both kiosks' sets changed
    assert refresh(cloud) == 0  # nothing new: nothing stored, no new version
    sync(a, cloud)
    sync(b, cloud)
    assert a.store.load().auto_set == frozenset({"r1", "r3"})  # home first, then the latest
    assert b.store.load().auto_set == frozenset({"r3"})

    # the riders' app moves r4's home to kiosk-b
    moved = httpx.put(
        f"{cloud.url}/v1/riders/r4/home",
        json={"kiosk_id": "kiosk-b"},
        headers={"Authorization": f"Bearer {APP_TOKEN}"},
    )
    assert moved.status_code == 200, moved.text
    sync(b, cloud)
    assert b.store.load().auto_set == frozenset({"r3", "r4"})
    # a deleted rider leaves every set at the next refresh
    assert cloud.admin("DELETE", "/v1/admin/riders/r3").status_code == 200
    refresh(cloud)
    sync(a, cloud)
    assert a.store.load().auto_set == frozenset({"r1", "r2"})


def test_bad_home_kiosk_changes_are_refused_and_change_nothing(
    cloud: Cloud, tmp_path: Path
) -> None:
    make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    make_roster_kiosk(tmp_path, cloud, "kiosk-gone")
    assert cloud.admin("POST", "/v1/admin/kiosks/kiosk-gone:revoke").status_code == 200
    add_rider(cloud, "r1", 1)
    version = cloud.admin("GET", "/v1/admin/roster").json()["version"]
    for person, body, status in (
        ("r1", {"kiosk_id": "kiosk-gone"}, 409),
        ("r1", {"kiosk_id": "kiosk-nowhere"}, 422),
        ("r1", {"kiosk_id": "bad id!"}, 422),
        ("r1", {}, 422),
        ("r1", {"kiosk_id": 7}, 422),
        ("nobody", {"kiosk_id": "kiosk-a"}, 404),
    ):
        answer = cloud.admin("PUT", f"/v1/admin/riders/{person}/home", json=body)
        assert answer.status_code == status, (body, answer.text)
    wrong = httpx.put(
        f"{cloud.url}/v1/riders/r1/home",
        json={"kiosk_id": "kiosk-a"},
        headers={"Authorization": "Bearer wrong"},
    )
    assert wrong.status_code == 401
    revoked = httpx.put(
        f"{cloud.url}/v1/riders/r1/home",
        json={"kiosk_id": "kiosk-gone"},
        headers={"Authorization": f"Bearer {APP_TOKEN}"},
    )
    assert revoked.status_code == 409 and revoked.json()["error"] == "kiosk_revoked"
    assert cloud.admin("GET", "/v1/admin/roster").json()["version"] == version


def test_a_deleted_riders_home_kiosk_goes_with_them(cloud: Cloud, tmp_path: Path) -> None:
    a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    add_rider(cloud, "r1", 1)
    home = cloud.admin("PUT", "/v1/admin/riders/r1/home", json={"kiosk_id": "kiosk-a"})
    assert home.status_code == 200, home.text
    sync(a, cloud)
    assert a.store.load().auto_set == frozenset({"r1"})
    assert cloud.admin("POST", "/v1/admin/riders/r1/consent:withdraw").status_code == 200
    add_rider(cloud, "r1", 2)  # the id given again, to whoever it names now
    refresh(cloud)
    sync(a, cloud)
    assert "r1" not in (a.store.load().auto_set or ())  # no home of the erased rider's


def test_a_home_set_while_the_rider_is_deleted_is_never_kept(cloud: Cloud, tmp_path: Path) -> None:
    make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    for round_ in range(6):
        person = f"r{round_}"
        add_rider(cloud, person, round_ + 1)
        deleted, homed = at_once(
            cloud,
            [
                (ADMIN_TOKEN, "DELETE", f"/v1/admin/riders/{person}", None),
                (APP_TOKEN, "PUT", f"/v1/riders/{person}/home", {"kiosk_id": "kiosk-a"}),
            ],
        )
        assert deleted.status_code == 200, deleted.text
        assert homed.status_code in (200, 404), homed.text
        with cloud.service().store.db.transaction() as tx:
            kept = tx.rows(
                "SELECT person_id FROM rider_homes WHERE person_id NOT IN "
                "(SELECT person_id FROM roster_riders)"
            )
        assert kept == [], f"round {round_}: the erased rider's home was kept"
