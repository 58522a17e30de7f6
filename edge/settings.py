"""The one settings root of the kiosk, composed of a section per package.

Values come from, highest priority first: ``KIOSK_*`` environment variables (``__`` nests,
so ``KIOSK_BOARD__BAUDRATE=57600`` sets ``board.baudrate``), the TOML file
(``/etc/kiosk/kiosk.toml`` by default, ``--config PATH`` to choose another), secret files
in ``$CREDENTIALS_DIRECTORY`` or ``/etc/kiosk/credentials`` (one file per secret, named by
its path, e.g. ``mqtt__password``), then the defaults below.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from cloud_sync.config import MqttConfig, OutboxConfig, SyncConfig
from cloud_sync.errors import ConfigError
from edge.config import (
    FlowSection,
    KioskSection,
    LogSection,
    RosterSection,
    UiSection,
    UpdateSection,
    VisionSection,
)
from hardware.config import BoardConfig, CameraConfig, shown_source

DEFAULT_CONFIG_PATH = Path("/etc/kiosk/kiosk.toml")
DEFAULT_SECRETS_DIR = Path("/etc/kiosk/credentials")


def secrets_dir() -> Path | None:
    """systemd credentials when the service has them, else the kiosk's own folder."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        return Path(credentials)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


class Settings(BaseSettings):
    """Every setting of a kiosk, one section per concern."""

    model_config = SettingsConfigDict(
        env_prefix="KIOSK_",
        env_nested_delimiter="__",
        secrets_nested_delimiter="__",
        secrets_prefix="",
        extra="forbid",
        validate_default=True,
    )

    kiosk: KioskSection = KioskSection()
    log: LogSection = LogSection()
    vision: VisionSection = VisionSection()
    roster: RosterSection = RosterSection()
    flow: FlowSection = FlowSection()
    ui: UiSection = UiSection()
    camera: CameraConfig = CameraConfig()
    board: BoardConfig = BoardConfig()
    outbox: OutboxConfig = OutboxConfig()
    sync: SyncConfig = SyncConfig()
    mqtt: MqttConfig = MqttConfig()
    update: UpdateSection = UpdateSection()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment overrides it.
        return env_settings, init_settings, NestedSecretsSettingsSource(file_secret_settings)

    @model_validator(mode="after")
    def _roster_outlives_its_pulls(self) -> Settings:
        """A roster pulled every ``sync.roster_interval_s`` must not count as too old, nor
        be purged, between two pulls (a kiosk that hears the cloud would stop renting)."""
        pull_s = self.sync.roster_interval_s
        for name, hours in (
            ("max_age_h", self.roster.max_age_h),
            ("purge_after_h", self.roster.purge_after_h),
        ):
            if hours and hours * 3600 < 2 * pull_s:
                raise ValueError(
                    f"roster.{name} ({hours:g} h) must be at least twice "
                    f"sync.roster_interval_s ({pull_s:g} s): a kiosk that hears the cloud "
                    "would otherwise stop renting between two roster pulls"
                )
        return self

    @property
    def outbox_path(self) -> Path:
        return self.kiosk.state_dir / self.outbox.filename

    @property
    def roster_path(self) -> Path:
        return self.kiosk.state_dir / self.roster.filename

    @property
    def keys_dir(self) -> Path:
        return self.roster.keys_dir or self.kiosk.state_dir / "keys"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a settings file, turning every failure into a one-line ``ConfigError``."""
    try:
        if not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
            # a pipe or a device would block the command or read forever
            raise ConfigError(
                f"{path}: not a regular file (a pipe or a device), not a settings file"
            )
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a settings file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8 text") from None


def describe_validation_error(error: ValidationError, origin: str) -> str:
    """One line per problem: ``origin: field.path: reason``."""
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            reason = "unknown setting"
        elif "input" in item and item["type"] != "missing" and not isinstance(item["input"], dict):
            reason = f"{reason} (got {item['input']!r})"  # a section's own rule names its fields
        lines.append(f"{origin}: {where}: {reason}" if where else f"{origin}: {reason}")
    return "\n".join(lines)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from a file (when given or present at the default place),
    the environment and secret files. Raises ``ConfigError`` naming every bad field.

    ``overrides`` are section dictionaries applied over the file (used by ``kiosk demo``).
    """
    if path is not None:
        values = read_toml(path)
        origin = str(path)
    elif DEFAULT_CONFIG_PATH.is_file():
        values = read_toml(DEFAULT_CONFIG_PATH)
        origin = str(DEFAULT_CONFIG_PATH)
    else:
        values, origin = {}, "settings"
    for section, fields in values.items():
        if section in Settings.model_fields and not isinstance(fields, dict):
            # the environment would replace it silently: say so instead
            raise ConfigError(f"{origin}: {section}: must be a table ([{section}]), got {fields!r}")
    for section, fields in overrides.items():
        values.setdefault(section, {}).update(fields)
    try:
        return Settings(_secrets_dir=secrets_dir(), **values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, origin)) from None
    except SettingsError as exc:  # a KIOSK_<SECTION> variable that is not JSON
        raise ConfigError(
            f"environment: {exc}; set one field as KIOSK_<SECTION>__<FIELD>, or the "
            "section as a JSON object"
        ) from None


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret shown as ``**********`` (and
    an IP camera's password in ``camera.source`` as ``***``)."""

    def scrub(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "**********"
        if isinstance(value, dict):
            return {key: scrub(item) for key, item in value.items()}
        return value

    data: dict[str, Any] = _jsonable(scrub(settings.model_dump(mode="python")))
    data["camera"]["source"] = shown_source(settings.camera.source)
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
