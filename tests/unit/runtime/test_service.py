"""The out-of-service reasons (``edge.runtime.service``) and the camera's health, with plain values."""

from __future__ import annotations

from edge.runtime.service import CameraHealth, Conditions, reason
from hardware.cameras.reconnect import CameraStatus

NOW = 1_800_000_000.0
HOUR = 3600.0


def ok(**changes: object) -> Conditions:
    values: dict[str, object] = {"now": NOW, "year": 2027, "roster_max_age_s": 72 * HOUR}
    return Conditions(**{**values, **changes})  # type: ignore[arg-type]


def test_a_healthy_kiosk_may_rent() -> None:
    assert reason(ok(roster_at=NOW - HOUR)) is None


def test_each_reason() -> None:
    assert reason(ok(maintenance=True)) == "maintenance"
    assert reason(ok(year=2001)) == "clock_not_set"
    assert reason(ok(disk_room=False)) == "disk_full"
    assert reason(ok(money_room=False)) == "outbox_full"
    assert reason(ok(roster_at=NOW - 73 * HOUR)) == "roster_too_old"
    assert reason(ok(camera_down="retrying")) == "camera_lost"
    assert reason(ok(board_online=False)) == "board_offline"


def test_a_roster_never_refreshed_is_not_judged_by_age() -> None:
    assert reason(ok(roster_at=None)) is None
    assert reason(ok(roster_at=NOW - 1000 * HOUR, roster_max_age_s=None)) is None


def test_the_first_reason_wins() -> None:
    everything = ok(
        maintenance=True,
        year=2001,
        money_room=False,
        roster_at=0.0,
        camera_down="lost",
        board_online=False,
    )
    assert reason(everything) == "maintenance"
    assert reason(ok(year=2001, roster_at=0.0)) == "clock_not_set"
    assert reason(ok(disk_room=False, money_room=False)) == "disk_full"  # the disk is the cause
    assert reason(ok(money_room=False, board_online=False)) == "outbox_full"


def test_camera_health_follows_the_camera_and_tells_listeners_of_changes() -> None:
    health = CameraHealth()
    calls: list[str | None] = []
    health.listen(lambda: calls.append(health.down))
    assert health.down is None
    health.update(CameraStatus("open", "camera delivering frames"))
    health.update(CameraStatus("lost", "device gone"))
    health.update(CameraStatus("retrying", "device gone", attempt=1, retry_in_s=0.5))
    health.update(CameraStatus("retrying", "device gone", attempt=2, retry_in_s=1.0))
    assert health.down == "retrying"
    health.update(CameraStatus("open", "camera delivering frames"))
    assert health.down is None
    assert calls == [None, "lost", "retrying", None]
