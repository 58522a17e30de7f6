"""The results the kiosk owes, handed to paho and settled once the broker acknowledged them.

The ledger (``commands.sqlite``, table ``results``) is the only record of what is owed: a
result is owed from the transaction that finishes its command until paho reports the
broker's acknowledgement of its publication (QoS 1). ``offer`` hands paho every owed result
it does not hold already (paho keeps an unacknowledged QoS 1 message across a reconnection
and sends it again itself); ``settle`` marks answered those the broker acknowledged. A kiosk
that stops or is killed first publishes them again at its next connection: at least once.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import MQTTErrorCode

from cloud_sync.mqtt.ledger import CommandLedger

log = structlog.get_logger("cloud_sync.mqtt")

#: paho took the message: sent now, or kept for the next connection.
_TAKEN = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)


class OwedResults:
    """Owed results between the ledger and paho; called from the link's publisher thread
    (and from ``stop``), thread-safe."""

    def __init__(self, ledger: CommandLedger, client: mqtt.Client, topic: str) -> None:
        self.ledger = ledger
        self.topic = topic
        self._client = client
        self._pending: dict[int, mqtt.MQTTMessageInfo] = {}  # result seq -> paho's handle
        self._lock = threading.Lock()

    def offer(self) -> tuple[int, bool]:
        """Publish the owed results paho does not hold; (how many, whether paho refused
        one: its queue was full, offer again later)."""
        try:
            owed = self.ledger.owed()
        except Exception as exc:  # a failing ledger: offered again at the next occasion
            log.error("command.failed", error=f"{type(exc).__name__}: {exc}")
            return 0, True
        sent, refused = 0, False
        with self._lock:
            for result in owed:
                if result.seq in self._pending:
                    continue
                info = self._client.publish(self.topic, result.payload, 1, False)
                if info.rc in _TAKEN:
                    self._pending[result.seq] = info
                    sent += 1
                else:
                    refused = True
        return sent, refused

    def settle(self) -> None:
        """Mark answered the results whose publication the broker acknowledged."""
        with self._lock:
            done = [seq for seq, info in self._pending.items() if info.is_published()]
            if not done:
                return
            try:
                self.ledger.answered(done)
            except Exception as exc:  # still owed: published again later, harmless
                log.error("command.failed", error=f"{type(exc).__name__}: {exc}")
                return
            for seq in done:
                del self._pending[seq]
