"""Event envelope, payloads, classes and the committed JSON Schemas."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from cloud_sync.errors import EventError
from cloud_sync.event_schemas import SCHEMAS_DIR, json_schemas, render_schema
from cloud_sync.events import (
    CLASS_OF,
    PAYLOADS,
    Event,
    check_occurred_at,
    parse_event,
)


def raw(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(ULID()),
        "kiosk_id": "kiosk-a",
        "seq": 1,
        "type": "slot.fault",
        "occurred_at": "2026-03-01T10:00:00+01:00",
        "schema": 1,
        "payload": {"slot": 3, "code": "jam"},
    }
    data.update(overrides)
    return data


def test_committed_schemas_are_up_to_date() -> None:
    wanted = json_schemas()
    committed = {path.name for path in SCHEMAS_DIR.glob("*.json")}
    assert committed == set(wanted), "run: python -m cloud_sync.events"
    for name, schema in wanted.items():
        assert (SCHEMAS_DIR / name).read_text(encoding="utf-8") == render_schema(schema), (
            f"{name} is stale; run: python -m cloud_sync.events"
        )


def test_every_type_has_a_payload_a_class_and_a_schema() -> None:
    assert set(PAYLOADS) == set(CLASS_OF)
    assert {f"payload.{t}.json" for t in PAYLOADS} <= set(json_schemas())
    for required in ("rental.started", "rental.returned", "boarding.recorded"):
        assert CLASS_OF[required] == "money"
    assert CLASS_OF["face.unrecognised"] == "telemetry"


def test_a_valid_event_is_stored_in_utc_and_round_trips() -> None:
    event = parse_event(raw())
    assert event.occurred_at == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert Event.model_validate_json(event.to_json()) == event
    assert '"schema":1' in event.to_json()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"type": "x.y"}, "unknown event type 'x.y'"),
        ({"type": 5}, "unknown event type"),
        ({"schema": 2}, "unsupported schema version"),
        ({"schema": True}, "unsupported schema version"),
        ({"seq": 0}, "seq"),
        ({"seq": 2**63}, "seq"),
        ({"id": "not-a-ulid"}, "id"),
        ({"kiosk_id": "Kiosk A"}, "kiosk_id"),
        ({"occurred_at": "2026-03-01T10:00:00"}, "time zone"),
        ({"payload": {"slot": 3}}, "payload.code"),
        ({"payload": [1]}, "payload: must be a JSON object"),
        ({"payload": {"slot": 3, "code": "jam", "image": "..."}}, "payload.image"),
        (
            {
                "type": "face.recognised",
                "payload": {"person_id": "p", "distance": float("nan"), "model": "m"},
            },
            "payload.distance",
        ),
    ],
)
def test_bad_events_are_refused_with_the_field_named(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(EventError, match=reason.replace("(", r"\(").replace(".", r"\.")):
        parse_event(raw(**overrides))


def test_future_timestamps_are_refused_past_the_bound() -> None:
    event = parse_event(raw())
    now = event.occurred_at - timedelta(minutes=30)
    check_occurred_at(event, now, timedelta(hours=1))
    with pytest.raises(EventError, match="in the future"):
        check_occurred_at(event, now, timedelta(minutes=10))


@given(st.text(max_size=40), st.integers(), st.sampled_from(sorted(PAYLOADS)))
def test_parse_event_never_raises_anything_but_event_error(text: str, seq: int, kind: str) -> None:
    with contextlib.suppress(EventError):
        parse_event(raw(id=text, seq=seq, type=kind, payload={"slot": text}))
