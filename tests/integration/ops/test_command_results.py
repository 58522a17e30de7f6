"""``kiosk-cloud command send`` takes only an answer that names the kiosk and the command
it asked: one that another client publishes for another kiosk is not the kiosk's result."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.config import MqttConfig
from cloud_sync.logs import configure_logging
from cloud_sync.mqtt.errors import CommandFailedError
from cloud_sync.mqtt.sender import send_command
from cloud_sync.mqtt.telemetry import Topics
from cloud_sync.server.db import open_database
from cloud_sync.server.migrations import migrate
from cloud_sync.server.store import Store
from cloud_sync.signing import kiosk_key, public_key_text
from edge.ops.remote import open_kiosk_mqtt
from edge.settings import load_settings
from tests.integration.ops.broker import Broker, Watcher, mosquitto
from tests.integration.ops.test_mqtt import Counting, cloud, link, wait_connected
from tests.integration.ops.test_mqtt import command as mqtt_command

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with mosquitto(tmp_path / "mosquitto") as running:
        yield running


def test_an_answer_naming_another_kiosk_is_never_taken_for_the_result(broker: Broker) -> None:
    kiosk = "kiosk-results-1"
    forger = Watcher(broker, f"kiosk/{kiosk}/cmd")

    def answer(_c: Any, _u: Any, message: Any) -> None:  # no kiosk runs: a client answers
        asked = json.loads(message.payload)
        fake = {
            "v": 1,
            "id": asked["id"],
            "kiosk_id": "somebody-else",
            "name": asked["name"],
            "status": "ok",
            "reason": None,
            "detail": "",
            "data": {"slot": 3, "powerbank_id": "PB-FAKE", "outcome": "taken"},
            "at": 0,
        }
        forger.client.publish(f"kiosk/{kiosk}/cmd/result", json.dumps(fake).encode(), qos=1)

    forger.client.on_message = answer
    try:
        with pytest.raises(
            CommandFailedError,
            match="it named somebody-else",
        ):
            send_command(
                MqttConfig(enabled=True, host=broker.host, port=broker.port),
                Ed25519PrivateKey.generate(),
                kiosk,
                "eject",
                {"slot": 3},
                timeout_s=3,
            )
    finally:
        forger.close()


def test_with_the_registry_only_a_result_the_kiosk_signed_is_taken(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kiosk built from its settings signs its results with the key the cloud registered;
    a client answering first in its name, with its id and the command's name, is ignored."""
    kiosk_id = "kiosk-results-2"
    configure_logging(kiosk_id, fmt="json")  # the kiosk's logs on stderr, results on stdout
    key = tmp_path / "command-key.pem"
    code, public, _ = cloud(capsys, "command", "keygen", "--key", str(key))
    assert code == 0
    state_dir = tmp_path / "state"
    settings = load_settings(
        None,
        kiosk={"id": kiosk_id, "state_dir": str(state_dir)},
        mqtt={"enabled": True, "host": broker.host, "port": broker.port,
              "command_public_key": public.strip()},
    )  # fmt: skip
    url = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    database = open_database(url, pool_size=1)
    try:
        migrate(database)
        Store(database).register_kiosk(kiosk_id, public_key_text(kiosk_key(state_dir)))
    finally:
        database.close()
    forger = Watcher(broker, f"kiosk/{kiosk_id}/cmd")

    def answer(_c: Any, _u: Any, message: Any) -> None:  # faster than the kiosk, unsigned
        asked = json.loads(message.payload)
        fake = {"v": 1, "id": asked["id"], "kiosk_id": kiosk_id, "name": asked["name"],
                "status": "ok", "reason": None, "detail": "forged", "data": {}, "at": 0}  # fmt: skip
        forger.client.publish(f"kiosk/{kiosk_id}/cmd/result", json.dumps(fake).encode(), qos=1)

    forger.client.on_message = answer
    send = ["command", "send", "--kiosk", kiosk_id, "--broker", f"{broker.host}:{broker.port}",
            "--key", str(key), "--database-url", url, "--name", "ping"]  # fmt: skip
    try:
        alone = cloud(capsys, *send, "--timeout", "3")  # no kiosk runs: only the forger answers
        kiosk = open_kiosk_mqtt(settings, {})
        try:
            wait_connected(kiosk)
            answered = cloud(capsys, *send, "--timeout", "10")
        finally:
            kiosk.stop()
    finally:
        forger.close()
    assert alone[0] == 7 and "the kiosk's key did not sign it" in alone[2], alone
    assert answered[0] == 0, answered[2]
    result = json.loads(answered[1])
    assert result["detail"] != "forged" and result["signature"]


def test_a_command_published_again_as_retained_runs_once_and_is_answered_once(
    broker: Broker, tmp_path: Path
) -> None:
    """A captured command re-published with the retain flag comes at every subscription:
    the kiosk runs it once, answers it once, and never answers its copies "replayed"."""
    kiosk_id = "kiosk-results-3"
    topics = Topics.for_kiosk(kiosk_id)
    board = Counting()
    watcher = Watcher(broker, topics.result)
    raw = mqtt_command(kiosk_id)
    command_id = json.loads(raw)["id"]
    try:
        watcher.client.publish(topics.command, raw, qos=1, retain=True).wait_for_publish(5)
        for _ in range(3):  # three starts of the kiosk, each subscribing anew
            kiosk = link(broker, kiosk_id, tmp_path, {"eject": board.eject})
            try:
                wait_connected(kiosk)
                time.sleep(1.0)
            finally:
                kiosk.stop()
        answers = [m for m in watcher.all(topics.result) if m["id"] == command_id]
    finally:
        watcher.client.publish(topics.command, b"", qos=1, retain=True).wait_for_publish(5)
        watcher.close()
    assert len(board.calls) == 1
    assert [a["status"] for a in answers] == ["ok"], answers
