"""The cloud API on a real uvicorn server, on SQLite and on PostgreSQL: signed, idempotent
ingest, and every kind of bad request refused with a reason and nothing stored."""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ulid import ULID

from cloud_sync.events import Event
from tests.integration.sync.cloudkit import Cloud, make_kiosk


def event(kiosk_id: str, seq: int, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(ULID()),
        "kiosk_id": kiosk_id,
        "seq": seq,
        "type": "rental.started",
        "occurred_at": datetime.now(UTC).isoformat(),
        "schema": 1,
        "payload": {
            "rental_id": f"r{seq}",
            "person_id": "p1",
            "slot": 1,
            "powerbank_id": f"pb{seq}",
            "request_id": "q",
        },
    }
    data.update(overrides)
    return data


def batch(kiosk_id: str, events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"kiosk_id": kiosk_id, "batch_id": str(ULID()), "events": events}).encode()


@pytest.fixture
def key(cloud: Cloud) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    cloud.register("kiosk-a", key)
    return key


def test_a_batch_is_stored_once_and_a_resend_reports_duplicates(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    events = [event("kiosk-a", seq) for seq in range(1, 11)]
    first = cloud.signed("kiosk-a", key, batch("kiosk-a", events))
    assert first.status_code == 200, first.text
    assert sorted(first.json()["accepted"]) == sorted(e["id"] for e in events)
    again = cloud.signed("kiosk-a", key, batch("kiosk-a", events))
    assert again.status_code == 200
    assert again.json()["accepted"] == []
    assert sorted(again.json()["duplicate"]) == sorted(e["id"] for e in events)
    stored = cloud.events("kiosk-a")
    assert [e["seq"] for e in stored] == list(range(1, 11))
    assert first.headers["x-request-id"]


def test_gzip_bodies_are_accepted(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    body = gzip.compress(batch("kiosk-a", [event("kiosk-a", 1)]))
    response = cloud.signed("kiosk-a", key, body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert len(cloud.events("kiosk-a")) == 1


def test_a_replayed_signature_is_refused(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    body = batch("kiosk-a", [event("kiosk-a", 1)])
    nonce = "0" * 31 + "1"
    assert cloud.signed("kiosk-a", key, body, nonce=nonce).status_code == 200
    replay = cloud.signed("kiosk-a", key, body, nonce=nonce)
    assert replay.status_code == 401
    assert replay.json()["error"] == "replayed"


def refused(cloud: Cloud, response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()
    assert data["error"] == code
    assert data["reason"]
    assert data["request_id"] == response.headers["x-request-id"]
    assert cloud.events("kiosk-a") == [], "a refused batch must store nothing"
    return data


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda h: {**h, "X-Kiosk-Signature": h["X-Kiosk-Signature"][::-1]}, "bad_signature"),
        (lambda h: {k: v for k, v in h.items() if k != "X-Kiosk-Nonce"}, "bad_signature"),
        (lambda h: {**h, "X-Kiosk-Id": "kiosk-zz"}, "unknown_kiosk"),
    ],
    ids=["wrong-signature", "no-nonce", "unknown-kiosk"],
)
def test_bad_signatures_get_401(
    cloud: Cloud, key: Ed25519PrivateKey, mutate: Any, code: str
) -> None:
    from cloud_sync.signing import new_nonce, sign_request

    body = batch("kiosk-a", [event("kiosk-a", 1)])
    headers = sign_request(
        key, "kiosk-a", "POST", "/v1/events:batch", body, int(time.time()), new_nonce()
    )
    response = cloud.http.post(
        cloud.url + "/v1/events:batch", content=body, headers=mutate(headers)
    )
    refused(cloud, response, 401, code)


def test_a_stale_timestamp_is_refused(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    body = batch("kiosk-a", [event("kiosk-a", 1)])
    response = cloud.signed("kiosk-a", key, body, timestamp=int(time.time()) - 3600)
    assert "behind" in refused(cloud, response, 401, "bad_signature")["reason"]


def test_another_kiosks_key_cannot_sign_for_this_kiosk(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    intruder = Ed25519PrivateKey.generate()
    cloud.register("kiosk-b", intruder)
    response = cloud.signed("kiosk-a", intruder, batch("kiosk-a", [event("kiosk-a", 1)]))
    refused(cloud, response, 401, "bad_signature")


def test_a_kiosk_cannot_upload_another_kiosks_events(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    cloud.register("kiosk-b", other)
    whole = cloud.signed("kiosk-b", other, batch("kiosk-a", [event("kiosk-a", 1)]))
    refused(cloud, whole, 403, "wrong_kiosk")
    mixed = cloud.signed(
        "kiosk-b", other, batch("kiosk-b", [event("kiosk-b", 1), event("kiosk-a", 1)])
    )
    data = refused(cloud, mixed, 422, "rejected_events")
    assert [r["index"] for r in data["rejected"]] == [1]
    assert "belongs to kiosk 'kiosk-a'" in data["rejected"][0]["reason"]
    assert cloud.events("kiosk-b") == []


def test_malformed_json_is_400(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    refused(cloud, cloud.signed("kiosk-a", key, b'{"kiosk_id": "kiosk-a", '), 400, "malformed_json")


def test_broken_gzip_is_400(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    response = cloud.signed("kiosk-a", key, b"not gzip", headers={"Content-Encoding": "gzip"})
    refused(cloud, response, 400, "malformed_gzip")


def test_an_oversize_body_is_413(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    body = b" " * (cloud.settings.max_body_bytes + 1)
    refused(cloud, cloud.signed("kiosk-a", key, body), 413, "body_too_large")


def test_a_gzip_bomb_is_413(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    bomb = gzip.compress(b" " * (cloud.settings.max_decoded_bytes + 10), compresslevel=1)
    assert len(bomb) < cloud.settings.max_body_bytes
    response = cloud.signed("kiosk-a", key, bomb, headers={"Content-Encoding": "gzip"})
    refused(cloud, response, 413, "body_too_large")


def test_too_many_events_is_413(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    events = [event("kiosk-a", seq) for seq in range(1, cloud.settings.max_batch_events + 2)]
    refused(cloud, cloud.signed("kiosk-a", key, batch("kiosk-a", events)), 413, "batch_too_large")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"type": "rental.teleported"}, "unknown event type"),
        ({"schema": 2}, "unsupported schema version"),
        ({"seq": -5}, "seq"),
        ({"id": "01ΑΒΓΔ" + "A" * 20}, "id"),
        ({"occurred_at": (datetime.now(UTC) + timedelta(days=3)).isoformat()}, "future"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "time zone"),
        ({"payload": {"slot": "one"}}, "payload"),
        ({"extra": 1}, "extra"),
    ],
    ids=[
        "unknown-type",
        "schema-2",
        "negative-seq",
        "unicode-id",
        "future",
        "naive-time",
        "wrong-types",
        "extra-field",
    ],
)
def test_invalid_events_are_422_with_a_reason_each(
    cloud: Cloud, key: Ed25519PrivateKey, overrides: dict[str, Any], reason: str
) -> None:
    events = [event("kiosk-a", 1), {**event("kiosk-a", 2), **overrides}]
    data = refused(
        cloud, cloud.signed("kiosk-a", key, batch("kiosk-a", events)), 422, "rejected_events"
    )
    assert len(data["rejected"]) == 1
    assert data["rejected"][0]["index"] == 1
    assert reason.lower() in data["rejected"][0]["reason"].lower()


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"x"',
        b"{}",
        json.dumps({"kiosk_id": "kiosk-a", "batch_id": "x", "events": []}).encode(),
        json.dumps({"kiosk_id": "kiosk-a", "batch_id": str(ULID()), "events": "nope"}).encode(),
    ],
    ids=["array", "string", "empty-object", "bad-batch-id", "events-not-a-list"],
)
def test_a_body_that_is_not_a_batch_is_422(
    cloud: Cloud, key: Ed25519PrivateKey, body: bytes
) -> None:
    refused(cloud, cloud.signed("kiosk-a", key, body), 422, "invalid_batch")


def test_same_id_with_other_content_or_a_reused_seq_is_rejected(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    first = event("kiosk-a", 1)
    assert cloud.signed("kiosk-a", key, batch("kiosk-a", [first])).status_code == 200
    changed = {**first, "payload": {**first["payload"], "slot": 2}}
    data = cloud.signed("kiosk-a", key, batch("kiosk-a", [event("kiosk-a", 2), changed])).json()
    assert data["error"] == "rejected_events"
    assert "other content" in data["rejected"][0]["reason"]
    reused = cloud.signed("kiosk-a", key, batch("kiosk-a", [event("kiosk-a", 1)])).json()
    assert "already stored" in reused["rejected"][0]["reason"]
    assert [e["seq"] for e in cloud.events("kiosk-a")] == [1], "the valid event 2 waits too"


def test_nothing_returns_a_5xx_for_junk(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    deep = json.loads(batch("kiosk-a", [event("kiosk-a", 1)]))
    deep["events"][0]["payload"]["slot"] = json.loads("[" * 900 + "]" * 900)
    junk = [
        b"",
        b"\x00\xff" * 100,
        b"null",
        b"1e999999",
        b'{"events": [' + b"[" * 5000 + b"]",
        json.dumps(deep).encode(),
        json.dumps(
            {"kiosk_id": "kiosk-a", "batch_id": str(ULID()), "events": [None, 1, "x"]}
        ).encode(),
    ]
    for body in junk:
        response = cloud.signed("kiosk-a", key, body)
        assert 400 <= response.status_code < 500, (body[:20], response.text)
    for path in ("/v1/nothing", "/v1/events:batch?x=1"):
        assert cloud.http.get(cloud.url + path).status_code < 500
    assert cloud.events("kiosk-a") == []


def test_health_metrics_and_roster_needs_a_box_key(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    health = cloud.http.get(cloud.url + "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"

    def accepted() -> float:
        text = cloud.http.get(cloud.url + "/metrics").text
        line = next(
            x
            for x in text.splitlines()
            if x.startswith('kiosk_cloud_events_total{result="accepted"}')
        )
        return float(line.split()[-1])

    before = accepted()
    cloud.signed("kiosk-a", key, batch("kiosk-a", [event("kiosk-a", 1), event("kiosk-a", 2)]))
    assert accepted() == before + 2
    roster = cloud.signed("kiosk-a", key, b"", path="/v1/roster?since=0", method="GET")
    # kiosk-a registered only its signing key: the roster cannot be wrapped for it
    assert roster.status_code == 409 and roster.json()["error"] == "no_box_key"
    unsigned = cloud.http.get(cloud.url + "/v1/roster?since=0")
    assert unsigned.status_code == 401


def test_admin_endpoints_need_the_admin_token(cloud: Cloud) -> None:
    assert cloud.http.get(cloud.url + "/v1/admin/kiosks").status_code == 401
    wrong = cloud.http.get(cloud.url + "/v1/admin/kiosks", headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401
    assert cloud.admin("GET", "/v1/admin/kiosks").status_code == 200
    bad_key = cloud.admin(
        "POST", "/v1/admin/kiosks", json={"kiosk_id": "kiosk-c", "public_key": "A" * 44}
    )
    assert bad_key.status_code in (200, 422)  # 32 zero-ish bytes may still be a key
    not_base64 = cloud.admin(
        "POST", "/v1/admin/kiosks", json={"kiosk_id": "kiosk-c", "public_key": "!" * 44}
    )
    assert not_base64.status_code == 422


def test_a_provisioning_token_registers_a_kiosk_once(cloud: Cloud) -> None:
    from cloud_sync.signing import public_key_text

    issued = cloud.admin("POST", "/v1/admin/provisioning-tokens", json={"site": "station 9"})
    assert issued.status_code == 201
    token = issued.json()["token"]
    key = Ed25519PrivateKey.generate()
    body = {"token": token, "kiosk_id": "kiosk-new", "public_key": public_key_text(key)}
    first = cloud.http.post(cloud.url + "/v1/provision", json=body)
    assert first.status_code == 201, first.text
    assert first.json()["site"] == "station 9"
    again = cloud.http.post(cloud.url + "/v1/provision", json={**body, "kiosk_id": "kiosk-new2"})
    assert again.status_code == 401 and "already used" in again.json()["reason"]
    accepted = cloud.signed("kiosk-new", key, batch("kiosk-new", [event("kiosk-new", 1)]))
    assert accepted.status_code == 200
    unknown = cloud.http.post(cloud.url + "/v1/provision", json={**body, "token": "kpt_nope1234"})
    assert unknown.status_code == 401


def test_a_rental_closes_whichever_event_arrives_first(cloud: Cloud, tmp_path: Path) -> None:
    a, b = make_kiosk(tmp_path, "kiosk-a"), make_kiosk(tmp_path, "kiosk-b")
    cloud.register("kiosk-a", a.key)
    cloud.register("kiosk-b", b.key)
    a.outbox.append(
        "rental.started",
        rental_id="r1",
        person_id="p1",
        slot=1,
        powerbank_id="pb-1",
        request_id="q1",
    )
    a.outbox.append(
        "rental.started",
        rental_id="r2",
        person_id="p2",
        slot=2,
        powerbank_id="pb-2",
        request_id="q2",
    )
    b.outbox.append("rental.returned", slot=5, powerbank_id="pb-1")
    b.outbox.append("rental.returned", slot=6, powerbank_id="pb-2")
    b.outbox.append("rental.returned", slot=7, powerbank_id="pb-2")  # a second return
    # The returns reach the cloud first, then the rentals.
    assert b.daemon(cloud.url).sync_once().accepted == 3
    assert cloud.admin("GET", "/v1/admin/rentals").json() == []
    assert a.daemon(cloud.url).sync_once().accepted == 2
    rentals = cloud.admin("GET", "/v1/admin/rentals", params={"status": "all"}).json()
    assert {(r["rental_id"], r["status"], r["return_kiosk_id"]) for r in rentals} == {
        ("r1", "closed", "kiosk-b"),
        ("r2", "closed", "kiosk-b"),
    }
    flagged = cloud.admin("GET", "/v1/admin/returns", params={"flagged": True}).json()
    assert [(f["powerbank_id"], f["slot"], f["flag"]) for f in flagged] == [
        ("pb-2", 7, "duplicate")
    ]
    # A later rental of pb-1 that is returned in order closes as well.
    a.outbox.append(
        "rental.started",
        rental_id="r3",
        person_id="p1",
        slot=1,
        powerbank_id="pb-1",
        request_id="q3",
    )
    a.daemon(cloud.url).sync_once()
    assert [r["rental_id"] for r in cloud.admin("GET", "/v1/admin/rentals").json()] == ["r3"]
    b.outbox.append("rental.returned", slot=1, powerbank_id="pb-1")
    b.daemon(cloud.url).sync_once()
    assert cloud.admin("GET", "/v1/admin/rentals").json() == []


def test_events_keep_their_content(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    sent = event("kiosk-a", 1)
    cloud.signed("kiosk-a", key, batch("kiosk-a", [sent]))
    (stored,) = cloud.events("kiosk-a")
    stored.pop("received_at")
    restored = Event.model_validate({**stored, "payload": json.loads(stored["payload"])})
    assert restored == Event.model_validate(sent)
