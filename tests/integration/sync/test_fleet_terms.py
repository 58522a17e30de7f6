"""Fleet rules reach the kiosks without templates: a real API (SQLite and PostgreSQL), real
roster files, the sync daemon's pushes and pulls.

An operator blocking or extending a rider, and the rider's app setting a claim code, reach
every kiosk as a small sealed terms row; a rental open at one kiosk reaches the others as
a fleet row, so each counts it against the rider's limit offline; the return closes it
everywhere. Bad bodies and wrong tokens get clear 4xx answers and change nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_sync.claim_code import claim_matches
from edge.cabinet.rentals import refusal
from tests.integration.sync.cloudkit import Cloud, table_refuses
from tests.integration.sync.test_roster_sync import (
    Proxy,
    RosterKiosk,
    add_rider,
    delete_rider,
    make_roster_kiosk,
    running,
)

APP_TOKEN = "app-token-for-tests-0123456789"
TODAY = date(2026, 12, 6)


#: this module's cloud settings (``roster_module_cloud`` in conftest reads them)
CLOUD_SETTINGS = {"app_token": APP_TOKEN}


@pytest.fixture
def cloud(roster_cloud: Cloud) -> Cloud:
    """The roster-serving cloud of conftest, empty, on SQLite and PostgreSQL."""
    return roster_cloud


class Sizes:
    """Records the size of each roster answer on its way to the kiosk."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, request: httpx.Request, content: bytes) -> None:
        self.seen.append(len(content))


def pull(kiosk: RosterKiosk, cloud: Cloud, sizes: Sizes | None = None) -> Any:
    daemon = kiosk.daemon(cloud, transport=Proxy(sizes) if sizes else None)
    result = daemon.pull_roster()
    assert result.error is None, result.error
    return result


