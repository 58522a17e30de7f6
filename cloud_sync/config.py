"""Settings sections for the outbox, the sync daemon and MQTT on the kiosk side."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from cloud_sync import setting_paths
from cloud_sync.curve_points import strong_pinned_key

#: An IP address (v4, or v6 with or without brackets) or a host name; empty: every address.
HOST_PATTERN = (
    r"^$|^\[?[0-9A-Fa-f:.]+\]?$"
    r"|^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_HOST = re.compile(HOST_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(value: str | None) -> str | None:
    """Text that reaches logs, topics, headers or the screen: no line break, NUL or other
    control character."""
    if value is not None and _CONTROL.search(value):
        raise ValueError(
            "must be one line of text, without a line break, NUL or other control character"
        )
    return value


def host_name(value: str) -> str:
    if not value or not _HOST.fullmatch(value):
        raise ValueError("must be an IP address or a host name (no scheme, port or spaces)")
    return value


class OutboxConfig(BaseModel):
    """The durable event store. Its file lives in ``kiosk.state_dir``."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(default="outbox.sqlite", min_length=1, pattern=r"^[^/]+$")
    #: Disk budget for stored events. Past it, sent events go first, then telemetry, then
    #: ops events (oldest first); money events are never dropped (OutboxFullError instead).
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    #: Events appended within this many seconds count as live and are sent ahead of a backlog.
    live_window_s: float = Field(default=60.0, ge=1, le=86400)
    #: Acknowledged events are kept this long (for `kiosk events`), then pruned.
    keep_sent_s: float = Field(default=7 * 86400, ge=0, le=365 * 86400)


class SyncConfig(BaseModel):
    """How the sync daemon talks to the cloud API."""

    model_config = ConfigDict(extra="forbid")

    cloud_url: AnyHttpUrl | None = None
    interval_s: float = Field(default=10.0, ge=0.5, le=3600)
    #: How often the daemon pulls the roster (it also pulls at start and when woken). Only
    #: a kiosk with a pinned roster key (roster.cloud_roster_key) pulls.
    roster_interval_s: float = Field(default=300.0, ge=1, le=86400)
    #: How often ``kiosk run`` writes a ``kiosk.status`` event (0: never). A new one is
    #: not written while the last is still unsent.
    status_interval_s: float = Field(default=300.0, ge=0, le=86400)
    #: Each network operation (connect, each read and write) waits at most this long.
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: A whole exchange with the cloud (connect to the last byte of the answer) ends by
    #: this deadline, however slowly the answer comes (a byte every few seconds).
    request_deadline_s: float = Field(default=300.0, ge=1, le=3600)
    #: ``kiosk sync run`` told to stop ends its pass first; a pass still waiting on the
    #: cloud after this long is abandoned (its events stay pending: nothing is marked sent
    #: before the cloud's answer), well inside systemd's stop timeout.
    stop_grace_s: float = Field(default=20.0, ge=1, le=600)
    #: The roster's answer is read up to this size (as sent and inflated); a full snapshot
    #: of 100,000 riders with two templates each is about 225 MB. Other answers: 1 MiB.
    roster_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024, le=4 * 1024**3)
    batch_max_events: int = Field(default=500, ge=1, le=5000)
    batch_max_bytes: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: At most this share of a batch goes to live events; the rest drains the backlog.
    live_share: float = Field(default=0.5, gt=0, le=1)
    #: Exponential backoff with full jitter: a random wait in [0, min(max, base * 2^n)].
    backoff_base_s: float = Field(default=1.0, gt=0, le=60)
    backoff_max_s: float = Field(default=300.0, ge=1, le=86400)
    #: A server's Retry-After is honoured up to this many seconds.
    retry_after_max_s: float = Field(default=3600.0, ge=1, le=86400)
    #: An event that fails alone (5xx, timeout, reset) this many times, each time while the
    #: cloud took other events, is quarantined with the reason; a cloud that is down counts
    #: against no event.
    quarantine_after: int = Field(default=5, ge=1, le=100)
    #: Bodies at least this large are sent gzip-compressed.
    gzip_min_bytes: int = Field(default=1024, ge=0, le=16 * 1024 * 1024)
    #: The kiosk's Ed25519 signing key, in ``kiosk.state_dir`` (created 0600 if missing).
    key_filename: str = Field(default="kiosk-ed25519.pem", min_length=1, pattern=r"^[^/]+$")
    #: A CA bundle to trust for the cloud's TLS certificate (default: the system's).
    ca_file: Path | None = None

    _ca_file = field_validator("ca_file")(setting_paths.input_file)

    @model_validator(mode="after")
    def _backoff_order(self) -> SyncConfig:
        if self.backoff_base_s > self.backoff_max_s:
            raise ValueError(
                f"backoff_base_s ({self.backoff_base_s:g} s) must not exceed backoff_max_s "
                f"({self.backoff_max_s:g} s): waits double from the first up to the second"
            )
        return self


class MqttConfig(BaseModel):
    """The telemetry and command broker."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    host: str = Field(
        default="127.0.0.1",
        max_length=253,
        description="the broker's IP address or host name (no scheme, no port: see port)",
    )
    port: int = Field(default=1883, ge=1, le=65535)
    tls: bool = False
    username: str | None = Field(default=None, max_length=200)
    password: SecretStr | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    #: A CA bundle for the broker's certificate (default: the system's), and an optional
    #: client certificate and key for brokers that authenticate kiosks by certificate.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    _tls_files = field_validator("ca_file", "cert_file", "key_file")(setting_paths.input_file)
    _host = field_validator("host")(host_name)
    _username = field_validator("username")(one_line)
    #: Topics are ``<topic_prefix>/<kiosk id>/state|telemetry|cmd|cmd/result``.
    topic_prefix: str = Field(default="kiosk", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    telemetry_interval_s: float = Field(default=60.0, ge=1, le=86400)
    #: Reconnection waits double from the first value up to the second.
    reconnect_min_s: float = Field(default=1.0, ge=0.1, le=60)
    reconnect_max_s: float = Field(default=60.0, ge=1, le=3600)
    #: Messages waiting for the broker; past it the oldest is dropped (never blocking).
    queue_size: int = Field(default=200, ge=10, le=100_000)
    #: The cloud's command key (Ed25519 public key, base64), pinned at provisioning.
    #: Without it every remote command is refused.
    command_public_key: str | None = Field(default=None, pattern=r"^[A-Za-z0-9+/]{43}=$")
    _strong_command_key = field_validator("command_public_key")(strong_pinned_key)
    #: Commands larger than this are ignored unread.
    command_max_bytes: int = Field(default=4096, ge=256, le=65536)
    #: The longest validity (expires_at - issued_at) a command may carry.
    command_max_ttl_s: float = Field(default=3600.0, ge=10, le=7 * 86400)
    #: How far in the future a command's issued_at may be (clock skew with the cloud).
    command_max_skew_s: float = Field(default=300.0, ge=0, le=86400)
    #: Publish Home Assistant MQTT discovery for the kiosk's sensors.
    ha_discovery: bool = False
    ha_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_/-]{1,64}$")

    @model_validator(mode="after")
    def _reconnect_order(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s:g} s) must not exceed "
                f"reconnect_max_s ({self.reconnect_max_s:g} s): waits double up to the latter"
            )
        return self


def shown_url(url: str) -> str:
    """``url`` as errors, logs and ``kiosk sync status`` show it: a password in it (a proxy's
    basic auth in ``sync.cloud_url``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.rpartition("@")[2] if "@" in url else url
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
