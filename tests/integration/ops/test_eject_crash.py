"""Never an eject without its event: a remote eject and a technician's ``kiosk eject``,
each SIGKILLed while the board ejects, are settled from the slot's status at the next start
and recorded exactly once; the remote command is answered and ends in ``commands.sqlite``.

Real parts: mosquitto on a free port, the board simulator on a pty with a slow eject (so
the kill lands while the board is ejecting), ``kiosk run`` and ``kiosk eject`` as
subprocesses, the outbox and the command ledger in SQLite files.
"""

from __future__ import annotations

import getpass
import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.mqtt.telemetry import Topics
from hardware.messages import SlotCondition
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from tests.helpers import BIN
from tests.integration.ops.broker import Broker, Watcher, mosquitto
from tests.integration.ops.test_run_ops import PUBLIC, Kiosk, signed
from tests.integration.runtime.test_runtime import BLANK_PNG, config, events, wait_for

pytestmark = [pytest.mark.service, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


@pytest.fixture
def board() -> Iterator[BoardSimulator]:
    """A cabinet whose latch takes 2.5 s to open; the powerbank is taken 0.3 s later."""
    sim = BoardSimulator(
        SimConfig(slots=4, filled=4, charge_rate=50, eject_s=2.5, take_after_s=0.3, seed=11)
    )
    sim.start()
    yield sim
    sim.stop()


def blank_config(state: Path, url: str, **sections: Any) -> Path:
    """A kiosk that never sees a face: only the ejects under test happen."""
    images = state / "frames"
    images.mkdir(exist_ok=True)
    (images / "blank.png").write_bytes(BLANK_PNG)
    return config(state, images, url, **sections)


def ejected(state: Path) -> list[dict[str, Any]]:
    """The payloads of the ``slot.ejected`` events in the kiosk's outbox, oldest first."""
    return [e["payload"] for e in events(state) if e["type"] == "slot.ejected"]  # type: ignore[misc]


def commands(state: Path) -> dict[str, str]:
    with sqlite3.connect(state / "commands.sqlite") as db:
        return dict(db.execute("SELECT id, status FROM commands").fetchall())


def emptied(board: BoardSimulator, slot: int) -> bool:
    return board.cabinet.slots[slot - 1].condition == SlotCondition.EMPTY


def kiosk_eject(path: Path, slot: int, reason: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "kiosk"), "--config", str(path), "eject", str(slot), "--reason", reason],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_mid_eject(process: subprocess.Popen[str], board: BoardSimulator) -> None:
    """SIGKILL ``process`` once the board took its eject (and before the latch opened)."""
    try:
        wait_for(lambda: len(board.ejects) == 1 or process.poll() is not None, 60)
        assert process.poll() is None, "it finished before the kill"
        assert board.cabinet.slots[board.ejects[0].slot - 1].condition == SlotCondition.EJECTING
    finally:
        process.kill()
        process.communicate()


def remote_mqtt(broker: Broker) -> dict[str, Any]:
    """The ``[mqtt]`` settings of a kiosk that takes signed commands from ``broker``."""
    return {"enabled": True, "host": broker.host, "port": broker.port,
            "command_public_key": PUBLIC}  # fmt: skip


def remote_eject_killed_mid_eject(
    path: Path, board: BoardSimulator, watcher: Watcher, topics: Topics
) -> bytes:
    """``kiosk run`` takes a signed remote eject of slot 2 and is SIGKILLed once the board
    took it (the latch still opening); the command as it was sent."""
    first = Kiosk(path)
    try:
        first.url()
        wait_for(lambda: first.status()["mqtt"]["ok"] is True, 60)
        raw = signed("kiosk-e2e", "eject", {"slot": 2, "reason": "stuck powerbank"})
        watcher.publish(topics.command, raw)
        try:
            wait_for(lambda: len(board.ejects) == 1, 60)
            assert board.cabinet.slots[1].condition == SlotCondition.EJECTING
        finally:
            first.process.kill()
            first.process.wait(10)
    finally:
        first.close()
    return raw


