"""Events that conflict with each other or with what the cloud stores, sent by the kiosk's
real client (``CloudClient``) to a real cloud on SQLite and on PostgreSQL: every conflict is
a 422 that names the event and why, never a 5xx the kiosk would send again forever, never
a silent overwrite, never a word about another kiosk's events; and replayed requests do not
spend the kiosk's request limits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ulid import ULID

from cloud_sync.client import CLOSED_PATH, CloudClient
from cloud_sync.errors import CloudRejectedError, CloudUnavailableError
from cloud_sync.signing import new_nonce
from tests.integration.sync.cloudkit import Cloud, start_cloud

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def started(
    seq: int,
    rental_id: str,
    person_id: str = "alice",
    powerbank_id: str = "PB-A",
    kiosk_id: str = "kiosk-a",
    **overrides: Any,
) -> dict[str, Any]:
    payload = {
        "rental_id": rental_id,
        "person_id": person_id,
        "slot": 1,
        "powerbank_id": powerbank_id,
        "request_id": rental_id,
    }
    return {**_event(kiosk_id, seq, "rental.started", payload), **overrides}


def failed(seq: int, rental_id: str, person_id: str = "alice") -> dict[str, Any]:
    payload = {"rental_id": rental_id, "person_id": person_id, "slot": 2, "reason": "jam"}
    return _event("kiosk-a", seq, "rental.failed", payload)


def returned(seq: int, powerbank_id: str, kiosk_id: str = "kiosk-a") -> dict[str, Any]:
    return _event(kiosk_id, seq, "rental.returned", {"slot": 3, "powerbank_id": powerbank_id})


def _event(kiosk_id: str, seq: int, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(ULID()),
        "kiosk_id": kiosk_id,
        "seq": seq,
        "type": kind,
        "occurred_at": (T0 + timedelta(seconds=seq)).isoformat(),
        "schema": 1,
        "payload": payload,
    }


class Kiosk:
    """A registered kiosk sending hand-made events through the kiosk's real client."""

    def __init__(self, cloud: Cloud, kiosk_id: str = "kiosk-a") -> None:
        self.kiosk_id = kiosk_id
        self.key = Ed25519PrivateKey.generate()
        cloud.register(kiosk_id, self.key)
        self.client = CloudClient(cloud.url, kiosk_id, self.key, timeout_s=10)

    def send(self, events: list[dict[str, Any]]) -> list[str]:
        """The ids the cloud accepted (a refusal raises, as it does for the daemon)."""
        answer = self.client.post_batch(self.kiosk_id, str(ULID()), [json.dumps(e) for e in events])
        return answer.accepted

    def refused(self, events: list[dict[str, Any]]) -> dict[int, str]:
        """The per-event reasons of a 422 ``rejected_events`` (anything else fails)."""
        with pytest.raises(CloudRejectedError) as raised:
            self.send(events)
        assert (raised.value.status, raised.value.code) == (422, "rejected_events"), raised.value
        return raised.value.rejected


@pytest.fixture
def kiosk(cloud: Cloud) -> Iterator[Kiosk]:
    made = Kiosk(cloud)
    yield made
    made.client.close()


def rentals(cloud: Cloud) -> dict[str, tuple[str, str, str]]:
    found = cloud.admin("GET", "/v1/admin/rentals", params={"status": "all"}).json()
    return {r["rental_id"]: (r["person_id"], r["powerbank_id"], r["status"]) for r in found}


# -- one seq twice in a batch --------------------------------------------------------------------


def test_the_same_seq_twice_in_a_batch_is_refused_per_event(cloud: Cloud, kiosk: Kiosk) -> None:
    first, second = started(1, "R-1"), started(1, "R-2", powerbank_id="PB-B")
    rejected = kiosk.refused([first, second])
    assert list(rejected) == [1], "only the second is refused: the first may go alone"
    assert rejected[1].startswith("seq: 1 appears twice in this batch"), rejected
    assert first["id"] in rejected[1], "the reason names the event that holds the seq"
    assert cloud.events("kiosk-a") == []
    assert kiosk.send([first]) == [first["id"]]
    # a resend of a stored event beside a newcomer on its seq: the newcomer conflicts with
    # the stored event (a seq conflict the kiosk renumbers), whatever their order
    newcomer = started(1, "R-3", powerbank_id="PB-C")
    rejected = kiosk.refused([newcomer, first])
    assert list(rejected) == [0]
    assert rejected[0].startswith(
        f"seq: 1 of kiosk kiosk-a is already stored as event {first['id']}"
    )
    assert [e["id"] for e in cloud.events("kiosk-a")] == [first["id"]]


