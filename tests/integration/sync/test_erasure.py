"""Erasure that can be proven, and retention: a real API (SQLite and PostgreSQL), real
kiosk rosters pulling deltas and pushing signed events.

A deleted rider leaves every kiosk that pulls, each sending a signed ``roster.erased``
receipt; ``kiosk-cloud riders erasure`` and its route say which kiosks confirmed and which
have not (an offline one, with when it was last seen). The cloud's own records stop naming
the rider: events, rentals and custody carry a pseudonym, except what a powerbank still out
needs, which follows once it is back. Riders inactive past the retention time are deleted
by the sweep, never one with a powerbank out.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.server import erasure
from tests.helpers import run_cli
from tests.integration.sync.cloudkit import Cloud
from tests.integration.sync.test_roster_sync import (
    RosterKiosk,
    add_rider,
    cloud_roster,
    delete_rider,
    make_roster_kiosk,
)

#: this module's cloud settings (``roster_module_cloud`` in conftest reads them)
CLOUD_SETTINGS = {"sweep_interval_s": 0}


@pytest.fixture
def cloud(roster_cloud: Cloud) -> Cloud:
    """The roster-serving cloud of conftest, empty, on SQLite and PostgreSQL."""
    return roster_cloud


def sync(kiosk: RosterKiosk, cloud: Cloud) -> None:
    daemon = kiosk.daemon(cloud)
    pulled = daemon.pull_roster()
    assert pulled.error is None, pulled.error
    assert daemon.sync_once().error is None


def rent(kiosk: RosterKiosk, rental_id: str, person_id: str, powerbank: str) -> None:
    kiosk.base.outbox.append(
        "rental.started",
        rental_id=rental_id,
        person_id=person_id,
        slot=1,
        powerbank_id=powerbank,
        request_id=f"q-{rental_id}",
    )


def named(cloud: Cloud, person_id: str) -> list[str]:
    """Every place in the cloud's records that still names ``person_id``."""
    found = []
    for event in cloud.events():
        payload = event["payload"]
        data = json.loads(payload) if isinstance(payload, str) else payload
        if data.get("person_id") == person_id:
            found.append(f"event {event['type']} {event['id']}")
    for rental in cloud.admin("GET", "/v1/admin/rentals", params={"status": "all"}).json():
        if rental["person_id"] == person_id:
            found.append(f"rental {rental['rental_id']} ({rental['status']})")
    return found


