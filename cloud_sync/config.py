"""Settings sections for the outbox, the sync daemon and MQTT on the kiosk side."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr


class OutboxConfig(BaseModel):
    """The durable event store. Its file lives in ``kiosk.state_dir``."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(default="outbox.sqlite", min_length=1, pattern=r"^[^/]+$")
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)


class SyncConfig(BaseModel):
    """How the sync daemon talks to the cloud API."""

    model_config = ConfigDict(extra="forbid")

    cloud_url: AnyHttpUrl | None = None
    interval_s: float = Field(default=10.0, ge=0.5, le=3600)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    batch_max_events: int = Field(default=500, ge=1, le=5000)
    batch_max_bytes: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)


class MqttConfig(BaseModel):
    """The telemetry and command broker."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