def test_a_remote_eject_killed_mid_eject_is_recorded_and_answered_after_a_restart(
    tmp_path: Path, board: BoardSimulator, broker: Broker
) -> None:
    topics = Topics.for_kiosk("kiosk-e2e")
    path = blank_config(tmp_path, board.path, mqtt=remote_mqtt(broker))
    powerbank = board.cabinet.slots[1].powerbank_id
    watcher = Watcher(broker, topics.result)
    command_id = json.loads(remote_eject_killed_mid_eject(path, board, watcher, topics))["id"]
    wait_for(lambda: emptied(board, 2), 20)  # the powerbank left while the kiosk was down
    assert ejected(tmp_path) == []
    assert commands(tmp_path)[command_id] == "running"

    second = Kiosk(path)
    try:
        answer = watcher.next(
            topics.result, 120, where=lambda r: r["id"] == command_id and r["status"] != "rejected"
        )
        wait_for(lambda: second.status()["runtime"].get("phase") == "idle", 60)
    finally:
        second.close()
        watcher.close()
    assert second.process.returncode == 0, second.output()[-3000:]
    assert answer["status"] == "ok", answer
    assert answer["data"] == {"slot": 2, "powerbank_id": powerbank, "outcome": "taken"}
    [payload] = ejected(tmp_path)
    assert (payload["slot"], payload["powerbank_id"], payload["outcome"]) == (2, powerbank, "taken")
    assert (payload["operator"], payload["reason"]) == ("remote:ops:test", "stuck powerbank")
    assert commands(tmp_path)[command_id] == "ok"
    assert len(board.ejects) == 1  # settled from the slot's status, never ejected again


def test_a_technician_eject_killed_mid_eject_is_recorded_once_at_the_next_kiosk_run(
    tmp_path: Path, board: BoardSimulator
) -> None:
    path = blank_config(tmp_path, board.path)
    powerbank = board.cabinet.slots[2].powerbank_id
    kill_mid_eject(kiosk_eject(path, 3, "customer locked out"), board)
    wait_for(lambda: emptied(board, 3), 20)
    assert ejected(tmp_path) == []
    kiosk = Kiosk(path)
    try:
        kiosk.url()
        wait_for(lambda: ejected(tmp_path), 60)
        time.sleep(2)  # a second settlement would come within this time
    finally:
        kiosk.close()
    [payload] = ejected(tmp_path)
    assert (payload["slot"], payload["powerbank_id"], payload["outcome"]) == (3, powerbank, "taken")
    assert (payload["operator"], payload["reason"]) == (getpass.getuser(), "customer locked out")
    assert len(board.ejects) == 1


def test_a_technician_eject_killed_mid_eject_is_settled_by_the_next_kiosk_eject(
    tmp_path: Path, board: BoardSimulator
) -> None:
    """The next command that owns the board settles it first; a jammed latch (the
    powerbank never left) is recorded as jammed, not as an eject."""
    path = blank_config(tmp_path, board.path)
    powerbank = board.cabinet.slots[2].powerbank_id
    board.act("jam", 3)
    kill_mid_eject(kiosk_eject(path, 3, "customer locked out"), board)
    wait_for(lambda: board.cabinet.slots[2].condition == SlotCondition.FAULT, 20)
    done = kiosk_eject(path, 1, "inspection")
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err[-3000:]
    assert "slot 3: an eject left unfinished" in out
    first, second = ejected(tmp_path)
    assert (first["slot"], first["powerbank_id"], first["outcome"]) == (3, powerbank, "jammed")
    assert (first["operator"], first["reason"]) == (getpass.getuser(), "customer locked out")
    assert (second["slot"], second["outcome"], second["reason"]) == (1, "presented", "inspection")
    assert [record.slot for record in board.ejects] == [3, 1]


def journal(state: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(state / "outbox.sqlite") as db:
        return db.execute("SELECT state, outcome FROM ejects").fetchall()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM])
def test_a_technician_eject_interrupted_mid_eject_finishes_and_records_it_first(
    tmp_path: Path, board: BoardSimulator, signum: signal.Signals
) -> None:
    """Ctrl-C, a closed terminal or a stop while the board ejects: the command waits for
    the board's answer, records the eject and prints it, then ends as the signal asks
    (Ctrl-C: 'kiosk: interrupted', exit 130); nothing is left for a later settlement."""
    path = blank_config(tmp_path, board.path)
    powerbank = board.cabinet.slots[2].powerbank_id
    process = kiosk_eject(path, 3, "customer locked out")
    try:
        wait_for(lambda: len(board.ejects) == 1 or process.poll() is not None, 60)
        assert process.poll() is None, "it finished before the signal"
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    [payload] = ejected(tmp_path)
    assert (payload["slot"], payload["powerbank_id"]) == (3, powerbank)
    assert payload["outcome"] in ("presented", "taken"), payload
    assert journal(tmp_path) == [("settled", payload["outcome"])]
    assert f"slot 3: powerbank {powerbank} {payload['outcome']}; event" in out
    if signum == signal.SIGINT:
        assert process.returncode == 130
        assert err.splitlines()[-1] == "kiosk: interrupted"
    else:
        assert process.returncode == -signum
    assert len(board.ejects) == 1
