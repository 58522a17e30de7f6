"""A kiosk's command link alone in a process, to be SIGKILLed: ``python -m
tests.integration.ops.command_peer HOST PORT KIOSK_ID STATE_DIR PUBLIC_KEY_HEX``.

Its ``eject`` takes ``EJECT_S`` seconds (default 3); every handler call is appended, and
synced, to ``STATE_DIR/calls`` (``eject-start ID``, ``eject-done ID``, ``sync ID``), so the
test can count what ran across kills. Prints "listening" once commands arrive.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_sync.config import MqttConfig
from cloud_sync.logs import configure_logging
from cloud_sync.mqtt.client import KioskMqtt
from cloud_sync.mqtt.commands import Command
from cloud_sync.mqtt.executor import CommandExecutor, HandlerData
from cloud_sync.mqtt.ledger import CommandLedger


def main() -> None:
    host, port, kiosk_id, state = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(sys.argv[5]))
    eject_s = float(os.environ.get("EJECT_S", "3"))
    configure_logging(kiosk_id, fmt="json")  # logs on stderr, "listening" on stdout

    def note(what: str) -> None:
        with (state / "calls").open("a") as calls:
            calls.write(what + "\n")
            calls.flush()
            os.fsync(calls.fileno())

    def eject(command: Command) -> HandlerData:
        note(f"eject-start {command.id}")
        time.sleep(eject_s)
        note(f"eject-done {command.id}")
        return {"slot": command.args["slot"], "powerbank_id": "PB-1", "outcome": "taken"}

    def sync(command: Command) -> HandlerData:
        note(f"sync {command.id}")
        return {"woken": 1}

    executor = CommandExecutor(
        kiosk_id=kiosk_id,
        public_key=public,
        ledger=CommandLedger(state / "commands.sqlite"),
        handlers={"eject": eject, "sync-now": sync},
        slots=8,
    )
    config = MqttConfig(enabled=True, host=host, port=port, reconnect_max_s=1)
    link = KioskMqtt(config, kiosk_id, version="test", executor=executor).start()
    deadline = time.monotonic() + 20
    while not link.listening and time.monotonic() < deadline:
        time.sleep(0.02)
    print("listening" if link.listening else "not listening", flush=True)
    try:
        sys.stdin.readline()  # until the test closes stdin (or kills us)
    finally:
        link.stop()


if __name__ == "__main__":
    main()
