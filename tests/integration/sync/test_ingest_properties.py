"""Property-based: hypothesis sends arbitrary batches (a valid event with any field, or a
new one, set to any JSON value or string, hostile characters included) and arbitrary JSON
bodies, signed, to the same cloud API on SQLite and on PostgreSQL (real uvicorn servers),
and checks that: no answer is a 5xx, both stores answer alike (status, error code,
accepted, duplicate and rejected events), and a refused batch stores nothing."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ulid import ULID

from tests.integration.sync.cloudkit import Cloud, empty_database, start_cloud

KIOSK = "kiosk-prop"
SEQ = itertools.count(1)
FIELDS = [
    "id",
    "kiosk_id",
    "seq",
    "type",
    "occurred_at",
    "schema",
    "payload",
    "payload.rental_id",
    "payload.person_id",
    "payload.slot",
    "payload.powerbank_id",
    "payload.request_id",
    "payload.extra",
    "extra",
]
HOSTILE = st.sampled_from(["\u0000", "\ud800", "\udfff", "\uffff", "\U0010ffff", "\x7f", ""])
TEXT = st.one_of(st.text(max_size=12), st.builds("".join, st.lists(HOSTILE, max_size=3)))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-05-01"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def valid_event() -> dict[str, Any]:
    seq = next(SEQ)
    return {
        "id": str(ULID()),
        "kiosk_id": KIOSK,
        "seq": seq,
        "type": "rental.started",
        "occurred_at": datetime.now(UTC).isoformat(),
        "schema": 1,
        "payload": {
            "rental_id": f"r{seq}",
            "person_id": "p1",
            "slot": 1 + seq % 8,
            "powerbank_id": f"pb{seq}",
            "request_id": "q",
        },
    }


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    """A batch of 1-3 events, each valid or with one field set to anything."""
    events = []
    for _ in range(draw(st.integers(1, 3))):
        event = valid_event()
        if draw(st.booleans()):
            field = draw(st.sampled_from(FIELDS))
            value = draw(JSON)
            if field.startswith("payload."):
                event["payload"][field.split(".", 1)[1]] = value
            else:
                event[field] = value
        events.append(event)
    body = {"kiosk_id": KIOSK, "batch_id": str(ULID()), "events": events}
    return json.dumps(body).encode()  # lone surrogates travel as \ud800 escapes


BODIES = st.one_of(
    batches(),
    batches(),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=40),
)


class Pair:
    def __init__(self, clouds: dict[str, Cloud]) -> None:
        self.clouds = clouds
        self.key = Ed25519PrivateKey.generate()
        for cloud in clouds.values():
            cloud.register(KIOSK, self.key)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, pg_session_url: str) -> Iterator[Pair]:
    empty_database(pg_session_url)
    lax: dict[str, Any] = {"kiosk_batch_limit": 1_000_000}
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('prop') / 'cloud.sqlite'}"
    clouds = {
        "sqlite": start_cloud(sqlite_url, **lax),
        "postgres": start_cloud(pg_session_url, **lax),
    }
    try:
        yield Pair(clouds)
    finally:
        for cloud in clouds.values():
            cloud.stop()


def outcome(cloud: Cloud, key: Ed25519PrivateKey, body: bytes) -> tuple[Any, ...]:
    before = cloud.service().store.count_events(KIOSK)
    response = cloud.signed(KIOSK, key, body)
    assert response.status_code < 500, response.text
    data = response.json()
    stored = cloud.service().store.count_events(KIOSK) - before
    if response.status_code == 200:
        assert stored == len(data["accepted"])
        return 200, sorted(data["accepted"]), sorted(data["duplicate"])
    assert stored == 0, "a refused batch stored something"
    rejected = [(r["index"], r["id"], r["reason"]) for r in data["rejected"]]
    return response.status_code, data["error"], rejected


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(body=BODIES)
def test_both_stores_answer_any_batch_alike_and_never_5xx(pair: Pair, body: bytes) -> None:
    answers = {name: outcome(cloud, pair.key, body) for name, cloud in pair.clouds.items()}
    assert answers["sqlite"] == answers["postgres"], body[:300]
