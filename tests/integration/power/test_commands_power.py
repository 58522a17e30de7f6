"""Remote commands refused without running, cut by the power: a command answered "busy"
(no room to run it) whose acknowledgement never reached the broker is delivered again after
the reboot. It must not run then (its sender was told "busy, send it again" and will send a
new command: a second eject) and must not get a second, different answer.

Real parts: the command executor and ``commands.sqlite`` in a subprocess on LazyFS.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cloud_sync.mqtt.commands import Command, new_command, sign_command
from cloud_sync.mqtt.executor import CommandExecutor
from cloud_sync.mqtt.ledger import CommandLedger
from tests.integration.power.appliance import COMMAND_KEY, COMMAND_KIOSK
from tests.integration.power.kit import Part, fsync_tree
from tests.integration.power.lazyfs import PowerFolder

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


def test_a_command_answered_busy_before_a_cut_is_never_run_when_delivered_again(
    power: PowerFolder, tmp_path: Path
) -> None:
    state = power.path / "state"
    state.mkdir()
    fsync_tree(state)
    command = new_command(COMMAND_KIOSK, "eject", {"slot": 3}, 600, time.time(), "ops:test")
    raw = sign_command(COMMAND_KEY, command)
    (tmp_path / "command.json").write_bytes(raw)
    ledger_path = state / "commands.sqlite"
    part = Part("busy", str(ledger_path), str(tmp_path / "command.json"))
    try:
        part.wait_for(f"acknowledged {command.id}")
    finally:
        part.kill()  # the power goes before the acknowledgement leaves the kiosk
    power.cut()
    power.mount()

    ejects: list[Command] = []

    def eject(command: Command) -> dict[str, int]:
        ejects.append(command)
        return {"slot": 3}

    ledger = CommandLedger(ledger_path)
    try:
        executor = CommandExecutor(
            COMMAND_KIOSK,
            COMMAND_KEY.public_key(),
            ledger,
            {"eject": eject},
            slots=8,
        )
        again = executor.handle(raw, redelivered=True)  # the broker's redelivery (DUP)
        owed = [json.loads(r.payload) for r in ledger.owed() if r.command_id == command.id]
    finally:
        ledger.close()
    assert ejects == [] and again is None
    assert [(r["status"], r["reason"]) for r in owed] == [("rejected", "busy")]
