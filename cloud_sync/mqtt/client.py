"""The kiosk's MQTT link: retained state with a last will, telemetry, and remote commands.

paho-mqtt 2.x with VERSION2 callbacks; its network loop runs in its own thread
(``loop_start``) and reconnects by itself, waiting ``reconnect_min_s`` doubling up to
``reconnect_max_s``. The client id is the kiosk id and the session is persistent, so
commands sent while the kiosk was away arrive when it is back (and are refused if they
expired meanwhile).

Nothing here ever blocks the caller. ``publish`` appends to a bounded queue and returns at
once (the oldest message is dropped, and counted, when the queue is full); a publisher
thread hands the queue to paho only while connected.

Commands: paho's automatic acknowledgement is off (``manual_ack``). A received message is
screened on paho's loop (``CommandExecutor.screen``): junk (unsigned, forged, oversize) is
acknowledged and dropped at once, counted in one summary line per ``JUNK_LOG_S``; an
authentic command waits in the ``Inbox`` for the worker thread, so that a slow handler (an
eject takes seconds) never stalls the network loop. The worker acknowledges the message
once the command is claimed in the ledger (or its rejection owed), so a command waiting
in memory when the kiosk is killed is delivered again at the next connection. The same
thread answers the commands an earlier run left ``running`` (``CommandExecutor.recover``)
as soon as their outcome is known.

Results are never queued in memory only: the executor owes each one in the ledger, and the
publisher thread hands every owed result to paho (``OwedResults``, QoS 1) at each
connection and whenever a new one is owed, and marks it answered once paho reports the
broker's acknowledgement.

Threads: paho's loop, ``mqtt-publish``, ``mqtt-telemetry`` (when a snapshot function is
given) and ``mqtt-commands`` (when an executor is given).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from cloud_sync.config import MqttConfig
from cloud_sync.mqtt.errors import BrokerError
from cloud_sync.mqtt.executor import CommandExecutor
from cloud_sync.mqtt.inbox import Inbox, JunkTally, Received
from cloud_sync.mqtt.results import OwedResults
from cloud_sync.mqtt.telemetry import (
    THERMAL_ROOT,
    StateMessage,
    Telemetry,
    Topics,
    discovery_messages,
    telemetry_message,
)

log = structlog.get_logger("cloud_sync.mqtt")

COMMAND_QUEUE = 16
#: At most one summary line of the junk received on the command topic per this many seconds.
JUNK_LOG_S = 60.0
#: A result paho would not take (its queue full) is offered again after this long.
RESULT_RETRY_S = 1.0


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class MqttStatus:
    """How the link is doing (for ``runtime.json``, telemetry and metrics)."""

    broker: str
    connected: bool
    connected_since: float | None
    queued: int
    published: int
    dropped: int
    commands_received: int
    commands_refused_busy: int
    last_error: str | None
    commands_junk: int = 0


def configure_tls(client: mqtt.Client, config: MqttConfig) -> None:
    """TLS as configured; ``BrokerError`` naming the file when a certificate is unusable."""
    try:
        client.tls_set(
            ca_certs=str(config.ca_file) if config.ca_file else None,
            certfile=str(config.cert_file) if config.cert_file else None,
            keyfile=str(config.key_file) if config.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise BrokerError(f"mqtt TLS settings cannot be used: {exc}") from None


def authenticate(client: mqtt.Client, config: MqttConfig) -> None:
    if config.username:
        password = config.password.get_secret_value() if config.password else None
        client.username_pw_set(config.username, password)


class KioskMqtt:
    """One kiosk's connection to the broker. ``start`` returns at once; so does ``publish``."""

    def __init__(
        self,
        config: MqttConfig,
        kiosk_id: str,
        *,
        version: str,
        executor: CommandExecutor | None = None,
        snapshot: Callable[[], Telemetry] | None = None,
        thermal_root: Path = THERMAL_ROOT,
    ) -> None:
        self.config = config
        self.kiosk_id = kiosk_id
        self.version = version
        self.topics = Topics.for_kiosk(kiosk_id, config.topic_prefix)
        self.executor = executor
        self._snapshot = snapshot
        self._thermal_root = thermal_root
        self._started = time.monotonic()
        self._out: deque[Outgoing] = deque()
        self._cond = threading.Condition()
        self._inbox = Inbox(COMMAND_QUEUE)
        self._junk = JunkTally(JUNK_LOG_S)
        self._session = 0  # counts connections: a message is acknowledged on its own
        self._owed_due = True  # owed results to (re)publish
        self._retry_at: float | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connected = False
        self._listening = False  # the broker acknowledged the subscription to commands
        self._connected_since: float | None = None
        self._published = self._dropped = self._received = self._busy = 0
        self._last_error: str | None = None
        self._client = self._make_client()
        self._results = (
            None
            if executor is None
            else OwedResults(executor.ledger, self._client, self.topics.result)
        )

    # -- set-up -----------------------------------------------------------------------------

    def _state(self, state: str, reason: str | None = None) -> bytes:
        message = StateMessage(
            state=state,
            kiosk_id=self.kiosk_id,
            version=self.version,
            since=datetime.now(UTC) if state == "online" else None,
            reason=reason,
        )
        return message.model_dump_json(exclude_none=True).encode()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.kiosk_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.will_set(self.topics.state, self._state("offline", "connection lost"), 1, True)
        authenticate(client, self.config)
        if self.config.tls:
            configure_tls(client, self.config)
        client.reconnect_delay_set(
            max(1, round(self.config.reconnect_min_s)), max(1, round(self.config.reconnect_max_s))
        )
        client.max_queued_messages_set(self.config.queue_size)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    @property
    def broker(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def start(self) -> KioskMqtt:
        """Connect in the background and start the worker threads; returns at once."""
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        self._client.loop_start()
        self._spawn(self._publish_loop, "mqtt-publish")
        if self._snapshot is not None:
            self._spawn(self._telemetry_loop, "mqtt-telemetry")
        if self.executor is not None:
            self._spawn(self._command_loop, "mqtt-commands")
        log.info("mqtt.started", broker=self.broker, tls=self.config.tls)
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 2.0) -> None:
        """Say "offline" (retained) when connected, then disconnect and stop every thread."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._connected:
            info = self._client.publish(
                self.topics.state, self._state("offline", "stopped"), 1, True
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        for thread in self._threads:
            thread.join(timeout)
        if self._results is not None:
            self._results.settle()  # what the broker acknowledged before the end
        log.info("mqtt.stopped", broker=self.broker)

    # -- paho callbacks (its loop thread) ---------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._last_error = f"broker refused the connection: {reason}"
            log.warning("mqtt.refused", broker=self.broker, reason=str(reason))
            return
        client.subscribe(self.topics.command, qos=1)
        with self._cond:
            self._session += 1
            self._owed_due = True
            self._connected = True
            self._connected_since = time.time()
            self._last_error = None
            self._out.appendleft(Outgoing(self.topics.state, self._state("online"), 1, True))
            if self.config.ha_discovery:
                for topic, payload in discovery_messages(
                    self.kiosk_id, self.topics, self.version, self.config.ha_prefix
                ):
                    self._out.append(Outgoing(topic, payload.encode(), 1, True))
            self._cond.notify_all()
        log.info("mqtt.connected", broker=self.broker, session=bool(flags.session_present))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        refused = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if refused:
            self._last_error = f"broker refused the command subscription: {', '.join(refused)}"
            log.warning("mqtt.subscribe_refused", broker=self.broker, reason=refused)
            return
        self._listening = True

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        first = self._last_error is None
        self._last_error = f"cannot connect to {self.broker}"
        (log.warning if first else log.debug)("mqtt.connect_failed", broker=self.broker)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._cond:
            self._connected = False
            self._listening = False
            self._connected_since = None
        if not self._stop.is_set():
            self._last_error = f"disconnected: {reason}"
            log.warning("mqtt.disconnected", broker=self.broker, reason=str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.topics.command or self.executor is None:
            client.ack(message.mid, message.qos)
            return
        self._received += 1
        raw = bytes(message.payload)
        junk = self.executor.screen(raw)  # parse and signature first: junk takes no place
        if junk is not None:
            client.ack(message.mid, message.qos)
            self._log_junk(self._junk.note(junk, time.monotonic()))
            return
        # a retained copy (a captured command published again with the retain flag) comes
        # at every subscription: once claimed it is acknowledged quietly, as a DUP is
        again = bool(message.dup or message.retain)
        item = Received(raw, message.mid, message.qos, self._session, again)
        if not self._inbox.put(item):
            self._busy += 1  # answered "busy" by the command thread, never dropped

    def _log_junk(self, counts: dict[str, int] | None) -> None:
        if counts:
            log.warning(
                "command.junk",
                dropped=sum(counts.values()),
                reasons=counts,
                total=self._junk.total,
                every_s=self._junk.every_s,
            )

    # -- publishing -------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> bool:
        """Queue a message and return at once; False when the queue was full (oldest dropped)."""
        data = payload.encode() if isinstance(payload, str) else payload
        with self._cond:
            full = len(self._out) >= self.config.queue_size
            if full:
                self._out.popleft()
                self._dropped += 1
            self._out.append(Outgoing(topic, data, qos, retain))
            self._cond.notify()
        return not full

    def _next(self) -> tuple[Outgoing | None, bool]:
        """The next message to hand to paho, and whether the owed results are due."""
        with self._cond:
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self._retry_at, self._owed_due = None, True
            if not (self._connected and (self._out or self._owed_due)):
                self._cond.wait(0.5)
            if self._stop.is_set() or not self._connected:
                return None, False
            owed, self._owed_due = self._owed_due, False
            return (self._out.popleft() if self._out else None), owed

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            item, owed = self._next()
            if self._results is not None:
                self._results.settle()
                if owed:
                    sent, refused = self._results.offer()
                    self._published += sent
                    if refused:  # paho's queue was full: offer them again in a while
                        with self._cond:
                            self._retry_at = time.monotonic() + RESULT_RETRY_S
            if item is not None:
                self._send(item)

    def _send(self, item: Outgoing) -> None:
        try:
            info = self._client.publish(item.topic, item.payload, item.qos, item.retain)
        except ValueError as exc:  # a bad topic or payload: drop it, keep going
            log.warning("mqtt.unpublishable", topic=item.topic, error=str(exc))
            self._dropped += 1
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._published += 1
        elif info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and item.qos == 0:
            self._dropped += 1  # paho keeps qos>0 messages for the next connection
        elif info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self._dropped += 1

    def _results_owed(self) -> None:
        """A new result is owed (or a command finished): publish it soon."""
        with self._cond:
            self._owed_due = True
            self._cond.notify_all()

    def publish_telemetry(self) -> bool:
        """Take a snapshot now and queue it (the periodic thread calls this)."""
        if self._snapshot is None:
            return False
        try:
            snapshot = self._snapshot()
            message = telemetry_message(
                snapshot, self.kiosk_id, time.monotonic() - self._started, self._thermal_root
            )
        except Exception as exc:  # the caller's snapshot failing must not end telemetry
            log.warning("mqtt.telemetry_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        return self.publish(self.topics.telemetry, message.model_dump_json(), qos=0)

    def _telemetry_loop(self) -> None:
        interval = self.config.telemetry_interval_s
        while not self._stop.is_set():
            if self._connected:
                self.publish_telemetry()
            self._stop.wait(interval if self._connected else min(interval, 1.0))

    # -- commands ---------------------------------------------------------------------------

    def _command_loop(self) -> None:
        assert self.executor is not None
        executor = self.executor
        while not self._stop.is_set():
            if executor.interrupted:  # left running by an earlier run: answer them
                self._recover()
            self._log_junk(self._junk.due(time.monotonic()))
            item = self._inbox.get(timeout=0.5)
            if item is None:
                continue
            acknowledge = self._acknowledger(item)
            try:
                if item.busy:
                    executor.busy(item.raw, redelivered=item.redelivered, recorded=acknowledge)
                else:
                    executor.handle(item.raw, redelivered=item.redelivered, recorded=acknowledge)
            except Exception as exc:  # a bug or a failing ledger: log it, never die
                log.error("command.failed", error=f"{type(exc).__name__}: {exc}")
            self._results_owed()

    def _acknowledger(self, item: Received) -> Callable[[], None]:
        """Acknowledge ``item`` to the broker, once, on the connection it arrived on (on a
        later one its mid may name another message: the broker delivers it again)."""

        def acknowledge() -> None:
            with self._cond:
                current = self._connected and item.session == self._session
            if current:
                self._client.ack(item.mid, item.qos)

        return acknowledge

    def _recover(self) -> None:
        assert self.executor is not None
        try:
            answered = self.executor.recover()
        except Exception as exc:  # a failing ledger: log it, try again later
            log.error("command.failed", error=f"{type(exc).__name__}: {exc}")
            return
        if answered:
            self._results_owed()

    # -- status -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def listening(self) -> bool:
        """Connected, and the broker confirmed the subscription: commands now arrive."""
        return self._connected and self._listening

    def status(self) -> MqttStatus:
        with self._cond:
            queued = len(self._out)
        return MqttStatus(
            broker=self.broker,
            connected=self._connected,
            connected_since=self._connected_since,
            queued=queued,
            published=self._published,
            dropped=self._dropped,
            commands_received=self._received,
            commands_refused_busy=self._busy,
            last_error=self._last_error,
            commands_junk=self._junk.total,
        )