# -- one rental started twice ----------------------------------------------------------------------


def test_a_rental_started_twice_in_one_batch_is_refused_per_event(
    cloud: Cloud, kiosk: Kiosk
) -> None:
    alice = started(1, "R-1", "alice", "PB-A")
    mallory = started(2, "R-1", "mallory", "PB-B")
    rejected = kiosk.refused([alice, mallory])
    assert list(rejected) == [1]
    assert "rental R-1 is started twice in this batch" in rejected[1], rejected
    assert alice["id"] in rejected[1]
    assert cloud.events("kiosk-a") == [] and rentals(cloud) == {}
    assert kiosk.send([alice]) == [alice["id"]]
    assert rentals(cloud) == {"R-1": ("alice", "PB-A", "open")}


def test_a_start_with_its_own_return_or_failure_in_one_batch_is_accepted(
    cloud: Cloud, kiosk: Kiosk
) -> None:
    events = [
        started(1, "R-1", "alice", "PB-A"),
        returned(2, "PB-A"),
        started(3, "R-2", "bob", "PB-B"),
        failed(4, "R-2", "bob"),
        failed(5, "R-3", "carol"),
        started(6, "R-3", "carol", "PB-C"),
    ]
    assert sorted(kiosk.send(events)) == sorted(e["id"] for e in events)
    found = rentals(cloud)
    assert found["R-1"] == ("alice", "PB-A", "closed")
    assert found["R-2"][:2] == ("bob", "PB-B") and found["R-2"][2] == "failed"
    assert found["R-3"][:2] == ("carol", "PB-C")


def test_a_rental_id_reused_in_a_later_batch_is_refused_and_never_merged(
    cloud: Cloud, kiosk: Kiosk
) -> None:
    alice = started(1, "R-1", "alice", "PB-A")
    assert kiosk.send([alice]) == [alice["id"]]
    mallory = started(2, "R-1", "mallory", "PB-B")
    rejected = kiosk.refused([started(3, "R-9", powerbank_id="PB-9"), mallory])
    assert list(rejected) == [1]
    assert f"rental R-1 is already started by event {alice['id']}" in rejected[1], rejected
    same = started(4, "R-1", "alice", "PB-A")  # the same start under another id: still one
    assert list(kiosk.refused([same])) == [0]
    assert rentals(cloud) == {"R-1": ("alice", "PB-A", "open")}
    assert [e["id"] for e in cloud.events("kiosk-a")] == [alice["id"]]
    # the start itself sent again is a duplicate, and another kiosk's R-1 is its own rental
    assert kiosk.client.post_batch("kiosk-a", str(ULID()), [json.dumps(alice)]).duplicate == [
        alice["id"]
    ]
    other = Kiosk(cloud, "kiosk-b")
    theirs = started(1, "R-1", "bob", "PB-B", kiosk_id="kiosk-b")
    assert other.send([theirs]) == [theirs["id"]]
    other.client.close()


def test_a_start_after_its_failure_fills_the_rental_the_failure_made(
    cloud: Cloud, kiosk: Kiosk
) -> None:
    """Out of order: the failure (or a return at another kiosk) may reach the cloud first;
    the start that follows fills the rental, once."""
    kiosk.send([failed(2, "R-1")])
    assert rentals(cloud)["R-1"][1] == ""
    start = started(1, "R-1", "alice", "PB-A")
    assert kiosk.send([start]) == [start["id"]]
    assert rentals(cloud)["R-1"][:2] == ("alice", "PB-A")
    assert list(kiosk.refused([started(3, "R-1", "mallory", "PB-B")])) == [0]
    assert rentals(cloud)["R-1"][:2] == ("alice", "PB-A")
    # a return at another kiosk before the start closes the rental once the start arrives
    other = Kiosk(cloud, "kiosk-b")
    other.send([returned(1, "PB-R", kiosk_id="kiosk-b")])
    late = started(4, "R-2", "dave", "PB-R", occurred_at=(T0 - timedelta(minutes=5)).isoformat())
    assert kiosk.send([late]) == [late["id"]]
    assert rentals(cloud)["R-2"] == ("dave", "PB-R", "closed")
    other.client.close()


