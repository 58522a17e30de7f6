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
from hardware.messages import SlotCondition
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from tests.integration.ops.broker import Broker, Watcher, mosquitto
from tests.integration.ops.test_eject_crash import blank_config, emptied
from tests.integration.ops.test_run_ops import PUBLIC, Kiosk, signed
from tests.integration.power.kit import ejected, fsync_tree, inspect
from tests.integration.power.lazyfs import PowerFolder
from tests.integration.runtime.test_runtime import wait_for

pytestmark = [pytest.mark.service, pytest.mark.timeout(240)]


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


def commands(state: Path) -> dict[str, str]:
    return dict(inspect(state / "commands.sqlite", "SELECT id, status FROM commands"))


def test_a_remote_eject_cut_by_the_power_is_recorded_and_answered_once(
    power: PowerFolder, broker: Broker
) -> None:
    board = BoardSimulator(
        SimConfig(slots=4, filled=4, charge_rate=50, eject_s=2.5, take_after_s=0.3, seed=11)
    )
    board.start()
    state = power.path / "state"
    state.mkdir()
    topics = Topics.for_kiosk("kiosk-e2e")
    watcher = Watcher(broker, topics.result)
    try:
        mqtt = {"enabled": True, "host": broker.host, "port": broker.port,
                "command_public_key": PUBLIC}  # fmt: skip
        path = blank_config(state, board.path, mqtt=mqtt)
        fsync_tree(state)
        powerbank = board.cabinet.slots[1].powerbank_id
        first = Kiosk(path)
        try:
            first.url()
            wait_for(lambda: first.status()["mqtt"]["ok"] is True, 60)
            raw = signed("kiosk-e2e", "eject", {"slot": 2, "reason": "stuck powerbank"})
            command_id = json.loads(raw)["id"]
            watcher.publish(topics.command, raw)
            try:
                wait_for(lambda: len(board.ejects) == 1, 60)
                assert board.cabinet.slots[1].condition == SlotCondition.EJECTING
            finally:
                first.process.kill()
                first.process.wait(10)
        finally:
            first.close()
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
        board.stop()
    assert answer["status"] == "ok", answer
    assert answer["data"] == {"slot": 2, "powerbank_id": powerbank, "outcome": "taken"}
    [payload] = ejected(state)
    assert (payload["slot"], payload["powerbank_id"], payload["outcome"]) == (2, powerbank, "taken")
    assert commands(state)[command_id] == "ok"
    assert len(board.ejects) == 1  # settled from the slot's status, never ejected again
