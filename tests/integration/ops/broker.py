"""A real mosquitto on a free loopback port, and a small subscriber to watch topics."""

from __future__ import annotations

import getpass
import json
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import free_port, need

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass(frozen=True)
class Broker:
    host: str
    port: int


@contextmanager
def mosquitto(folder: Path, port: int | None = None, persistence: bool = False) -> Iterator[Broker]:
    """A broker on ``port``; with ``persistence`` it keeps its sessions and their queued
    messages in ``folder`` across a restart (saved when it is stopped)."""
    need(Path(MOSQUITTO).exists(), "mosquitto")
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "mosquitto.conf"
    kept = (
        f"persistence true\npersistence_location {folder}/\nuser {getpass.getuser()}\n"
        if persistence
        else "persistence false\n"
    )  # run as root, mosquitto would switch to a user that cannot write the folder
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n{kept}"
        "log_type error\nlog_type warning\nmessage_size_limit 65536\n",
        encoding="utf-8",
    )
    log = (folder / "mosquitto.log").open("w")
    process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mosquitto did not start: {(folder / 'mosquitto.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        yield Broker("127.0.0.1", port)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class Watcher:
    """Subscribes to topics and keeps every message it gets (retained ones included)."""

    def __init__(self, broker: Broker, *topics: str, session: str = "") -> None:
        """``session``: a client id whose session the broker keeps (as a sender that waits
        for an answer through a broker restart); empty, a clean session."""
        self._got: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        subscribed: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=session, clean_session=not session
        )
        self.client.reconnect_delay_set(1, 1)

        def on_connect(client: mqtt.Client, *_: Any) -> None:
            for topic in topics:
                client.subscribe(topic, qos=1)

        def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
            with self._cond:
                self._got.append(message)
                self._cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *_: subscribed.put(1)
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        for _ in topics:
            subscribed.get(timeout=10)

    def next(self, topic: str, timeout: float = 10.0, where: Any = None) -> Any:
        """The JSON of the first unread message on ``topic`` (matching ``where``), or fail."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, message in enumerate(self._got):
                    if message.topic != topic:
                        continue
                    data = json.loads(message.payload)
                    if where is None or where(data):
                        del self._got[index]
                        return data
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no message on {topic} within {timeout} s")
                self._cond.wait(left)

    def all(self, topic: str) -> list[Any]:
        """The JSON of the messages on ``topic`` that ``next`` has not taken."""
        with self._cond:
            return [json.loads(m.payload) for m in self._got if m.topic == topic]

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
