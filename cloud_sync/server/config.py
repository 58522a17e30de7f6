"""Settings of the cloud API: a pydantic-settings root of its own (``KIOSK_CLOUD_*``).

Values come from ``KIOSK_CLOUD_*`` environment variables, then secret files named after
the setting (systemd credentials in ``$CREDENTIALS_DIRECTORY``, e.g. a file named
``admin_token`` or ``database_url``), then the defaults below. ``kiosk-cloud serve``
options override both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from cloud_sync import setting_paths
from cloud_sync.errors import ConfigError
from cloud_sync.events import MAX_BATCH_EVENTS


class CloudSettings(BaseSettings):
    """Every setting of one cloud API process (all replicas of a fleet share them)."""

    model_config = SettingsConfigDict(
        env_prefix="KIOSK_CLOUD_", extra="forbid", validate_default=True
    )

    #: ``sqlite:///relative.sqlite``, ``sqlite:////absolute/path.sqlite`` or ``postgresql://...``
    database_url: str = Field(default="sqlite:///cloud.sqlite", min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    #: Worker processes of ``kiosk-cloud serve`` (uvicorn workers) on this host, each with
    #: its own ``pool_size`` connections. More hosts: run replicas (docs/cloud.md).
    workers: int = Field(default=1, ge=1, le=64)
    #: Bearer token for the /v1/admin endpoints; unset disables them.
    admin_token: SecretStr | None = None
    #: Bearer token of the riders' app backend: it may set a rider's claim code and home
    #: kiosk (``PUT /v1/riders/{id}/claim``, ``/home``) and nothing else; unset disables
    #: those routes.
    app_token: SecretStr | None = None
    #: Largest request body as sent (compressed), and once decompressed.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_decoded_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    max_batch_events: int = Field(default=1000, ge=1, le=MAX_BATCH_EVENTS)
    #: A request's body must have arrived this long after its headers (408 otherwise),
    #: and its headers this long after the connection opened or its previous answer
    #: (``kiosk-cloud serve`` closes the connection otherwise): half-sent requests never
    #: hold a connection for longer.
    body_timeout_s: float = Field(default=30.0, ge=1, le=600)
    header_timeout_s: float = Field(default=10.0, ge=1, le=600)
    #: Connections (and requests) one ``serve`` process takes at once; past it new
    #: requests are answered 503 at once. Keep it well below the open-file limit
    #: (``LimitNOFILE`` in the systemd unit).
    limit_concurrency: int = Field(default=1000, ge=10, le=100_000)
    #: How far a request's signed timestamp may be from this server's clock.
    clock_skew_s: float = Field(default=300.0, ge=5, le=3600)
    #: How far in the future an event's occurred_at may be.
    max_future_s: float = Field(default=3600.0, ge=0, le=7 * 86400)
    provisioning_token_ttl_s: float = Field(default=86400.0, ge=60, le=30 * 86400)
    #: PostgreSQL connections per process.
    pool_size: int = Field(default=8, ge=1, le=100)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "json"
    #: The roster signing key (Ed25519, PKCS#8 PEM, mode 0600) whose public half kiosks
    #: pin. Default: ``roster-ed25519.pem`` beside a SQLite database; with PostgreSQL the
    #: roster is served only when both key files are set (`kiosk-cloud keys init`).
    roster_key_file: Path | None = None
    #: The roster data key (32 raw bytes, mode 0600) that seals every rider record.
    #: Default: ``roster-data.key`` beside a SQLite database.
    roster_data_key_file: Path | None = None
    #: The encoder model the fleet's kiosks match with; deltas name it.
    roster_model: str = Field(default="dlib_resnet_v1", min_length=1, max_length=64)
    #: Deletions are remembered this long; a kiosk that last synced before the oldest one
    #: still kept gets a full snapshot instead of a delta.
    roster_tombstone_keep_s: float = Field(default=90 * 86400, ge=0, le=10 * 365 * 86400)

    #: Rentals the cloud owns (docs/fleet.md): a rental is due this long after it started,
    #: ``overdue`` once past due, ``lost`` ``rental_lost_after_s`` after that. The sweep that
    #: marks them runs every ``sweep_interval_s`` in each API process, one at a time across
    #: replicas (0: no background sweep; run ``kiosk-cloud rentals sweep`` from cron).
    rental_due_s: float = Field(default=86400.0, ge=1, le=365 * 86400)
    rental_lost_after_s: float = Field(default=7 * 86400.0, ge=1, le=365 * 86400)
    sweep_interval_s: float = Field(default=60.0, ge=0, le=86400)
    #: Retention (docs/privacy.md): a rider with no activity (no rental, boarding or refusal
    #: at a kiosk, no change by an operator or the app) for this long is deleted by the
    #: sweep, unless a powerbank of theirs is out; 0 keeps riders until deleted.
    rider_retention_s: float = Field(default=730 * 86400.0, ge=0, le=20 * 365 * 86400)
    #: Automatic sets (docs/fleet.md): each kiosk may recognise without a claim at most
    #: this many riders, chosen by the sweep (home kiosk, then the riders whose usual kiosk
    #: it is over the rentals of the last ``auto_set_days``, its regulars, then its site's);
    #: a kiosk uses its set once its roster is past the face policy's calibrated size.
    #: 0: no sets.
    auto_set_size: int = Field(default=300, ge=0, le=10_000)
    auto_set_days: float = Field(default=120.0, gt=0, le=3650)

    #: Lockouts (docs/sync.md, "Rate limits"): this many wrong admin or provisioning tokens
    #: within ``auth_failure_window_s``, from one source address or presenting one token,
    #: lock that address (or token) out for ``auth_lockout_s``: 429 even with the right one.
    auth_max_failures: int = Field(default=10, ge=1, le=100_000)
    #: The same for wrong kiosk signatures, per source address and per kiosk id named;
    #: higher, because a kiosk with a wrong key or clock retries by itself.
    kiosk_auth_max_failures: int = Field(default=30, ge=1, le=100_000)
    auth_failure_window_s: float = Field(default=300.0, ge=1, le=86400)
    auth_lockout_s: float = Field(default=300.0, ge=1, le=86400)
    #: Requests per kiosk per ``kiosk_rate_window_s``: event batches, and roster plus
    #: closed-rental fetches together. Past it: 429 with Retry-After (the daemon waits).
    kiosk_batch_limit: int = Field(default=600, ge=1, le=1_000_000)
    kiosk_pull_limit: int = Field(default=300, ge=1, le=1_000_000)
    kiosk_rate_window_s: float = Field(default=60.0, ge=1, le=3600)
    #: Reverse proxies (comma-separated addresses or networks, ``*`` for any) whose
    #: ``X-Forwarded-For`` names the client: the source address lockouts count. Empty:
    #: none, the peer's own address counts (behind a load balancer, list it here).
    forwarded_allow_ips: str = Field(default="", max_length=2000)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """A secret file is named after its setting (``admin_token``, ``database_url``), as
        systemd credentials and container secrets are; the prefixed name works as well."""
        folder = getattr(file_secret_settings, "secrets_dir", None)
        by_name = SecretsSettingsSource(settings_cls, secrets_dir=folder, env_prefix="")
        return init_settings, env_settings, dotenv_settings, by_name, file_secret_settings

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:///, postgresql:// or postgres://")
        if value.startswith("sqlite:///"):
            name = value.removeprefix("sqlite:///")
            if not name or name.endswith("/") or Path(name).name in ("", ".", ".."):
                raise ValueError("sqlite:/// must be followed by a database file's path")
            setting_paths.not_special(Path(name))
        return value

    @field_validator("roster_key_file", "roster_data_key_file")
    @classmethod
    def _key_file(cls, value: Path | None) -> Path | None:
        return None if value is None else setting_paths.not_special(value)

    @field_validator("sweep_interval_s")
    @classmethod
    def _sweep_interval(cls, value: float) -> float:
        if 0 < value < 0.1:
            raise ValueError("must be 0 (no background sweep) or at least 0.1 seconds")
        return value

    @model_validator(mode="after")
    def _body_limits(self) -> CloudSettings:
        if self.max_decoded_bytes < self.max_body_bytes:
            raise ValueError(
                f"KIOSK_CLOUD_MAX_DECODED_BYTES ({self.max_decoded_bytes}) must not be below "
                f"KIOSK_CLOUD_MAX_BODY_BYTES ({self.max_body_bytes}): a body is never smaller "
                "once inflated"
            )
        return self

    @property
    def roster_key_paths(self) -> tuple[Path, Path] | None:
        """``(signing key, data key)`` files, or None when the roster is not configured."""
        if self.roster_key_file and self.roster_data_key_file:
            return self.roster_key_file, self.roster_data_key_file
        if not self.database_url.startswith("sqlite:///"):
            return None
        folder = Path(self.database_url.removeprefix("sqlite:///")).parent
        return (
            self.roster_key_file or folder / "roster-ed25519.pem",
            self.roster_data_key_file or folder / "roster-data.key",
        )

    @property
    def roster_keys_created_on_start(self) -> bool:
        """SQLite is one host: its missing key files are made at the first start. Replicas
        on PostgreSQL must share keys made once, so they never make their own."""
        return self.database_url.startswith("sqlite:///")


def load_cloud_settings(**overrides: Any) -> CloudSettings:
    """Settings from the environment and secret files; ``ConfigError`` names each bad field."""
    secrets = os.environ.get("CREDENTIALS_DIRECTORY")
    values = {key: value for key, value in overrides.items() if value is not None}
    try:
        if secrets and Path(secrets).is_dir():
            return CloudSettings(_secrets_dir=secrets, **values)
        return CloudSettings(**values)
    except ValidationError as exc:
        lines = []
        for item in exc.errors(include_url=False):
            where = ".".join(str(part) for part in item["loc"])
            lines.append(f"KIOSK_CLOUD_{where.upper()}: {item['msg']}" if where else item["msg"])
        raise ConfigError("\n".join(lines)) from None
