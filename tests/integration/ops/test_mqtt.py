"""The kiosk's MQTT link against a real mosquitto: state, last will, telemetry, commands."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.cli import app as cloud_app
from cloud_sync.cli_runner import run_app
from cloud_sync.config import MqttConfig
from cloud_sync.exits import CLOUD_EXIT_CODES
from cloud_sync.logs import configure_logging
from cloud_sync.mqtt.client import KioskMqtt
from cloud_sync.mqtt.commands import Command, canonical, new_command, sign_command
from cloud_sync.mqtt.executor import CommandExecutor, Handler
from cloud_sync.mqtt.ledger import CommandLedger
from cloud_sync.mqtt.telemetry import Telemetry, Topics
from cloud_sync.outbox import Outbox
from edge.ops.maintenance import read_maintenance
from edge.ops.remote import open_kiosk_mqtt
from edge.settings import load_settings
from tests.conftest import REPO, free_port
from tests.integration.ops.broker import Broker, Watcher, mosquitto

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]

KEY = Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


_counter = iter(range(1, 10_000))


@pytest.fixture
def kiosk_id() -> str:
    """A fresh id per test: sessions are persistent, so ids must not be shared."""
    return f"kiosk-t{os.getpid()}-{next(_counter)}"


def config(broker: Broker, **over: Any) -> MqttConfig:
    return MqttConfig(enabled=True, host=broker.host, port=broker.port, **over)


class Counting:
    """Handlers that count their calls, like a board that counts ejects."""

    def __init__(self) -> None:
        self.calls: list[Command] = []

    def eject(self, command: Command) -> dict[str, Any]:
        self.calls.append(command)
        return {"slot": command.args["slot"], "powerbank_id": "PB-1"}


def link(
    broker: Broker, kiosk_id: str, state_dir: Path, handlers: dict[str, Handler], **over: Any
) -> KioskMqtt:
    executor = CommandExecutor(
        kiosk_id=kiosk_id,
        public_key=KEY.public_key(),
        ledger=CommandLedger(state_dir / "commands.sqlite"),
        handlers=handlers,
        slots=8,
    )
    started = KioskMqtt(config(broker, **over), kiosk_id, version="test", executor=executor)
    return started.start()


def wait_connected(kiosk: KioskMqtt, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not kiosk.listening:  # connected and subscribed: a command sent now arrives
        assert time.monotonic() < deadline, f"not listening: {kiosk.status()}"
        time.sleep(0.02)


def command(
    kiosk_id: str, name: str = "eject", args: dict[str, Any] | None = None, ttl: int = 60
) -> bytes:
    made = new_command(
        kiosk_id, name, {"slot": 3} if args is None else args, ttl, time.time(), "ops:test"
    )
    return sign_command(KEY, made)


def resign(fields: dict[str, Any]) -> bytes:
    """Sign any fields with the real key (as a buggy or newer cloud might)."""
    body = {key: value for key, value in fields.items() if key != "signature"}
    signature = base64.b64encode(KEY.sign(canonical(body))).decode()
    return json.dumps({**body, "signature": signature}).encode()


def test_retained_state_is_online_then_offline_on_a_clean_stop(
    broker: Broker, kiosk_id: str, tmp_path: Path
) -> None:
    topics = Topics.for_kiosk(kiosk_id)
    kiosk = link(broker, kiosk_id, tmp_path, {})
    try:
        wait_connected(kiosk)
        watcher = Watcher(broker, topics.state)  # subscribes after: gets the retained message
        online = watcher.next(topics.state)
        assert online["state"] == "online" and online["kiosk_id"] == kiosk_id
    finally:
        kiosk.stop()
    assert watcher.next(topics.state)["state"] == "offline"
    watcher.close()
    late = Watcher(broker, topics.state)
    assert late.next(topics.state) == {"v": 1, "state": "offline", "kiosk_id": kiosk_id,
                                       "version": "test", "reason": "stopped"}  # fmt: skip
    late.close()


def test_the_last_will_says_offline_when_the_process_is_killed(
    broker: Broker, kiosk_id: str
) -> None:
    topics = Topics.for_kiosk(kiosk_id)
    watcher = Watcher(broker, topics.state)
    peer = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.ops.peer", broker.host, str(broker.port), kiosk_id],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert peer.stdout is not None
        assert peer.stdout.readline().strip() == "connected"
        assert watcher.next(topics.state)["state"] == "online"
        peer.send_signal(signal.SIGKILL)
        peer.wait(10)
        will = watcher.next(topics.state)
        assert will["state"] == "offline" and will["reason"] == "connection lost"
    finally:
        peer.kill()
        peer.wait()
        watcher.close()


def test_a_signed_eject_delivered_twice_ejects_once_even_across_a_restart(
    broker: Broker, kiosk_id: str, tmp_path: Path
) -> None:
    topics = Topics.for_kiosk(kiosk_id)
    board = Counting()
    watcher = Watcher(broker, topics.result)
    raw = command(kiosk_id)
    command_id = json.loads(raw)["id"]

    def answer() -> Any:
        return watcher.next(topics.result, where=lambda r: r["id"] == command_id)

    kiosk = link(broker, kiosk_id, tmp_path, {"eject": board.eject})
    try:
        wait_connected(kiosk)
        watcher.publish(topics.command, raw)
        watcher.publish(topics.command, raw)
        first, second = answer(), answer()
    finally:
        kiosk.stop()
    assert first["status"] == "ok" and first["data"] == {"slot": 3, "powerbank_id": "PB-1"}
    assert second["status"] == "rejected" and second["reason"] == "replayed"
    restarted = link(broker, kiosk_id, tmp_path, {"eject": board.eject})
    try:
        wait_connected(restarted)
        watcher.publish(topics.command, raw)
        assert answer()["reason"] == "replayed"
    finally:
        restarted.stop()
        watcher.close()
    assert len(board.calls) == 1


def test_tampered_expired_oversize_and_out_of_range_commands_do_nothing(
    broker: Broker, kiosk_id: str, tmp_path: Path
) -> None:
    topics = Topics.for_kiosk(kiosk_id)
    board = Counting()
    watcher = Watcher(broker, topics.result)
    kiosk = link(broker, kiosk_id, tmp_path, {"eject": board.eject})
    try:
        wait_connected(kiosk)
        tampered = json.loads(command(kiosk_id))
        tampered["args"]["slot"] = 5
        expired = new_command(kiosk_id, "eject", {"slot": 3}, 60, time.time() - 600, "ops:test")
        unsigned = json.loads(command(kiosk_id))
        del unsigned["signature"]
        for raw in (
            json.dumps(tampered).encode(),
            sign_command(KEY, expired),
            json.dumps(unsigned).encode(),
            command(kiosk_id, args={"slot": 99}),
            resign({**json.loads(command(kiosk_id)), "name": "self-destruct", "args": {}}),
            b"\x00\xff garbage",
            b'{"padding": "' + b"x" * 60_000 + b'"}',
            sign_command(Ed25519PrivateKey.generate(), expired),
        ):
            watcher.publish(topics.command, raw)
        ping = command(kiosk_id, name="ping", args={"echo": "last"})
        watcher.publish(topics.command, ping)
        results: list[dict[str, Any]] = []
        while not results or results[-1]["name"] != "ping":  # commands run in order
            results.append(watcher.next(topics.result))
    finally:
        kiosk.stop()
        watcher.close()
    assert board.calls == []
    # Only authentic commands are answered: expired, slot 99, unknown; then the ping.
    assert [(r["status"], r["reason"]) for r in results] == [
        ("rejected", "expired"), ("rejected", "bad_args"), ("rejected", "unknown_command"),
        ("ok", None),
    ]  # fmt: skip
    assert results[-1]["data"] == {"pong": True, "echo": "last"}
    assert kiosk.status().commands_received == 9


def test_publishing_never_blocks_when_the_broker_is_down_or_silent(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts connections in the kernel, never answers a CONNECT
    try:
        for port in (free_port(), silent.getsockname()[1]):
            kiosk = KioskMqtt(
                MqttConfig(enabled=True, host="127.0.0.1", port=port, queue_size=50),
                f"kiosk-down-{port}",
                version="test",
            ).start()
            started = time.monotonic()
            accepted = [kiosk.publish("kiosk/x/telemetry", b"{}") for _ in range(1000)]
            spent = time.monotonic() - started
            status = kiosk.status()
            kiosk.stop(timeout=1)
            assert spent < 5, f"1000 publishes took {spent:.1f} s"  # loose: never blocked
            assert accepted.count(True) == 50 and status.dropped == 950
            assert not status.connected and status.queued == 50
    finally:
        silent.close()


def test_the_link_reconnects_when_the_broker_comes_back(kiosk_id: str, tmp_path: Path) -> None:
    port = free_port()
    topics = Topics.for_kiosk(kiosk_id)
    with ExitStack() as stack:
        first = ExitStack()
        stack.push(first)
        broker = first.enter_context(mosquitto(tmp_path / "a", port))
        kiosk = KioskMqtt(
            MqttConfig(enabled=True, host=broker.host, port=port, reconnect_max_s=2),
            kiosk_id,
            version="test",
        ).start()
        stack.callback(kiosk.stop, 1)
        wait_connected(kiosk)
        first.close()  # the broker goes away
        deadline = time.monotonic() + 10
        while kiosk.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not kiosk.connected
        assert kiosk.publish(topics.telemetry, b'{"while": "away"}')
        again = stack.enter_context(mosquitto(tmp_path / "b", port))
        watcher = Watcher(again, topics.state)
        stack.callback(watcher.close)
        assert watcher.next(topics.state, timeout=15)["state"] == "online"


def cloud(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``kiosk-cloud ARGS`` in this process (a subprocess costs seconds on a busy machine)."""
    code = run_app(cloud_app, "kiosk-cloud", CLOUD_EXIT_CODES, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_kiosk_cloud_command_send_against_a_kiosk_built_from_its_settings(
    broker: Broker, kiosk_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(kiosk_id, fmt="json")  # the kiosk's logs on stderr, results on stdout
    key = tmp_path / "command-key.pem"
    code, public, _ = cloud(capsys, "command", "keygen", "--key", str(key))
    assert code == 0 and oct(key.stat().st_mode & 0o777) == "0o600"
    assert cloud(capsys, "command", "public-key", "--key", str(key))[1] == public
    assert cloud(capsys, "command", "keygen", "--key", str(key))[0] == 4  # never overwritten
    state_dir = tmp_path / "state"
    settings = load_settings(
        None,
        kiosk={"id": kiosk_id, "state_dir": str(state_dir)},
        mqtt={"enabled": True, "host": broker.host, "port": broker.port,
              "command_public_key": public.strip(), "telemetry_interval_s": 1},
    )  # fmt: skip
    outbox = Outbox(settings.outbox_path, kiosk_id)
    snapshots = threading.Event()

    def snapshot() -> Telemetry:
        snapshots.set()
        return Telemetry(slots={"ready": 5}, outbox_pending=outbox.stats().pending_total)

    kiosk = open_kiosk_mqtt(settings, {}, snapshot=snapshot, outbox=outbox)
    send = ["command", "send", "--kiosk", kiosk_id, "--broker", f"{broker.host}:{broker.port}",
            "--key", str(key), "--timeout", "10"]  # fmt: skip
    try:
        wait_connected(kiosk)
        assert snapshots.wait(10)
        on = cloud(
            capsys, *send, "--name", "maintenance-on", "--arg", "reason=door", "--issuer", "asha"
        )
        refused = cloud(capsys, *send, "--name", "eject", "--arg", "slot=99")
        unsupported = cloud(capsys, *send, "--name", "eject", "--arg", "slot=2")
    finally:
        kiosk.stop()
    assert on[0] == 0, on[2]
    assert json.loads(on[1])["status"] == "ok"
    flag = read_maintenance(state_dir)
    assert flag is not None and flag.operator == "remote:asha" and flag.via == "remote"
    [event] = outbox.events()
    assert event.type == "kiosk.maintenance" and event.payload.operator == "remote:asha"  # type: ignore[union-attr]
    outbox.close()
    assert refused[0] == 7 and json.loads(refused[1])["reason"] == "bad_args"
    assert "answered rejected: bad_args" in refused[2]
    assert json.loads(unsupported[1])["reason"] == "unsupported"  # no eject handler was given
    gone = cloud(capsys, "command", "send", "--kiosk", "kiosk-nobody", "--name", "ping",
                 "--broker", f"{broker.host}:{broker.port}", "--key", str(key), "--timeout", "1")  # fmt: skip
    assert gone[0] == 7 and "no result from kiosk-nobody" in gone[2]
    nowhere = cloud(capsys, "command", "send", "--kiosk", kiosk_id, "--name", "ping",
                    "--broker", f"127.0.0.1:{free_port()}", "--key", str(key), "--timeout", "2")  # fmt: skip
    assert nowhere[0] == 7 and "cannot connect to the broker" in nowhere[2]


def test_telemetry_and_home_assistant_discovery(broker: Broker, kiosk_id: str) -> None:
    topics = Topics.for_kiosk(kiosk_id)
    discovery = f"homeassistant/sensor/{kiosk_id}/outbox_pending/config"
    watcher = Watcher(broker, topics.telemetry, discovery)
    kiosk = KioskMqtt(
        config(broker, telemetry_interval_s=1, ha_discovery=True),
        kiosk_id,
        version="test",
        snapshot=lambda: Telemetry(slots={"ready": 4, "empty": 4}, outbox_pending=7,
                                   recognitions={"recognised": 3}, versions={"kiosk": "test"}),
    ).start()  # fmt: skip
    try:
        telemetry = watcher.next(topics.telemetry)
        announced = watcher.next(discovery)
    finally:
        kiosk.stop()
        watcher.close()
    assert telemetry["kiosk_id"] == kiosk_id and telemetry["outbox_pending"] == 7
    assert telemetry["slots"] == {"ready": 4, "empty": 4}
    assert telemetry["recognitions"] == {"recognised": 3}
    assert isinstance(telemetry["temperatures"], dict)
    assert announced["state_topic"] == topics.telemetry
