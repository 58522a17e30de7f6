"""A kiosk's MQTT link alone in a process, for the last-will test: ``python -m
tests.integration.ops.peer HOST PORT KIOSK_ID``. Prints "connected" once online."""

from __future__ import annotations

import sys
import time

from cloud_sync.config import MqttConfig
from cloud_sync.logs import configure_logging
from cloud_sync.mqtt.client import KioskMqtt


def main() -> None:
    host, port, kiosk_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    configure_logging(kiosk_id, fmt="json")  # logs on stderr, the answer on stdout
    link = KioskMqtt(
        MqttConfig(enabled=True, host=host, port=port), kiosk_id, version="test"
    ).start()
    deadline = time.monotonic() + 20
    while not link.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # let the retained "online" state go out
    print("connected" if link.connected else "not connected", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