def app(cloud: Cloud, method: str, path: str, token: str = APP_TOKEN, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return cloud.http.request(method, cloud.url + path, headers=headers, **kw)


def test_an_operator_blocks_and_extends_a_rider_without_resending_templates(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1, name="Ann Example", max_open_rentals=1)
    sizes = Sizes()
    first = pull(kiosk, cloud, sizes)
    assert first.upserts == 1

    blocked = cloud.admin("PATCH", "/v1/admin/riders/ann", json={"may_rent": False})
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["may_rent"] is False and blocked.json()["display_name"] == "Ann Example"
    second = pull(kiosk, cloud, sizes)
    assert (second.upserts, second.terms, second.full) == (0, 1, False)
    # no template travels: the terms-only delta is a fraction of the one that brought the rider
    assert sizes.seen[1] < 2000 and sizes.seen[1] < sizes.seen[0] * 0.6, sizes.seen
    rider = kiosk.store.load().riders["ann"]
    assert refusal(rider.entitlements, 0, TODAY, fleet=rider.fleet) == "blocked"
    assert rider.display_name == "Ann Example"  # the record is still there

    extended = cloud.admin(
        "PATCH",
        "/v1/admin/riders/ann",
        json={"may_rent": True, "max_open_rentals": 3, "valid_until": "2020-01-31"},
    )
    assert extended.status_code == 200, extended.text
    pull(kiosk, cloud)
    rights = kiosk.store.load().riders["ann"].entitlements
    assert (rights.may_rent, rights.max_open_rentals, rights.valid_until) == (
        True,
        3,
        date(2020, 1, 31),
    )
    assert refusal(rights, 0, TODAY) == "expired"
    cleared = cloud.admin("PATCH", "/v1/admin/riders/ann", json={"valid_until": None})
    assert cleared.json()["valid_until"] is None and cleared.json()["max_open_rentals"] == 3
    # the operator's list shows the terms in force
    listed = cloud.admin("GET", "/v1/admin/riders").json()
    assert [(r["person_id"], r["may_rent"], r["max_open_rentals"]) for r in listed] == [
        ("ann", True, 3)
    ]
    # a rider enrolled again brings a record newer than the terms: the record is in force
    add_rider(cloud, "ann", 1, name="Ann Example", max_open_rentals=1, replace=True)
    pull(kiosk, cloud)
    assert kiosk.store.load().riders["ann"].entitlements.max_open_rentals == 1


def test_the_riders_app_sets_a_claim_code_that_kiosks_check_and_no_one_can_read(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    pull(kiosk, cloud)
    assert kiosk.store.load().riders["ann"].claim_hash is None

    answer = app(cloud, "PUT", "/v1/riders/ann/claim", json={"code": "4821"})
    assert answer.status_code == 200, answer.text
    assert "4821" not in answer.text and "scrypt" not in answer.text
    assert pull(kiosk, cloud).terms == 1
    stored = kiosk.store.load().riders["ann"].claim_hash
    assert stored is not None and claim_matches("4821", stored)
    assert not claim_matches("4822", stored)
    # changed later: the old code stops working at the next pull
    assert app(cloud, "PUT", "/v1/riders/ann/claim", json={"code": "135790"}).status_code == 200
    pull(kiosk, cloud)
    changed = kiosk.store.load().riders["ann"].claim_hash
    assert changed is not None and claim_matches("135790", changed)
    assert not claim_matches("4821", changed)
    if cloud.settings.database_url.startswith("sqlite:///"):  # the hash is sealed at rest
        raw = Path(cloud.settings.database_url.removeprefix("sqlite:///")).read_bytes()
        assert b"scrypt$" not in raw

    # what an app or an attacker gets wrong, and what it is told
    for token, status in (("wrong", 401), ("", 401)):
        refused = app(cloud, "PUT", "/v1/riders/ann/claim", token=token, json={"code": "1111"})
        assert refused.status_code == status, refused.text
    admin_on_app = cloud.admin("PUT", "/v1/riders/ann/claim", json={"code": "1111"})
    assert admin_on_app.status_code == 401  # the admin token is not the app's
    for body, status in (
        ({"code": "12a4"}, 422),
        ({"code": "123"}, 422),
        ({"code": "1234567"}, 422),
        ({"code": 1234}, 422),
        ({}, 422),
        ({"code": "1234", "name": "x"}, 422),
    ):
        answer = app(cloud, "PUT", "/v1/riders/ann/claim", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"] and answer.json()["reason"], answer.text
    assert app(cloud, "PUT", "/v1/riders/nobody/claim", json={"code": "1234"}).status_code == 404
    assert pull(kiosk, cloud).terms == 0  # nothing of those changed anything
    for scheme in ("bearer", "BEARER"):  # the scheme in any case, as operators' tokens
        answer = cloud.http.put(
            cloud.url + "/v1/riders/ann/claim",
            json={"code": "135790"},
            headers={"Authorization": f"{scheme} {APP_TOKEN}"},
        )
        assert answer.status_code == 200, answer.text
    final = kiosk.store.load().riders["ann"].claim_hash
    assert final is not None and claim_matches("135790", final)


def test_bad_entitlement_changes_are_refused_and_change_nothing(
    cloud: Cloud, tmp_path: Path
) -> None:
    version = add_rider(cloud, "ann", 1)
    for body in (
        {},
        {"may_rent": None},
        {"max_open_rentals": 101},
        {"max_open_rentals": -1},
        {"max_open_rentals": "2"},
        {"valid_until": "tomorrow"},
        {"valid_until": "2026-02-30"},
        {"may_rent": "no"},
        {"templates": []},
    ):
        answer = cloud.admin("PATCH", "/v1/admin/riders/ann", json=body)
        assert answer.status_code == 422, (body, answer.text)
    assert (
        cloud.admin("PATCH", "/v1/admin/riders/nobody", json={"may_rent": False}).status_code == 404
    )
    wrong = cloud.http.patch(
        cloud.url + "/v1/admin/riders/ann",
        json={"may_rent": False},
        headers={"Authorization": f"Bearer {APP_TOKEN}"},
    )
    assert wrong.status_code == 401  # the app may not change entitlements
    assert cloud.admin("GET", "/v1/admin/roster").json()["version"] == version


def rent(kiosk: RosterKiosk, rental_id: str, person_id: str, powerbank: str) -> None:
    kiosk.base.outbox.append(
        "rental.started",
        rental_id=rental_id,
        person_id=person_id,
        slot=1,
        powerbank_id=powerbank,
        request_id=f"q-{rental_id}",
    )


def test_a_rental_at_one_kiosk_counts_at_the_others_until_it_comes_back(
    cloud: Cloud, tmp_path: Path
) -> None:
    a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    b = make_roster_kiosk(tmp_path, cloud, "kiosk-b")
    add_rider(cloud, "ann", 1, max_open_rentals=1)
    add_rider(cloud, "bob", 2, max_open_rentals=1)
    for kiosk in (a, b):
        pull(kiosk, cloud)
    rent(a, "r-1", "ann", "pb-1")
    assert a.daemon(cloud).sync_once().error is None

    sizes = Sizes()
    seen = pull(b, cloud, sizes)
    assert (seen.upserts, seen.fleet) == (0, 1)
    assert sizes.seen[0] < 1500, sizes.seen
    ann = b.store.load().riders["ann"]
    assert ann.fleet.open_rentals == (("kiosk-a", "r-1"),)
    assert ann.fleet.elsewhere("kiosk-b") == 1
    assert refusal(ann.entitlements, ann.fleet.elsewhere("kiosk-b"), TODAY, fleet=ann.fleet) == (
        "open_rental"
    )
    bob = b.store.load().riders["bob"]
    assert refusal(bob.entitlements, bob.fleet.elsewhere("kiosk-b"), TODAY) is None
    # kiosk A counts its own rental from its ledger, not twice
    pull(a, cloud)
    assert a.store.load().riders["ann"].fleet.elsewhere("kiosk-a") == 0

    # returned at B: the cloud closes it, and every kiosk hears so at its next pull
    b.base.outbox.append("rental.returned", slot=2, powerbank_id="pb-1", charge=40)
    assert b.daemon(cloud).sync_once().error is None
    assert pull(b, cloud).fleet == 1
    after = b.store.load().riders["ann"]
    assert after.fleet.open_rentals == () and after.fleet.elsewhere("kiosk-b") == 0
    assert refusal(after.entitlements, 0, TODAY, fleet=after.fleet) is None

    # a rider deleted leaves no fleet or terms row anywhere
    cloud.admin("PATCH", "/v1/admin/riders/ann", json={"may_rent": False})
    rent(a, "r-2", "ann", "pb-2")
    assert a.daemon(cloud).sync_once().error is None
    pull(b, cloud)
    delete_rider(cloud, "ann")
    pull(b, cloud)
    with sqlite3.connect(b.store.path) as db:
        for table in ("riders", "rider_terms", "rider_fleet"):
            held = db.execute(f"SELECT person_id FROM {table}").fetchall()
            assert ("ann",) not in held, table
    answer = cloud.admin("GET", "/v1/admin/riders").json()
    assert [r["person_id"] for r in answer] == ["bob"]


def test_a_full_snapshot_carries_terms_and_fleet_rows(cloud: Cloud, tmp_path: Path) -> None:
    a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    add_rider(cloud, "ann", 1, max_open_rentals=2)
    cloud.admin("PATCH", "/v1/admin/riders/ann", json={"boarding_allowed": False})
    rent(a, "r-1", "ann", "pb-1")
    assert a.daemon(cloud).sync_once().error is None
    late = make_roster_kiosk(tmp_path, cloud, "kiosk-late")  # provisioned after all that
    first = pull(late, cloud)
    assert (first.full, first.upserts, first.terms, first.fleet) == (True, 1, 1, 1)
    ann = late.store.load().riders["ann"]
    assert ann.entitlements.boarding_allowed is False
    assert ann.fleet.open_rentals == (("kiosk-a", "r-1"),)
    assert refusal(ann.entitlements, 1, TODAY, mode="boarding") == "not_allowed"
    assert json.loads(json.dumps(ann.fleet.open_rentals)) == [["kiosk-a", "r-1"]]


class Cable(httpx.BaseTransport):
    """A network cable the test can pull: while out, every request fails to connect."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.out = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.out:
            raise httpx.ConnectError("network unreachable", request=request)
        return self._inner.handle_request(request)


def test_the_window_in_which_an_offline_kiosk_can_exceed_the_fleet_limit(
    cloud: Cloud, tmp_path: Path
) -> None:
    """A kiosk decides from the fleet state of its last roster pull. Offline, it cannot
    hear of rentals that start elsewhere: from the moment a rental reaches the cloud, the
    offline kiosk lets the rider exceed the limit until its first pull after the network
    returns, at most ``roster_interval_s`` later. Measured here with two kiosks, B offline."""
    roster_interval_s, offline_s = 1.0, 2.0
    a = make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    b = make_roster_kiosk(tmp_path, cloud, "kiosk-b")
    add_rider(cloud, "ann", 1, max_open_rentals=1)
    cable = Cable()
    daemon_a = a.daemon(cloud, interval_s=0.1, roster_interval_s=roster_interval_s)
    daemon_b = b.daemon(cloud, transport=cable, interval_s=0.1, roster_interval_s=roster_interval_s)
    with running(daemon_a), running(daemon_b):
        wait_until(lambda: b.store.version >= 1, "kiosk-b's first pull")
        cable.out = True  # kiosk-b goes offline
        rent(a, "r-a", "ann", "pb-a")
        daemon_a.wake()
        wait_until(
            lambda: any(e["type"] == "rental.started" for e in cloud.events("kiosk-a")), "A's push"
        )
        reached = time.monotonic()
        time.sleep(offline_s)
        # offline, kiosk-b still sees nothing out: it would let the rider rent a second one
        stale = b.store.load().riders["ann"]
        assert refusal(stale.entitlements, stale.fleet.elsewhere("kiosk-b"), TODAY) is None
        rent(b, "r-b", "ann", "pb-b")  # and does: the fleet limit is exceeded
        back = time.monotonic()
        cable.out = False  # the network returns
        wait_until(
            lambda: b.store.load().riders["ann"].fleet.elsewhere("kiosk-b") == 1,
            "kiosk-b hearing of A's rental",
            timeout_s=roster_interval_s + 5,
        )
        heard = time.monotonic()
        wait_until(
            lambda: any(e["type"] == "rental.started" for e in cloud.events("kiosk-b")), "B's push"
        )
        wait_until(
            lambda: a.store.load().riders["ann"].fleet.elsewhere("kiosk-a") == 1, "A hearing of B's"
        )
    window, after_return = heard - reached, heard - back
    print(f"offline window: {window:.2f} s ({offline_s:g} s offline, heard {after_return:.2f} s "
          f"after the network returned; roster_interval_s {roster_interval_s:g})")  # fmt: skip
    # about one roster interval (a loaded machine adds its own seconds, as the wait above)
    assert after_return <= roster_interval_s + 4.0, after_return
    assert offline_s <= window <= offline_s + roster_interval_s + 4.5
    # now both kiosks count the rider's two rentals and refuse a third anywhere
    for kiosk, own in ((a, "kiosk-a"), (b, "kiosk-b")):
        ann = kiosk.store.load().riders["ann"]
        assert refusal(ann.entitlements, 1 + ann.fleet.elsewhere(own), TODAY) == "open_rental"
    rows = cloud.admin("GET", "/v1/admin/rentals", params={"status": "open"}).json()
    assert sorted(r["kiosk_id"] for r in rows if r["person_id"] == "ann") == ["kiosk-a", "kiosk-b"]


def wait_until(check: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def audit_refuses(url: str, actions: tuple[str, ...]) -> AbstractContextManager[None]:
    """Make the audit log refuse entries of ``actions``, as a full disk or a constraint
    would refuse that one row."""
    listed = ", ".join(f"'{action}'" for action in actions)
    return table_refuses(url, "audit_log", "action", f"IN ({listed})")


def test_a_rider_change_whose_audit_entry_cannot_be_written_is_not_made(
    cloud: Cloud, tmp_path: Path
) -> None:
    make_roster_kiosk(tmp_path, cloud, "kiosk-a")
    add_rider(cloud, "ann", 1)
    version = cloud.admin("GET", "/v1/admin/roster").json()["version"]
    with audit_refuses(cloud.settings.database_url, ("rider.change", "rider.claim", "rider.home")):
        for answer in (
            cloud.admin("PATCH", "/v1/admin/riders/ann", json={"may_rent": False}),
            app(cloud, "PUT", "/v1/riders/ann/claim", json={"code": "4821"}),
            app(cloud, "PUT", "/v1/riders/ann/home", json={"kiosk_id": "kiosk-a"}),
        ):
            assert 400 <= answer.status_code < 500, answer.text
    rider = cloud.admin("GET", "/v1/admin/riders/ann").json()["rider"]
    assert (rider["may_rent"], rider["has_claim"]) == (True, False)
    assert cloud.admin("GET", "/v1/admin/roster").json()["version"] == version
    assert [e["action"] for e in cloud.admin("GET", "/v1/admin/audit").json()][-1] == "rider.add"
