"""Field operations' pure parts: who may operate, dates, telemetry, discovery, metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud_sync.errors import InputError
from cloud_sync.mqtt.telemetry import (
    Telemetry,
    Topics,
    discovery_messages,
    read_temperatures,
    telemetry_message,
)
from cloud_sync.outbox_schema import Stats
from edge.cli.auth import may_operate
from edge.ops.event_log import parse_when
from edge.ops.metrics import HealthReport, KioskMetrics, mount_ops
from edge.ops.status import clock_part


def test_who_may_change_the_kiosk() -> None:
    assert may_operate(0, [], None, None)  # root
    assert may_operate(1001, [100, 2000], 2000, 999)  # kiosk-tech member
    assert may_operate(999, [], None, 999)  # the service user owning the state folder
    assert not may_operate(1001, [100], 2000, 999)
    assert not may_operate(1001, [100], None, None)  # no such group on this machine


def test_dates_for_exports() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_when("2026-02-01") == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_when("2026-02-01T08:30") == datetime(2026, 2, 1, 8, 30, tzinfo=UTC)
    assert parse_when("2026-02-01T08:30+02:00").astimezone(UTC).hour == 6
    assert parse_when("24h", now) == datetime(2026, 2, 28, 12, 0, tzinfo=UTC)
    assert parse_when("90m", now) == datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    with pytest.raises(InputError, match="not a date"):
        parse_when("yesterday")


def test_a_clock_never_set_is_a_problem_and_ntp_state_is_read() -> None:
    assert clock_part(datetime(1970, 1, 1, tzinfo=UTC)).ok is False
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert clock_part(now, None).ok is None
    synced = clock_part(now, {"NTPSynchronized": "yes", "Timezone": "Europe/Madrid"})
    assert synced.ok and synced.timezone == "Europe/Madrid"
    assert clock_part(now, {"NTPSynchronized": "no"}).ok is False


def test_temperatures_come_from_thermal_zones(tmp_path: Path) -> None:
    for index, (kind, millis) in enumerate([("cpu-thermal", "48312"), ("cpu-thermal", "51000")]):
        zone = tmp_path / f"thermal_zone{index}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(millis + "\n")
    broken = tmp_path / "thermal_zone9"
    broken.mkdir()
    (broken / "temp").write_text("n/a")
    assert read_temperatures(tmp_path) == {"cpu-thermal": 48.3, "cpu-thermal-1": 51.0}
    assert read_temperatures(tmp_path / "absent") == {}
    message = telemetry_message(Telemetry(outbox_pending=3), "kiosk-0042", 12.34, tmp_path)
    assert message.cpu_temperature == 51.0 and message.uptime_s == 12.3
    given = telemetry_message(Telemetry(temperatures={"board": 30.0}), "kiosk-0042", 1, tmp_path)
    assert given.temperatures == {"board": 30.0}


def test_home_assistant_discovery_points_at_the_kiosk_topics() -> None:
    topics = Topics.for_kiosk("kiosk-0042")
    assert topics.result == "kiosk/kiosk-0042/cmd/result"
    messages = dict(discovery_messages("kiosk-0042", topics, "0.1.0"))
    config = json.loads(messages["homeassistant/sensor/kiosk-0042/outbox_pending/config"])
    assert config["state_topic"] == topics.telemetry
    assert config["availability"][0]["topic"] == topics.state
    assert config["unique_id"] == "kiosk-0042_outbox_pending"
    assert "homeassistant/binary_sensor/kiosk-0042/maintenance/config" in messages


def _stats(error_at: str | None) -> Stats:
    return Stats(
        pending={"money": 2, "ops": 1, "telemetry": 0},
        oldest_pending_age_s=42.0,
        sent=5,
        quarantined=0,
        dropped={"telemetry": 0, "ops": 0},
        bytes_used=1000,
        max_bytes=10_000,
        last_seq=8,
        last_success_at="2026-01-01T00:00:00+00:00",
        last_error="timeout" if error_at else None,
        last_error_at=error_at,
    )


def test_metrics_and_healthz_on_the_rider_app() -> None:
    errors = iter([None, "2026-01-01T00:01:00+00:00", "2026-01-01T00:01:00+00:00"])
    metrics = KioskMetrics("kiosk-0042", "0.1.0", outbox_stats=lambda: _stats(next(errors)))
    metrics.rentals.labels("started").inc()
    metrics.returns.inc(2)
    metrics.recognitions.labels("unrecognised").inc()
    metrics.decision_seconds.observe(0.4)
    metrics.board_errors.labels("timeout").inc()
    assert metrics.counts() == {
        "rentals_started": 1, "rentals_failed": 0, "returns": 2, "recognised": 0,
        "unrecognised": 1, "ambiguous": 0, "liveness": 0, "no_face": 0, "claim": 0,
    }  # fmt: skip

    app = FastAPI()

    @app.get("/healthz")
    def plain() -> dict[str, str]:
        return {"status": "ok"}

    healthy = {"board": True}
    mount_ops(app, metrics, lambda: HealthReport({"camera": True, **healthy}))
    client = TestClient(app)
    assert client.get("/healthz").json()["checks"] == {"camera": True, "board": True}
    assert client.get("/healthz").json()["version"] == "0.1.0"  # kiosk update checks it
    healthy["board"] = False
    answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.json()["status"] == "degraded"
    texts = [client.get("/metrics").text for _ in range(2)]
    assert 'kiosk_rentals_total{result="started"} 1.0' in texts[0]
    assert 'kiosk_outbox_pending_events{class="money"} 2.0' in texts[0]
    assert "kiosk_decision_seconds_bucket" in texts[0]
    assert 'kiosk_board_errors_total{kind="timeout"} 1.0' in texts[0]
    assert "kiosk_sync_errors_total 0.0" in texts[0]
    assert "kiosk_sync_errors_total 1.0" in texts[1]  # the outbox's last error changed once
    assert "kiosk_sync_failing 1.0" in texts[1]


def test_the_runtime_helpers_for_telemetry_and_runtime_json() -> None:
    from cloud_sync.config import MqttConfig
    from cloud_sync.mqtt.client import KioskMqtt
    from edge.cabinet.slots import Slot, SlotState
    from edge.ops.remote import mqtt_component, telemetry_snapshot

    slots = [
        Slot(1, SlotState.READY, "PB-1", 95),
        Slot(2, SlotState.READY, "PB-2", 90, disabled=True),
        Slot(3, SlotState.EMPTY),
    ]
    counts = {"rentals_started": 4, "rentals_failed": 1, "returns": 3, "recognised": 5}
    snapshot = telemetry_snapshot(slots, _stats(None), counts, maintenance=True)
    assert snapshot.slots == {"ready": 1, "disabled": 1, "empty": 1}
    assert snapshot.outbox_pending == 3 and snapshot.outbox_oldest_age_s == 42.0
    assert snapshot.recognitions == {"recognised": 5}
    assert (snapshot.rentals, snapshot.returns, snapshot.maintenance) == (4, 3, True)

    assert mqtt_component(None).ok is None
    idle = KioskMqtt(MqttConfig(enabled=True, port=1), "kiosk-0042", version="t")
    assert mqtt_component(idle).model_dump(exclude={"since"}) == {
        "ok": False,
        "detail": "connecting to 127.0.0.1:1",
    }


def test_decision_outcomes_and_board_errors_are_counted_by_kind() -> None:
    from edge.flow.values import EjectFailed, EjectUnconfirmed, Tick
    from edge.ops.metrics import board_error_kind, decision_outcome
    from edge.runtime.board_worker import Refreshed

    assert decision_outcome(True, "match") == "recognised"
    assert decision_outcome(False, "liveness_failed") == "liveness"
    assert decision_outcome(False, "margin") == "ambiguous"
    assert decision_outcome(False, "unknown") == "unrecognised"
    assert board_error_kind(Refreshed(0.0, ok=False)) == "no_answer"
    assert board_error_kind(Refreshed(0.0, ok=True)) is None
    assert board_error_kind(EjectFailed(0.0, 2, "jammed")) == "jammed"
    assert board_error_kind(EjectUnconfirmed(0.0, 2)) == "unconfirmed"
    assert board_error_kind(Tick(0.0)) is None
    metrics = KioskMetrics("kiosk-0042", "0.1.0")
    metrics.decided(False, "margin", 0.3)
    metrics.seen(EjectFailed(0.0, 2, "jammed"))
    text = metrics.render().decode()
    assert 'kiosk_recognitions_total{outcome="ambiguous"} 1.0' in text
    assert 'kiosk_board_errors_total{kind="jammed"} 1.0' in text
    assert "kiosk_decision_seconds_count 1.0" in text


def test_the_offline_indicator_needs_a_failing_cloud_and_a_waiting_event() -> None:
    from dataclasses import replace

    from edge.ops.reporter import offline

    failing = _stats("2026-01-01T00:01:00+00:00")
    assert not offline(failing, after_s=60)  # the oldest event waits 42 s: not yet
    assert offline(failing, after_s=30)
    assert not offline(_stats(None), after_s=30)  # the last exchange worked
    assert offline(replace(_stats(None), last_success_at=None), after_s=30)  # never reached
    assert not offline(replace(failing, oldest_pending_age_s=None), after_s=30)  # nothing waits
    assert not offline(None)


def test_sync_now_finds_this_users_sync_daemons(tmp_path: Path) -> None:
    from edge.ops.wiring import sync_daemons

    for pid, argv in {
        "101": [".venv/bin/python", "/opt/kiosk/bin/kiosk", "sync", "run"],
        "102": ["/opt/kiosk/bin/kiosk", "--config", "/etc/kiosk.toml", "sync", "run"],
        "103": ["/opt/kiosk/bin/kiosk", "sync", "now"],
        "104": ["/usr/bin/rsync", "sync", "run"],
    }.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (tmp_path / "self").mkdir()
    assert sorted(sync_daemons(tmp_path)) == [101, 102]
