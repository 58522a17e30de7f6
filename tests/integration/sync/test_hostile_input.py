"""The cloud API against a hostile client, on a real uvicorn server, on SQLite and on
PostgreSQL alike: what no store can keep is refused where it is parsed with a 4xx that
names the event or the field (never a retryable 5xx), every input-derived value is bounded
(ints to int64, times to a sane range, text to storable Unicode), error answers never fail
to encode what they echo, and a value the database itself refuses is answered 4xx, not
"database unavailable, retry"."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ulid import ULID

from cloud_sync.claim_code import hash_claim
from tests.integration.sync.cloudkit import ADMIN_TOKEN, Cloud, table_refuses

NOW = datetime.now(UTC).isoformat()
#: A claim hash whose scrypt cost (2^24, 16 GiB) no kiosk would spend on one code.
SLOW_HASH = hash_claim("1234", log2_n=10).replace("ln=10", "ln=24")
#: Characters PostgreSQL cannot keep in text, or that no store can encode as UTF-8.
UNSTORABLE = ["\u0000", "\ud800", "\udfff", "a\udc80b"]


def event(seq: int, kind: str = "rental.started", **overrides: Any) -> dict[str, Any]:
    payloads: dict[str, dict[str, Any]] = {
        "rental.started": {
            "rental_id": f"r{seq}",
            "person_id": "p1",
            "slot": 1,
            "powerbank_id": f"pb{seq}",
            "request_id": "q",
        },
        "rental.returned": {"slot": 2, "powerbank_id": f"pb{seq}"},
        "slot.fault": {"slot": 3, "code": "jam", "detail": "latch"},
        "boarding.recorded": {"person_id": "p1", "route": "7", "vehicle": "bus-1"},
    }
    data: dict[str, Any] = {
        "id": str(ULID()),
        "kiosk_id": "kiosk-a",
        "seq": seq,
        "type": kind,
        "occurred_at": NOW,
        "schema": 1,
        "payload": payloads[kind],
    }
    data.update(overrides)
    return data


def batch(events: list[dict[str, Any]]) -> bytes:
    # json.dumps escapes a lone surrogate as \ud800, exactly what a hostile client sends
    return json.dumps({"kiosk_id": "kiosk-a", "batch_id": str(ULID()), "events": events}).encode()


@pytest.fixture
def key(cloud: Cloud) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    cloud.register("kiosk-a", key)
    return key


def send(cloud: Cloud, key: Ed25519PrivateKey, events: list[dict[str, Any]]) -> httpx.Response:
    return cloud.signed("kiosk-a", key, batch(events))


def admin_json(cloud: Cloud, method: str, path: str, body: bytes | str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    return cloud.http.request(method, cloud.url + path, content=body, headers=headers)


def refused(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()  # the answer itself always encodes
    return body


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("rental.returned", "powerbank_id"),
        ("rental.started", "rental_id"),
        ("rental.started", "person_id"),
        ("slot.fault", "detail"),
        ("boarding.recorded", "route"),
    ],
)
def test_a_string_no_store_can_keep_is_rejected_by_name_and_the_rest_goes_on(
    cloud: Cloud, key: Ed25519PrivateKey, kind: str, field: str
) -> None:
    good = [event(seq) for seq in range(1, 51)]
    for bad in UNSTORABLE:
        poisoned = event(51, kind)
        poisoned["payload"][field] = f"x{bad}y"
        answer = refused(send(cloud, key, [*good[:25], poisoned, *good[25:]]))
        assert answer["error"] == "rejected_events"
        assert [(r["index"], r["id"]) for r in answer["rejected"]] == [(25, poisoned["id"])]
        assert answer["rejected"][0]["reason"].startswith(f"payload.{field}: holds a "), bad
        assert cloud.events("kiosk-a") == [], "nothing of a refused batch is stored"
    again = send(cloud, key, good)  # what the kiosk does next: the rest, without it
    assert again.status_code == 200, again.text
    assert len(cloud.events("kiosk-a")) == 50


def test_an_unstorable_event_id_is_named_by_index_and_the_answer_encodes(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    bad_ids = [event(1, id=f"{bad}01ARZ3NDEKTSV4RRFFQ69G5FA") for bad in UNSTORABLE]
    answer = refused(send(cloud, key, bad_ids))
    assert [(r["index"], r["id"]) for r in answer["rejected"]] == [
        (index, None) for index in range(len(UNSTORABLE))
    ]
    assert all(r["reason"].startswith("id: holds a ") for r in answer["rejected"]), answer


def test_unstorable_text_in_envelope_keys_and_extra_fields_is_named(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    bad_key = event(1)
    bad_key["payload"]["x\ud800"] = 1
    bad_type = event(2, type="rental.started\u0000")
    answer = refused(send(cloud, key, [bad_key, bad_type]))
    assert [r["index"] for r in answer["rejected"]] == [0, 1]
    assert answer["rejected"][0]["reason"].startswith(
        "payload.x\ufffd: the field name holds a lone UTF-16 surrogate"
    )
    assert answer["rejected"][1]["reason"].startswith("type: unknown event type")


BAD_TIMES: list[Any] = [
    "0001-01-01T00:00:00+01:00",  # year 0 once in UTC: used to raise OverflowError (500)
    "9999-12-31T23:59:59-01:00",  # year 10000 once in UTC
    "1969-12-31T23:59:59Z",  # before the epoch
    "9000-01-01T00:00:00Z",  # far in the future
    1767225600,  # a bare number: the schema says date-time
    1767225600.5,
    "1767225600",
    "2026-05-01T12:00:00",  # no zone
    "2026-05-01",
    "2026-02-30T00:00:00Z",
    "2026-05-01T12:00:00+24:00",
    "\u0662\u0660\u0662\u0666-05-01T12:00:00Z",  # digits of another script
    None,
    True,
]


def test_an_occurred_at_that_is_not_a_sane_rfc3339_time_is_422(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    answer = refused(
        send(cloud, key, [event(i + 1, occurred_at=t) for i, t in enumerate(BAD_TIMES)])
    )
    assert [r["index"] for r in answer["rejected"]] == list(range(len(BAD_TIMES)))
    for rejection in answer["rejected"]:
        assert rejection["reason"].startswith("occurred_at: "), rejection
    assert cloud.events("kiosk-a") == []


def test_the_epoch_and_any_zone_within_range_are_accepted(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    times = ["1970-01-01T00:00:00Z", "2026-01-01T01:00:00.123456789+14:00", "2025-06-30t23:59:59z"]
    response = send(cloud, key, [event(i + 1, occurred_at=t) for i, t in enumerate(times)])
    assert response.status_code == 200, response.text
    stored = [e["occurred_at"] for e in cloud.events("kiosk-a")]
    assert stored == [
        "1970-01-01T00:00:00.000000Z",
        "2025-12-31T11:00:00.123456Z",
        "2025-06-30T23:59:59.000000Z",
    ]


WRONG_TYPES: list[tuple[str, Any]] = [
    ("seq", "5"),
    ("seq", 5.0),
    ("seq", True),
    ("seq", 2**63),
    ("seq", 10**30),
    ("schema", "1"),
    ("payload.slot", "1"),
    ("payload.slot", True),
    ("payload.slot", 1.0),
    ("payload.slot", 2**64),
    ("payload.rental_id", 5),
]


def test_a_value_of_the_wrong_json_type_or_past_int64_is_422(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    events = []
    for seq, (field, value) in enumerate(WRONG_TYPES, start=1):
        bad = event(seq)
        if field.startswith("payload."):
            bad["payload"][field.split(".")[1]] = value
        else:
            bad[field] = value
        events.append(bad)
    answer = refused(send(cloud, key, events))
    named = [r["reason"].split(":")[0] for r in answer["rejected"]]
    assert named == [field for field, _ in WRONG_TYPES], answer


NOT_STRICT_JSON = [
    b'{"kiosk_id": "kiosk-a", "kiosk_id": "kiosk-a", "batch_id": "x", "events": []}',
    b'{"kiosk_id": "kiosk-a", "batch_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "events": [NaN]}',
    b'{"kiosk_id": "kiosk-a", "batch_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "events": [1e400]}',
    b'{"kiosk_id": "kiosk-a", "events": [-Infinity]}',
    b'{"kiosk_id": "kiosk-\xed\xa0\x80"}',  # a surrogate written as UTF-8 bytes
    b"\xff",
    b"[" * 60_000,  # far past the recursion limit, within an admin route's 64 KiB
    b"9" * 5000,
]


def test_json_that_is_not_strict_is_400(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    for body in NOT_STRICT_JSON:
        answer = refused(cloud.signed("kiosk-a", key, body), 400)
        assert answer["error"] == "malformed_json"
        admin = refused(admin_json(cloud, "POST", "/v1/admin/provisioning-tokens", body), 400)
        assert admin["error"] == "malformed_json", body[:40]


def test_admin_event_queries_are_bounded_to_int64(cloud: Cloud) -> None:
    for query, status in [
        ("after_seq=9223372036854775808", 422),
        ("after_seq=99999999999999999999999999", 422),
        ("after_seq=-1", 422),
        ("after_seq=9223372036854775807", 200),
        ("limit=1001", 422),
        ("kiosk_id=kiosk-a%00", 422),
        ("kiosk_id=%ED%A0%80", 422),
    ]:
        response = cloud.admin("GET", f"/v1/admin/events?{query}")
        assert response.status_code == status, (query, response.text)


def test_audit_queries_at_the_edges_of_time_or_text_are_422_naming_the_field(
    cloud: Cloud,
) -> None:
    cloud.register("kiosk-a", Ed25519PrivateKey.generate())  # one entry in the log
    for query, field in [
        ("since=9999-12-31T23:59:59-23:59", "query.since"),  # past year 9999 in UTC
        ("since=0001-01-01T00:00:00%2B14:00", "query.since"),  # before year 1 in UTC
        ("since=2026-01-01T00:00:00%2B25:00", "query.since"),
        ("since=2026-01-01", "query.since"),
        ("operator=ada%00", "query.operator"),
    ]:
        answer = refused(cloud.admin("GET", f"/v1/admin/audit?{query}"))
        assert answer["error"] == "invalid_request" and answer["reason"].startswith(field), query
    for query, found in [("since=0001-01-02T00:00:00%2B14:00", 1), ("operator=ada", 0)]:
        response = cloud.admin("GET", f"/v1/admin/audit?{query}")
        assert response.status_code == 200 and len(response.json()) == found, response.text


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/admin/kiosks", {"kiosk_id": "kiosk-b", "public_key": "A" * 44, "site": "x\0"}, "site"),
    ("/v1/admin/kiosks", {"kiosk_id": "kiosk-b", "public_key": "A" * 44, "site": "\udbff"}, "site"),
    ("/v1/admin/provisioning-tokens", {"site": "a\ud800"}, "site"),
    ("/v1/admin/provisioning-tokens", {"ttl_s": "3600"}, "ttl_s"),
    ("/v1/provision", {"token": "kpt_\ud800xxxxxxxx", "kiosk_id": "kiosk-b", "public_key": "A" * 44}, "token"),
    ("/v1/provision", {"token": "kpt_\0xxxxxxxx", "kiosk_id": "kiosk-b", "public_key": "A" * 44}, "token"),
    ("/v1/admin/riders", {"person_id": "p1", "display_name": "A\0", "templates": []}, "display_name"),
    ("/v1/admin/riders", {"person_id": "p1", "valid_until": 0, "templates": []}, "valid_until"),
    ("/v1/admin/riders", {"person_id": "p1", "may_rent": "yes", "templates": []}, "may_rent"),
    ("/v1/admin/riders", {"person_id": "p1", "x\ud800": 1, "templates": []}, "x\ufffd"),
    ("/v1/admin/riders", {"person_id": "p1", "claim_hash": "1234", "templates": []}, "claim_hash"),
    ("/v1/admin/riders", {"person_id": "p1", "claim_hash": SLOW_HASH, "templates": []}, "claim_hash"),
]  # fmt: skip


def test_admin_and_provisioning_bodies_refuse_unstorable_text_and_loose_types_by_field(
    cloud: Cloud,
) -> None:
    for path, body, field in BAD_BODIES:
        answer = refused(admin_json(cloud, "POST", path, json.dumps(body)))
        assert answer["error"] == "invalid_request"
        assert f"body.{field}" in answer["reason"], answer
    assert cloud.admin("GET", "/v1/admin/kiosks").json() == []


def test_an_admin_body_past_the_size_limit_is_413(cloud: Cloud) -> None:
    huge = json.dumps({"site": "x" * (cloud.settings.max_body_bytes + 10)})
    assert refused(admin_json(cloud, "POST", "/v1/admin/kiosks", huge), 413)["error"] == (
        "body_too_large"
    )


def test_rider_paging_refuses_an_id_no_rider_can_have(cloud: Cloud) -> None:
    for after in ["p%00", "%ED%A0%80", "a%20b", "x" * 129]:
        response = cloud.admin("GET", f"/v1/admin/riders?after={after}")
        assert response.status_code == 422, (after, response.text)


# -- a value the database itself refuses ---------------------------------------------------


def database_refuses(url: str, word: str) -> AbstractContextManager[None]:
    """Make the events table refuse a payload holding ``word``, as a check constraint no
    parse-time rule knows about would (a real database error that is not an outage)."""
    return table_refuses(url, "events", "payload", f"LIKE '%{word}%'")


def test_a_value_the_database_refuses_is_4xx_never_retry(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    bad = event(3)
    bad["payload"]["powerbank_id"] = "forbidden"
    with database_refuses(cloud.settings.database_url, "forbidden"):
        several = send(cloud, key, [event(1), event(2), bad])
        alone = send(cloud, key, [bad])
        fine = send(cloud, key, [event(1), event(2)])
    answer = refused(several, 400)  # the kiosk narrows the batch until the event is alone
    assert answer["error"] == "unstorable" and "Retry-After" not in several.headers
    single = refused(alone)
    assert single["rejected"][0]["id"] == bad["id"]
    assert single["rejected"][0]["reason"].startswith("the database cannot store this event")
    assert fine.status_code == 200
    assert [e["seq"] for e in cloud.events("kiosk-a")] == [1, 2]