# -- another kiosk's events ------------------------------------------------------------------------


def test_an_id_another_kiosk_stored_is_refused_without_a_word_about_that_kiosk(
    cloud: Cloud, kiosk: Kiosk
) -> None:
    theirs = started(7, "R-1")
    assert kiosk.send([theirs]) == [theirs["id"]]
    other = Kiosk(cloud, "kiosk-b")
    mine = started(1, "R-5", kiosk_id="kiosk-b", id=theirs["id"])
    rejected = other.refused([mine])
    assert list(rejected) == [0]
    assert rejected[0] == f"id: {theirs['id']} is already used by another event", rejected
    assert "kiosk-a" not in rejected[0] and "7" not in rejected[0].removeprefix(
        f"id: {theirs['id']}"
    )
    # the kiosk's own event under its id with other content still says which of its own
    changed = {**theirs, "payload": {**theirs["payload"], "slot": 2}}
    assert "already stored with other content (seq 7)" in kiosk.refused([changed])[0]
    other.client.close()


# -- replays and the request limits ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cloud]:
    """A cloud that takes 3 batches and 3 pulls per kiosk a minute."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
    running = start_cloud(url, kiosk_batch_limit=3, kiosk_pull_limit=3, kiosk_rate_window_s=600)
    try:
        yield running
    finally:
        running.stop()


def test_replayed_batches_do_not_spend_the_kiosks_limit(limited: Cloud) -> None:
    kiosk = Kiosk(limited)
    body = json.dumps(
        {"kiosk_id": "kiosk-a", "batch_id": str(ULID()), "events": [started(1, "R-1")]}
    ).encode()
    nonce, at = new_nonce(), int(time.time())
    assert limited.signed("kiosk-a", kiosk.key, body, nonce=nonce, timestamp=at).status_code == 200
    # an attacker replays the captured request, and one the cloud refused (422)
    bad = json.dumps(
        {"kiosk_id": "kiosk-a", "batch_id": str(ULID()), "events": [started(1, "R-2")]}
    ).encode()
    bad_nonce = new_nonce()
    refused = limited.signed("kiosk-a", kiosk.key, bad, nonce=bad_nonce, timestamp=at)
    assert refused.status_code == 422
    for _ in range(5):
        for replay, used in ((body, nonce), (bad, bad_nonce)):
            answer = limited.signed("kiosk-a", kiosk.key, replay, nonce=used, timestamp=at)
            assert (answer.status_code, answer.json()["error"]) == (401, "replayed")
    # and forges the kiosk's signature (counted towards a lockout of failing signatures only)
    for _ in range(3):
        forged = limited.signed("kiosk-a", Ed25519PrivateKey.generate(), body)
        assert forged.status_code == 401
    fresh = started(2, "R-3")
    assert kiosk.send([fresh]) == [fresh["id"]], "the kiosk's third batch of the window"
    with pytest.raises(CloudUnavailableError, match="429 rate_limited"):
        kiosk.send([started(3, "R-4")])
    kiosk.client.close()


def test_replayed_pulls_do_not_spend_the_kiosks_limit(limited: Cloud) -> None:
    kiosk = Kiosk(limited)
    path, nonce, at = f"{CLOSED_PATH}?since=0", new_nonce(), int(time.time())
    first = limited.signed(
        "kiosk-a", kiosk.key, b"", path=path, method="GET", nonce=nonce, timestamp=at
    )
    assert first.status_code == 200
    for _ in range(6):
        replay = limited.signed(
            "kiosk-a", kiosk.key, b"", path=path, method="GET", nonce=nonce, timestamp=at
        )
        assert (replay.status_code, replay.json()["error"]) == (401, "replayed")
    for _ in range(2):
        assert kiosk.client.get_closed_rentals(0, 10).cursor == 0
    with pytest.raises(CloudUnavailableError, match="429 rate_limited"):
        kiosk.client.get_closed_rentals(0, 10)
    batch = started(1, "R-1")
    assert kiosk.send([batch]) == [batch["id"]], "batches count apart"
    kiosk.client.close()
