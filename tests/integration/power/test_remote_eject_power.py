"""A remote ``eject`` cut by the power while the board ejects: the command's id (claimed
before it ran) and the eject's intent (written before the board was asked) survive the
cut, so after the reboot the kiosk records the eject once, answers the command, and never
ejects again when the command is delivered once more.

Real parts: mosquitto on a free port, ``kiosk run`` as a subprocess with its state folder
on LazyFS, the board simulator on a pty with a slow latch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.mqtt.telemetry import Topics
from hardware.sim import BoardSimulator
from tests.integration.ops import test_eject_crash
from tests.integration.ops.broker import Broker, Watcher, mosquitto
from tests.integration.ops.test_eject_crash import (
    blank_config,
    emptied,
    remote_eject_killed_mid_eject,
    remote_mqtt,
)
from tests.integration.ops.test_run_ops import Kiosk
from tests.integration.power.kit import earlier_boot, ejected, inspect
from tests.integration.power.lazyfs import PowerFolder
from tests.integration.runtime.test_runtime import wait_for

pytestmark = [pytest.mark.service, pytest.mark.timeout(240)]

board = test_eject_crash.board  # a cabinet with a slow latch: the cut lands while it ejects


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


def commands(state: Path) -> dict[str, str]:
    return dict(inspect(state / "commands.sqlite", "SELECT id, status FROM commands"))


def test_a_remote_eject_cut_by_the_power_is_recorded_and_answered_once(
    power: PowerFolder, broker: Broker, board: BoardSimulator
) -> None:
    state = power.path / "state"
    state.mkdir()
    topics = Topics.for_kiosk("kiosk-e2e")
    watcher = Watcher(broker, topics.result)
    try:
        path = blank_config(state, board.path, mqtt=remote_mqtt(broker))
        earlier_boot(power, state)  # provisioned
        powerbank = board.cabinet.slots[1].powerbank_id
        raw = remote_eject_killed_mid_eject(path, board, watcher, topics)
        command_id = json.loads(raw)["id"]
        power.cut()
        power.mount()
        wait_for(lambda: emptied(board, 2), 20)  # the powerbank left while the power was off
        assert ejected(state) == []
        assert commands(state)[command_id] == "running"  # claimed before it ran: kept

        second = Kiosk(path)
        try:
            answer = watcher.next(
                topics.result,
                120,
                where=lambda r: r["id"] == command_id and r["status"] != "rejected",
            )
            wait_for(lambda: second.status()["runtime"].get("phase") == "idle", 60)
            watcher.publish(topics.command, raw)  # delivered once more: not run again
            wait_for(lambda: ejected(state), 30)
        finally:
            second.close()
        power.cut()
        power.mount()
    finally:
        watcher.close()
    assert answer["status"] == "ok", answer
    assert answer["data"] == {"slot": 2, "powerbank_id": powerbank, "outcome": "taken"}
    [payload] = ejected(state)
    assert (payload["slot"], payload["powerbank_id"], payload["outcome"]) == (2, powerbank, "taken")
    assert commands(state)[command_id] == "ok"
    assert len(board.ejects) == 1  # settled from the slot's status, never ejected again
