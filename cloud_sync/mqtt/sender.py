"""The cloud's side of remote commands: sign one, publish it, wait for the kiosk's answer.

Used by ``kiosk-cloud command send``. The result topic is subscribed before the command
is published, so a fast answer is not missed; only a result carrying the command's id
counts. A kiosk the cloud revoked gets nothing: ``KioskRevokedError`` before any
connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion
from ulid import ULID

from cloud_sync.config import MqttConfig
from cloud_sync.mqtt.client import authenticate, configure_tls
from cloud_sync.mqtt.commands import (
    Command,
    CommandResult,
    new_command,
    parse_result,
    result_signed_by,
    sign_command,
)
from cloud_sync.mqtt.errors import BrokerError, CommandFailedError, KioskRevokedError
from cloud_sync.mqtt.telemetry import Topics


@dataclass(frozen=True)
class Sent:
    command: Command
    result: CommandResult


def parse_arg(text: str) -> tuple[str, str | int | bool]:
    """``k=v`` from the command line: integers and true/false become their JSON types."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    if value.lstrip("-").isdigit() and len(value) < 18:
        return key, int(value)
    if value in ("true", "false"):
        return key, value == "true"
    return key, value


def send_command(
    config: MqttConfig,
    key: Ed25519PrivateKey,
    kiosk_id: str,
    name: str,
    args: dict[str, Any],
    ttl_s: int = 60,
    timeout_s: float = 30.0,
    issuer: str = "cloud",
    is_revoked: Callable[[str], bool] | None = None,
    kiosk_public_key: Ed25519PublicKey | None = None,
) -> Sent:
    """Sign and publish one command and wait for its result.

    ``KioskRevokedError`` when ``is_revoked`` (the cloud's registry) says the kiosk was
    revoked: nothing is published. ``BrokerError`` when the broker cannot be reached;
    ``CommandFailedError`` when no result arrives within ``timeout_s``. The result,
    whatever its status, is returned. Only an answer naming the kiosk and the command is
    taken, and with ``kiosk_public_key`` (the kiosk's key in the cloud's registry) only one
    that key signed: any other client may publish on the result topic.
    """
    if is_revoked is not None and is_revoked(kiosk_id):
        raise KioskRevokedError(
            f"kiosk {kiosk_id} was revoked (kiosk-cloud kiosks revoke): no command is sent "
            "to it; it must be provisioned again first"
        )
    command = new_command(kiosk_id, name, args, ttl_s, time.time(), issuer)
    topics = Topics.for_kiosk(kiosk_id, config.topic_prefix)
    connected, subscribed, answered = threading.Event(), threading.Event(), threading.Event()
    found: list[CommandResult] = []
    refused: list[str] = []
    mismatched: list[str] = []  # answers to this id that another kiosk or command signed

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        else:
            client.subscribe(topics.result, qos=1)
        connected.set()

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        result = parse_result(bytes(message.payload))
        if result is None or result.id != command.id:
            return
        if (result.kiosk_id, result.name) != (kiosk_id, name):  # not this kiosk's answer
            mismatched.append(f"it named {result.kiosk_id}/{result.name}")
            return
        if kiosk_public_key is not None and not result_signed_by(result, kiosk_public_key):
            mismatched.append("the kiosk's key did not sign it")
            return
        found.append(result)
        answered.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"kiosk-cloud-{str(ULID()).lower()}"
    )
    authenticate(client, config)
    if config.tls:
        configure_tls(client, config)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    deadline = time.monotonic() + timeout_s
    try:
        try:
            client.connect(config.host, config.port, config.keepalive_s)
        except (OSError, ValueError) as exc:
            raise BrokerError(
                f"cannot connect to the broker {config.host}:{config.port}: {exc}"
            ) from None
        client.loop_start()
        if not connected.wait(max(0.1, deadline - time.monotonic())) or refused:
            why = refused[0] if refused else "no answer"
            raise BrokerError(f"the broker {config.host}:{config.port} refused us: {why}")
        if not subscribed.wait(max(0.1, deadline - time.monotonic())):
            raise BrokerError("the broker did not confirm the subscription to the results")
        try:
            client.publish(topics.command, sign_command(key, command), qos=1).wait_for_publish(
                max(0.1, deadline - time.monotonic())
            )
        except (RuntimeError, ValueError) as exc:
            raise BrokerError(f"the command could not be published: {exc}") from None
        if not answered.wait(max(0.1, deadline - time.monotonic())):
            if mismatched:
                raise CommandFailedError(
                    f"no result from {kiosk_id} within {timeout_s:g} s for command"
                    f" {command.id} ({name}); {len(mismatched)} answer(s) to it were not"
                    f" the kiosk's and were ignored ({mismatched[0]})"
                )
            raise CommandFailedError(
                f"no result from {kiosk_id} within {timeout_s:g} s for command {command.id} "
                f"({name}); the kiosk may be offline: it runs the command when it is back, "
                f"if that is before it expires"
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return Sent(command, found[0])


def broker_config(
    broker: str,
    tls: bool = False,
    ca_file: Path | None = None,
    username: str | None = None,
    password: str | None = None,
) -> MqttConfig:
    """An ``MqttConfig`` for ``HOST:PORT`` (port 1883, or 8883 with TLS, when omitted)."""
    host, sep, port_text = broker.rpartition(":")
    if not sep:
        host, port_text = broker, "8883" if tls else "1883"
    if not host or not port_text.isdigit():
        raise ValueError(f"{broker!r} is not HOST:PORT")
    values: dict[str, Any] = {"host": host, "port": int(port_text), "tls": tls, "ca_file": ca_file}
    if username:
        values["username"] = username
    if password:
        values["password"] = password
    return MqttConfig.model_validate(values)
