"""Every signed command is answered, and none is lost, through restarts, kills and floods.

Real parts: mosquitto on a free port (with its sessions saved across a restart where the
broker goes away), the kiosk's own ``KioskMqtt`` with the command ledger in a SQLite file,
a kiosk link in a subprocess that is SIGKILLed (``command_peer``), and an anonymous client
flooding the command topic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from cloud_sync.mqtt.commands import Command
from cloud_sync.mqtt.ledger import CommandLedger
from cloud_sync.mqtt.telemetry import Topics
from tests.conftest import REPO, free_port
from tests.integration.ops.broker import Broker, Watcher, mosquitto
from tests.integration.ops.test_mqtt import KEY, command, link, wait_connected

pytestmark = [pytest.mark.service, pytest.mark.timeout(90)]

_counter = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


@pytest.fixture
def kiosk_id() -> str:
    """A fresh id per test: sessions are persistent, so ids must not be shared."""
    return f"kiosk-d{time.monotonic_ns() % 10**9}-{next(_counter)}"


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def answers(watcher: Watcher, topic: str, command_id: str) -> list[dict[str, Any]]:
    return [r for r in watcher.all(topic) if r["id"] == command_id]


def test_a_result_is_sent_after_a_restart_when_the_broker_was_away_as_the_command_ended(
    kiosk_id: str, tmp_path: Path
) -> None:
    """The eject ends while the broker is down, the kiosk is restarted (an update, systemd)
    before the broker is back: the result, owed in the ledger, reaches the sender."""
    port, folder, state = free_port(), tmp_path / "broker", tmp_path / "state"
    state.mkdir()
    topics = Topics.for_kiosk(kiosk_id)
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def eject(command: Command) -> dict[str, Any]:
        ran.append(command.id)
        started.set()
        release.wait(20)
        return {"slot": command.args["slot"], "powerbank_id": "PB-1"}

    raw = command(kiosk_id, ttl=600)
    command_id = json.loads(raw)["id"]
    with mosquitto(folder, port, persistence=True) as first:
        sender = Watcher(first, topics.result, session=f"sender-{kiosk_id}")  # waits for it
        kiosk = link(first, kiosk_id, state, {"eject": eject}, reconnect_max_s=1)
        wait_connected(kiosk)
        sender.publish(topics.command, raw)
        assert started.wait(10)
    release.set()  # the broker is gone (its sessions saved); the eject ends meanwhile
    ledger = CommandLedger(state / "commands.sqlite")
    wait_for(lambda: ledger.recent()[0].status == "ok", 10, "the eject ends")
    kiosk.stop(timeout=1)
    with mosquitto(folder, port, persistence=True) as again:
        restarted = link(again, kiosk_id, state, {"eject": eject}, reconnect_max_s=1)
        try:
            answer = sender.next(topics.result, 20, where=lambda r: r["id"] == command_id)
            wait_for(lambda: ledger.owed() == [], 10, "the broker acknowledges the result")
            time.sleep(0.5)
        finally:
            restarted.stop()
            sender.close()
    assert answer["status"] == "ok" and answer["data"] == {"slot": 3, "powerbank_id": "PB-1"}
    assert all(r["status"] == "ok" for r in answers(sender, topics.result, command_id))
    assert ran == [command_id]
    ledger.close()


def peer(broker: Broker, kiosk_id: str, state: Path) -> subprocess.Popen[str]:
    public = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.ops.command_peer",
         broker.host, str(broker.port), kiosk_id, str(state), public],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=(state / "peer.log").open("a"), text=True, env={**os.environ, "EJECT_S": "3"},
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "listening", (state / "peer.log").read_text()
    return process


def calls(state: Path) -> list[str]:
    path = state / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_commands_waiting_when_the_kiosk_is_killed_are_run_or_answered_after_the_restart(
    broker: Broker, kiosk_id: str, tmp_path: Path
) -> None:
    """SIGKILL while an eject runs, a sync-now and a short-lived ping waiting behind it: after
    the restart the eject is answered "interrupted", the sync-now runs (once), the ping,
    expired meanwhile, is answered "expired"; a third start runs nothing again."""
    topics = Topics.for_kiosk(kiosk_id)
    watcher = Watcher(broker, topics.result)
    first = peer(broker, kiosk_id, tmp_path)
    eject = command(kiosk_id, ttl=600)
    sync = command(kiosk_id, name="sync-now", args={}, ttl=600)
    ping = command(kiosk_id, name="ping", args={}, ttl=2)
    ids = [json.loads(raw)["id"] for raw in (eject, sync, ping)]
    try:
        for raw in (eject, sync, ping):
            watcher.publish(topics.command, raw)
        wait_for(lambda: calls(tmp_path) == [f"eject-start {ids[0]}"], 10, "the eject starts")
        time.sleep(0.3)  # the sync-now and the ping are in the kiosk's memory now
    finally:
        first.kill()
        first.wait(10)
    wait_for(lambda: time.time() > json.loads(ping)["expires_at"] + 0.5, 5, "the ping expires")
    second = peer(broker, kiosk_id, tmp_path)
    try:
        got = {i: watcher.next(topics.result, 20, where=lambda r, i=i: r["id"] == i) for i in ids}
    finally:
        second.communicate("", timeout=15)  # a clean stop
    assert got[ids[0]]["status"] == "error" and "interrupted" in got[ids[0]]["detail"]
    assert got[ids[1]]["status"] == "ok" and got[ids[1]]["data"] == {"woken": 1}
    assert (got[ids[2]]["status"], got[ids[2]]["reason"]) == ("rejected", "expired")
    third = peer(broker, kiosk_id, tmp_path)  # nothing left to deliver or to answer
    try:
        watcher.publish(topics.command, sync)  # replayed by hand: refused, never run again
        replayed = watcher.next(topics.result, 20, where=lambda r: r["id"] == ids[1])
    finally:
        third.communicate("", timeout=15)
        watcher.close()
    assert replayed["reason"] == "replayed"
    assert calls(tmp_path) == [f"eject-start {ids[0]}", f"sync {ids[1]}"]
    ledger = CommandLedger(tmp_path / "commands.sqlite")
    statuses = {e.id: e.status for e in ledger.recent()}
    assert statuses == {ids[0]: "error", ids[1]: "ok", ids[2]: "rejected"}
    assert ledger.owed() == []
    ledger.close()


def test_a_flood_of_unsigned_junk_crowds_out_no_signed_command_and_logs_one_summary(
    broker: Broker, kiosk_id: str, tmp_path: Path
) -> None:
    topics = Topics.for_kiosk(kiosk_id)

    def slow_ping(command: Command) -> dict[str, Any]:
        time.sleep(0.05)  # a handler's realistic cost
        return {"pong": True}

    watcher = Watcher(broker, topics.result)
    attacker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="")
    attacker.connect(broker.host, broker.port)
    attacker.loop_start()
    stop = threading.Event()

    def flood() -> None:
        n = 0
        while not stop.is_set():
            attacker.publish(topics.command, b'{"v":1,"id":"junk%08d"}' % n, qos=n % 2)
            n += 1
            if n % 200 == 0:
                time.sleep(0.01)

    sent: list[str] = []
    with capture_logs() as logs:
        kiosk = link(broker, kiosk_id, tmp_path, {"ping": slow_ping})
        flooding = threading.Thread(target=flood)
        try:
            wait_connected(kiosk)
            flooding.start()
            time.sleep(1.0)
            for _ in range(5):
                raw = command(kiosk_id, name="ping", args={})
                sent.append(json.loads(raw)["id"])
                watcher.publish(topics.command, raw)
                time.sleep(0.3)
            got = [watcher.next(topics.result, 20, where=lambda r, i=i: r["id"] == i) for i in sent]
        finally:
            stop.set()
            if flooding.is_alive():
                flooding.join()
            status = kiosk.status()
            kiosk.stop()
            attacker.disconnect()
            attacker.loop_stop()
            watcher.close()
    assert [r["status"] for r in got] == ["ok"] * 5
    assert status.commands_junk > 1000 and status.commands_refused_busy == 0
    junk_lines = [e for e in logs if e["event"] == "command.junk"]
    assert len(junk_lines) == 1 and junk_lines[0]["reasons"] == {"unsigned": 1}  # the first
    assert not [e for e in logs if e["event"] == "command.ignored"]


def test_every_signed_command_is_answered_when_more_arrive_than_can_wait(
    broker: Broker, kiosk_id: str, tmp_path: Path
) -> None:
    """An eject holds the command thread while 24 pings arrive: the queue holds 16; the
    others are answered "busy" (or wait at the broker), never dropped unanswered."""
    topics = Topics.for_kiosk(kiosk_id)
    release = threading.Event()

    def eject(command: Command) -> dict[str, Any]:
        release.wait(20)
        return {"slot": 3}

    watcher = Watcher(broker, topics.result)
    kiosk = link(broker, kiosk_id, tmp_path, {"eject": eject})
    raws = [command(kiosk_id)] + [command(kiosk_id, name="ping", args={}) for _ in range(24)]
    ids = [json.loads(raw)["id"] for raw in raws]
    try:
        wait_connected(kiosk)
        for raw in raws:
            watcher.client.publish(topics.command, raw, qos=1)
        wait_for(lambda: kiosk.status().commands_received >= 20, 10, "20 commands arrive")
        time.sleep(0.5)
        release.set()
        got = [watcher.next(topics.result, 20, where=lambda r, i=i: r["id"] == i) for i in ids]
        time.sleep(0.5)
        extra = watcher.all(topics.result)
    finally:
        release.set()
        kiosk.stop()
        watcher.close()
    outcomes = [(r["status"], r["reason"]) for r in got]
    assert outcomes[0] == ("ok", None)
    assert set(outcomes[1:]) <= {("ok", None), ("rejected", "busy")}
    assert ("rejected", "busy") in outcomes and extra == []  # each answered exactly once
    assert kiosk.status().commands_refused_busy == outcomes.count(("rejected", "busy"))
