"""Reading a batch off the wire: gzip bounds, JSON, the envelope, per-event reasons."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ulid import ULID

from cloud_sync.server.ingest import Limits, decode_body, parse_batch
from cloud_sync.server.problems import Problem

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits(max_decoded_bytes=10_000, max_batch_events=3, max_future=timedelta(hours=1))


def event(seq: int, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(ULID()),
        "kiosk_id": "kiosk-a",
        "seq": seq,
        "type": "kiosk.started",
        "occurred_at": NOW.isoformat(),
        "schema": 1,
        "payload": {"version": "1.0", "mode": "rental"},
    }
    return data | overrides


def body(events: list[dict[str, Any]], kiosk_id: str = "kiosk-a") -> bytes:
    return json.dumps({"kiosk_id": kiosk_id, "batch_id": str(ULID()), "events": events}).encode()


def problem(call: Any) -> Problem:
    with pytest.raises(Problem) as caught:
        call()
    return caught.value


def test_gzip_is_decoded_within_the_bound() -> None:
    assert decode_body(gzip.compress(b"x" * 100), "gzip", 10_000) == b"x" * 100
    assert decode_body(b"plain", None, 10) == b"plain"
    bomb = gzip.compress(b"0" * 1_000_000)
    assert problem(lambda: decode_body(bomb, "gzip", 10_000)).status == 413
    assert problem(lambda: decode_body(b"junk", "gzip", 10_000)).code == "malformed_gzip"
    assert (
        problem(lambda: decode_body(gzip.compress(b"x" * 100)[:-10], "gzip", 10_000)).status == 400
    )
    assert problem(lambda: decode_body(b"", "br", 10)).status == 415


def test_a_good_batch_parses() -> None:
    batch, events = parse_batch(body([event(1), event(2)]), "kiosk-a", LIMITS, NOW)
    assert [e.seq for e in events] == [1, 2] and batch.kiosk_id == "kiosk-a"


def test_too_many_events_is_413_before_any_validation() -> None:
    assert problem(lambda: parse_batch(body([{}] * 4), "kiosk-a", LIMITS, NOW)).status == 413


def test_a_batch_for_another_kiosk_is_403() -> None:
    found = problem(lambda: parse_batch(body([event(1)], "kiosk-b"), "kiosk-a", LIMITS, NOW))
    assert (found.status, found.code) == (403, "wrong_kiosk")


def test_each_bad_event_is_named_by_index() -> None:
    events = [
        event(1),
        event(2, type="nope"),
        event(3, occurred_at=(NOW + timedelta(hours=2)).isoformat()),
    ]
    found = problem(lambda: parse_batch(body(events), "kiosk-a", LIMITS, NOW))
    assert found.status == 422
    assert [(r.index, r.reason.split(":")[0]) for r in found.rejected] == [
        (1, "type"),
        (2, "occurred_at"),
    ]


def test_an_id_twice_in_one_batch_is_rejected() -> None:
    first = event(1)
    found = problem(lambda: parse_batch(body([first, {**first, "seq": 2}]), "kiosk-a", LIMITS, NOW))
    assert "twice" in found.rejected[0].reason


def test_an_unreadable_id_is_reported_as_null() -> None:
    found = problem(lambda: parse_batch(body([event(1, id=["x"])]), "kiosk-a", LIMITS, NOW))
    assert found.rejected[0].id is None


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=60),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.lists(JSON_VALUES, min_size=1, max_size=3).map(
            lambda items: body([{**event(1), "payload": item} for item in items])
        ),
        st.tuples(st.sampled_from(sorted(event(1))), JSON_VALUES).map(
            lambda change: body([event(1) | {change[0]: change[1]}])
        ),
    )
)
def test_the_parser_answers_anything_with_a_4xx_or_events(data: bytes) -> None:
    try:
        _, events = parse_batch(data, "kiosk-a", LIMITS, NOW)
    except Problem as refused:
        assert 400 <= refused.status < 500
        for item in refused.rejected:  # what the answer echoes can always be encoded
            json.dumps(item.model_dump(), ensure_ascii=False).encode()
    else:
        assert all(e.kiosk_id == "kiosk-a" for e in events)


def test_json_that_is_not_strict_is_refused_before_any_event() -> None:
    for raw in (b'{"a": NaN}', b'{"a": 1, "a": 2}', b"[1e999]", b'"\xed\xa0\x80"'):
        found = problem(lambda raw=raw: parse_batch(raw, "kiosk-a", LIMITS, NOW))
        assert (found.status, found.code) == (400, "malformed_json"), raw


def test_a_schema_version_of_any_json_type_is_named_not_crashed() -> None:
    events = [event(1, schema=[]), event(2, schema={}), event(3, schema="1"), event(4, schema=1.0)]
    found = problem(
        lambda: parse_batch(body(events), "kiosk-a", Limits(10_000, 9, LIMITS.max_future), NOW)
    )
    assert [r.reason.split(":")[0] for r in found.rejected] == ["schema"] * 4
