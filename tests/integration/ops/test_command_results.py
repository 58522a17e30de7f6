"""``kiosk-cloud command send`` takes only an answer that names the kiosk and the command
it asked: one that another client publishes for another kiosk is not the kiosk's result."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.config import MqttConfig
from cloud_sync.mqtt.errors import CommandFailedError
from cloud_sync.mqtt.sender import send_command
from tests.integration.ops.broker import Broker, Watcher, mosquitto

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
        with pytest.raises(CommandFailedError, match="named another kiosk or command"):
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
