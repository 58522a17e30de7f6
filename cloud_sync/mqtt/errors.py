"""Errors of the MQTT side (telemetry, remote commands), under ``SyncError``::

    SyncError
    └── MqttError
        ├── CommandRejected (ValueError)       a command that must not run; ``reason`` says why
        ├── BrokerError (ConnectionError)      the broker cannot be reached or refused us
        ├── CommandFailedError                 the kiosk answered error/rejected, or not at all
        └── KioskRevokedError (PermissionError)  the kiosk was revoked: nothing is published

paho's own errors and return codes are translated where they enter.
"""

from __future__ import annotations

from cloud_sync.errors import SyncError

#: Stable reason codes of a rejected command (logged, and sent in results when authentic).
REASONS = (
    "oversize",  # larger than mqtt.command_max_bytes
    "malformed",  # not a JSON object of the command format
    "unsigned",  # no signature field
    "no_key",  # this kiosk has no pinned command key: every command is refused
    "bad_signature",  # tampered, or signed by another key
    "wrong_kiosk",  # addressed to another kiosk
    "unknown_command",  # a name this kiosk does not know
    "bad_args",  # arguments missing, extra or out of range (slot 99)
    "expired",  # expires_at has passed
    "not_yet_valid",  # issued further in the future than the allowed clock skew
    "ttl_too_long",  # valid for longer than mqtt.command_max_ttl_s
    "replayed",  # this command id already ran here
    "unsupported",  # known, but this kiosk has no handler for it
    "busy",  # too many commands waiting
)


class MqttError(SyncError):
    """Root of the MQTT side's errors."""


class CommandRejected(MqttError, ValueError):
    """A command that is not executed. ``authentic`` is True once its signature verified:
    only then does the kiosk answer on the result topic."""

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        command_id: str | None = None,
        name: str | None = None,
        authentic: bool = False,
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.command_id = command_id
        self.name = name
        self.authentic = authentic


class BrokerError(MqttError, ConnectionError):
    """The MQTT broker cannot be reached, or it refused the connection."""


class CommandFailedError(MqttError):
    """A remote command did not succeed: the kiosk refused it, it failed, or no answer came."""


class KioskRevokedError(MqttError, PermissionError):
    """The cloud revoked this kiosk (``kiosk-cloud kiosks revoke``): no command is signed
    or published for it."""