def status(cloud: Cloud, person_id: str) -> dict[str, Any]:
    answer = cloud.admin("GET", f"/v1/admin/riders/{person_id}/erasure")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_a_deleted_rider_is_erased_everywhere_with_a_receipt_from_each_kiosk(
    cloud: Cloud, tmp_path: Path
) -> None:
    a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    b = make_roster_kiosk(tmp_path, cloud, "kiosk-b")
    c = make_roster_kiosk(tmp_path, cloud, "kiosk-c")  # goes offline for good
    add_rider(cloud, "ann", 1)
    add_rider(cloud, "bob", 2)
    for kiosk in (a, b, c):
        sync(kiosk, cloud)
    rent(a, "r-1", "ann", "pb-1")
    sync(a, cloud)
    b.base.outbox.append("rental.returned", slot=3, powerbank_id="pb-1", charge=50)
    b.base.outbox.append("rider.refused", person_id="ann", reason="open_rental", count=2)
    sync(b, cloud)
    assert named(cloud, "ann")  # before: the records name her

    version = delete_rider(cloud, "ann")
    first = status(cloud, "ann")
    assert (first["roster_version"], first["reason"]) == (version, "operator")
    assert sorted(first["waiting"]) == ["kiosk-a", "kiosk-b", "kiosk-c"]
    assert named(cloud, "ann") == []  # the closed rental and every event: pseudonymised
    pseudonym = first["pseudonym"]
    assert pseudonym.startswith("erased-") and "ann" not in pseudonym

    for kiosk in (a, b):
        sync(kiosk, cloud)
        assert "ann" not in kiosk.riders()
    late = make_roster_kiosk(tmp_path, cloud, "kiosk-late")  # registered after the deletion
    after = status(cloud, "ann")
    states = {k["kiosk_id"]: k["state"] for k in after["kiosks"]}
    assert states == {
        "kiosk-a": "confirmed",
        "kiosk-b": "confirmed",
        "kiosk-c": "pending",
        "kiosk-late": "never_held",
    }
    assert after["waiting"] == ["kiosk-c"] and after["erased"] == 3
    seen_c = next(k for k in after["kiosks"] if k["kiosk_id"] == "kiosk-c")
    assert seen_c["last_seen"] is not None  # when it last synced: an operator can chase it
    # the receipts themselves name the pseudonym, not the rider
    receipts = [e for e in cloud.events() if e["type"] == "roster.erased"]
    assert len(receipts) == 2
    assert all(json.loads(e["payload"])["person_id"] == pseudonym for e in receipts)
    assert named(cloud, "ann") == [] and late.riders() == []

    # an offline kiosk's late event about her is pseudonymised as it arrives
    c.base.outbox.append("rider.refused", person_id="ann", reason="blocked", count=1)
    sync(c, cloud)
    assert named(cloud, "ann") == []
    assert status(cloud, "ann")["waiting"] == []  # kiosk-c's receipt came with it

    if cloud.settings.database_url.startswith("sqlite:///"):
        shown = run_cli(
            "riders", "erasure", "ann", "--database-url", cloud.settings.database_url,
            program="kiosk-cloud",
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "4 of 4 kiosk(s) erased" in shown.stdout and pseudonym in shown.stdout
        missing = run_cli(
            "riders", "erasure", "bob", "--database-url", cloud.settings.database_url,
            program="kiosk-cloud",
        )  # fmt: skip
        assert missing.returncode == 4 and "no deletion of rider bob" in missing.stderr
    assert cloud.admin("GET", "/v1/admin/riders/bob/erasure").status_code == 404


def test_a_powerbank_still_out_keeps_the_id_until_it_comes_back(
    cloud: Cloud, tmp_path: Path
) -> None:
    a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    add_rider(cloud, "bob", 2)
    sync(a, cloud)
    rent(a, "r-9", "bob", "pb-9")
    sync(a, cloud)
    delete_rider(cloud, "bob")
    kept = status(cloud, "bob")
    assert kept["kept_for_open_rentals"] is True
    assert named(cloud, "bob") == ["event rental.started " + next(
        e["id"] for e in cloud.events() if e["type"] == "rental.started"), "rental r-9 (open)"]  # fmt: skip
    db = cloud.service().store.db
    roster = cloud_roster(cloud)
    assert erasure.privacy_sweep(db, roster, None, datetime.now(UTC)).pseudonymised == 0
    a.base.outbox.append("rental.returned", slot=2, powerbank_id="pb-9", charge=20)
    assert a.daemon(cloud).sync_once().error is None  # the return only, no roster pull yet
    done = erasure.privacy_sweep(db, roster, None, datetime.now(UTC))
    assert done.pseudonymised == 1
    assert named(cloud, "bob") == [] and status(cloud, "bob")["kept_for_open_rentals"] is False


def test_retention_deletes_inactive_riders_but_never_one_with_a_powerbank_out(
    cloud: Cloud, tmp_path: Path
) -> None:
    a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    for seed, rider in enumerate(("idle", "active", "out", "changed"), start=1):
        add_rider(cloud, rider, seed)
    sync(a, cloud)
    rent(a, "r-out", "out", "pb-out")
    a.base.outbox.append("rider.refused", person_id="active", reason="blocked", count=1)
    sync(a, cloud)
    cloud.admin("PATCH", "/v1/admin/riders/changed", json={"max_open_rentals": 2})
    now = datetime.now(UTC)
    db = cloud.service().store.db
    with db.transaction() as tx:  # every record enrolled long ago
        tx.run("UPDATE roster_riders SET updated_at = '2020-01-01T00:00:00.000000Z'")
    done = erasure.privacy_sweep(db, cloud_roster(cloud), timedelta(days=30), now)
    assert done.retired == ("idle",)
    assert status(cloud, "idle")["reason"] == "retention"
    sync(a, cloud)
    assert a.riders() == ["active", "changed", "out"]
    assert status(cloud, "idle")["kiosks"][0]["state"] == "confirmed"
    # a year on, still nothing for the rider with the powerbank out
    later = erasure.privacy_sweep(
        db, cloud_roster(cloud), timedelta(days=30), now + timedelta(days=365)
    )
    assert "out" not in later.retired and set(later.retired) == {"active", "changed"}


def test_a_proposed_template_goes_with_its_rider(cloud: Cloud, tmp_path: Path) -> None:
    from tests.integration.sync.test_learning import propose_raw
    from tests.vault_helpers import template

    a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    add_rider(cloud, "ann", 1)
    sync(a, cloud)
    near = template(1) + 0.01  # a visit's encoding close to her enrolment
    propose_raw(a, "ann", near / float((near**2).sum() ** 0.5))
    sync(a, cloud)
    (proposed,) = [e for e in cloud.events() if e["type"] == "template.proposed"]
    sealed = json.loads(proposed["payload"])["sealed"]
    delete_rider(cloud, "ann")
    (after,) = [e for e in cloud.events() if e["type"] == "template.proposed"]
    data = json.loads(after["payload"])
    assert data["person_id"].startswith("erased-") and data["sealed"] == erasure.ERASED_TEMPLATE
    assert named(cloud, "ann") == []
    with cloud.service().store.db.transaction() as tx:  # the learning record too
        assert tx.rows("SELECT person_id FROM template_learning WHERE person_id = 'ann'") == []
    if cloud.settings.database_url.startswith("sqlite:///"):
        raw = Path(cloud.settings.database_url.removeprefix("sqlite:///")).read_bytes()
        assert sealed[:40].encode() not in raw  # secure_delete: not left in a free page
