"""``kiosk run`` with its field operations: MQTT against a real mosquitto, ``runtime.json``
read by ``kiosk status``, ``/metrics`` and ``/healthz`` on the rider page's port.

The kiosk runs as a subprocess with the board simulator on a pty and a replay camera of
real rider photos, as in ``tests/integration/runtime/test_runtime.py``.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cloud_sync.mqtt.commands import new_command, sign_command
from cloud_sync.mqtt.telemetry import Topics
from hardware.sim import BoardSimulator
from models.encoder import FaceEngine
from tests.conftest import free_port
from tests.helpers import BIN
from tests.integration.ops.broker import Broker, Watcher, mosquitto
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import config, enrol, events, frames, types, wait_for

pytestmark = [pytest.mark.service, pytest.mark.timeout(240)]

board = test_runtime.board  # the cabinet of kiosk run's own end-to-end tests

KEY = Ed25519PrivateKey.generate()
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


class Kiosk:
    """``kiosk run`` as a subprocess; its stderr in a file, the rider page's url from it."""

    def __init__(self, config_path: Path) -> None:
        self.config = config_path
        self.log = config_path.with_name("kiosk-run.log")
        self._log = self.log.open("w")
        self.process = subprocess.Popen(
            [str(BIN / "kiosk"), "--log-format", "json", "--config", str(config_path), "run"],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            text=True,
        )

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def url(self, timeout: float = 90) -> str:
        found: list[str] = []

        def shown() -> bool:
            found[:] = re.findall(r"rider page: (http://\S+)", self.output())
            assert self.process.poll() is None, self.output()[-3000:]
            return bool(found)

        wait_for(shown, timeout)
        return found[0].rstrip("/")

    def status(self) -> dict[str, Any]:
        done = subprocess.run(
            [str(BIN / "kiosk"), "--config", str(self.config), "status", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def kiosk_config(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, url: str, mqtt: Any, **more: Any
) -> Path:
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=60)
    return config(tmp_path, images, url, mqtt=mqtt, **more)


def signed(kiosk_id: str, name: str, args: dict[str, Any]) -> bytes:
    return sign_command(KEY, new_command(kiosk_id, name, args, 120, time.time(), "ops:test"))


def test_kiosk_run_online_status_metrics_remote_eject_once_and_last_will(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator, broker: Broker
) -> None:
    topics = Topics.for_kiosk("kiosk-e2e")
    mqtt = {"enabled": True, "host": broker.host, "port": broker.port,
            "command_public_key": PUBLIC, "telemetry_interval_s": 1}  # fmt: skip
    kiosk = Kiosk(kiosk_config(tmp_path, dev_faces, engine, board.path, mqtt))
    watcher = Watcher(broker, topics.state, topics.telemetry, topics.result)
    try:
        page = kiosk.url()
        online = watcher.next(topics.state, 60, where=lambda m: m["state"] == "online")
        assert online["kiosk_id"] == "kiosk-e2e"
        telemetry = watcher.next(topics.telemetry, 60)
        assert "slots" in telemetry and "outbox_pending" in telemetry

        wait_for(lambda: "rental.started" in types(tmp_path), 90)
        [started] = [e for e in events(tmp_path) if e["type"] == "rental.started"]
        rented = started["payload"]["slot"]  # type: ignore[index]

        def counted() -> bool:
            text = httpx.get(f"{page}/metrics", timeout=5).text
            return 'kiosk_rentals_total{result="started"} 1.0' in text

        wait_for(counted, 30)
        health = httpx.get(f"{page}/healthz", timeout=5)
        assert health.json()["version"]
        assert health.json()["checks"]["board"] is True

        report = kiosk.status()
        assert report["runtime"]["ok"] is True, report["runtime"]
        assert report["runtime"]["pid"] == kiosk.process.pid
        wait_for(lambda: kiosk.status()["mqtt"]["ok"] is True, 30)  # runtime.json: every 2 s

        wait_for(lambda: kiosk.status()["runtime"].get("phase") == "idle", 60)
        other = next(n for n in range(1, 5) if n != rented)
        raw = signed("kiosk-e2e", "eject", {"slot": other, "reason": "stuck powerbank"})
        command_id = json.loads(raw)["id"]
        watcher.publish(topics.command, raw)
        watcher.publish(topics.command, raw)
        answers = [
            watcher.next(topics.result, 60, where=lambda r: r["id"] == command_id) for _ in range(2)
        ]
        assert answers[0]["status"] == "ok", answers[0]
        assert answers[0]["data"]["slot"] == other
        assert answers[1]["reason"] == "replayed"
        assert [eject.slot for eject in board.ejects] == [rented, other]
        [ejected] = [e for e in events(tmp_path) if e["type"] == "slot.ejected"]
        assert ejected["payload"]["operator"] == "remote:ops:test"  # type: ignore[index]

        kiosk.process.send_signal(signal.SIGKILL)
        kiosk.process.wait(10)
        will = watcher.next(topics.state, 60, where=lambda m: m["state"] == "offline")
        assert will["reason"] == "connection lost"
    finally:
        kiosk.close()
        watcher.close()


def test_kiosk_run_keeps_renting_while_the_broker_is_down(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    port = free_port()  # nothing listens here until the broker starts, late
    mqtt = {"enabled": True, "host": "127.0.0.1", "port": port, "command_public_key": PUBLIC,
            "reconnect_min_s": 0.5, "reconnect_max_s": 1}  # fmt: skip
    ui = {"port": 0, "offline_after_s": 10}  # no sync daemon: the cloud is never reached
    kiosk = Kiosk(kiosk_config(tmp_path, dev_faces, engine, board.path, mqtt, ui=ui))
    try:
        page = kiosk.url()
        wait_for(lambda: "rental.started" in types(tmp_path), 90)
        assert len(board.ejects) == 1
        # the events wait and the cloud was never reached: the rider page says "Offline"
        # after ui.offline_after_s (the default, 120 s, would not show within this wait)
        wait_for(lambda: httpx.get(f"{page}/state", timeout=5).json()["offline"] is True, 40)
        assert '"cloud.offline"' in kiosk.output()
        report = kiosk.status()
        assert report["runtime"]["ok"] is True
        assert report["mqtt"]["ok"] is False, report["mqtt"]
        with mosquitto(tmp_path / "late-broker", port) as broker:
            topics = Topics.for_kiosk("kiosk-e2e")
            watcher = Watcher(broker, topics.state)
            try:
                online = watcher.next(topics.state, 60, where=lambda m: m["state"] == "online")
                assert online["kiosk_id"] == "kiosk-e2e"
            finally:
                watcher.close()
    finally:
        kiosk.close()
    assert kiosk.process.returncode == 0, kiosk.output()[-3000:]
    assert not (tmp_path / "runtime.json").exists()  # removed on a clean stop
