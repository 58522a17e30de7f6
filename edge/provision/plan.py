"""``kiosk provision``, the pure part: the provisioning file, the journal, the plan and the
files it leads to; ``edge.provision.apply`` carries the plan out (see docs/provisioning.md).

The provisioning file is what ``scripts/flash`` writes, checked by the same rules; the
first problem is one line, ``<file>: <field>: <reason>``, before anything is written. The
token and the Wi-Fi password are ``SecretStr``. The journal records the steps done;
``plan`` compares it with the file to decide what is left, so an interrupted run resumes
and a finished one does nothing.

Its errors (the file, this kiosk's state, a refused token) are in
``edge.provision.errors``.
"""

from __future__ import annotations

import copy
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
)

from cloud_sync.curve_points import strong_pinned_key
from cloud_sync.errors import ConfigError
from edge.provision.errors import ProvisionFileError, ProvisionStateError
from edge.settings import Settings, describe_validation_error

JOURNAL_NAME = "provision.json"
MAX_FILE_BYTES = 64 * 1024
KIOSK_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
TOKEN = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")
TIMEZONE = re.compile(r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$")
SSH_KEY = re.compile(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-\S+) \S+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)


# -- the provisioning file -------------------------------------------------------------------


def _http_url(value: str) -> bool:
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        return False
    return re.match(r"^https?://[^\s/]+", value) is not None


def _line(limit: int) -> Callable[[str], bool]:
    return lambda value: len(value) <= limit and not CONTROL.search(value)


# field: (accepts, reason); the rules of scripts/flash, and a few it cannot know (one line,
# an SSID of at most 32 bytes). A secret's reason never shows its value.
_RULES: dict[str, tuple[Callable[[str], object], str]] = {
    "kiosk_id": (KIOSK_ID.match, "{!r} must be 2-63 of a-z, 0-9 and -"),
    "site": (_line(200), "must be one line of at most 200 characters"),
    "cloud_url": (_http_url, "{!r} is not an http(s) URL"),
    "token": (TOKEN.match, "must be 16-256 URL-safe characters"),
    "wifi_ssid": (lambda v: len(v.encode()) <= 32 and _line(32)(v), "must be at most 32 bytes"),
    "wifi_psk": (lambda v: 8 <= len(v) <= 63 and _line(63)(v), "must be 8-63 characters"),
    "ssh_key": (lambda v: SSH_KEY.match(v) and _line(16384)(v), "is not an OpenSSH public key"),
    "timezone": (TIMEZONE.match, "{!r} is not a zone name like Europe/Madrid"),
}
_REQUIRED = frozenset({"kiosk_id", "site", "cloud_url", "token"})


class ProvisionFile(BaseModel):
    """The installer's provisioning file, checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kiosk_id: str
    site: str
    cloud_url: str
    token: SecretStr
    wifi_ssid: str = ""
    wifi_psk: SecretStr = SecretStr("")
    ssh_key: str = ""
    timezone: str = ""

    @model_validator(mode="before")
    @classmethod
    def _strip(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
        return data

    @field_validator(*_RULES)
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not text and info.field_name in _REQUIRED:
            raise ValueError("is missing")
        accepts, reason = _RULES[str(info.field_name)]
        if text and not accepts(text):
            raise ValueError(reason.format(text))
        return value

    @model_validator(mode="after")
    def _wifi_pair(self) -> ProvisionFile:
        if bool(self.wifi_ssid) != bool(self.wifi_psk.get_secret_value()):
            raise ValueError("wifi_ssid and wifi_psk go together")
        return self

    @property
    def token_id(self) -> str:
        """A fingerprint of the token (SHA-256, shortened): tells tokens apart, reveals none."""
        return hashlib.sha256(self.token.get_secret_value().encode()).hexdigest()[:16]


_SECRET_FIELDS = frozenset({"token", "wifi_psk"})


def _reason(item: Any) -> tuple[str, str]:
    where = ".".join(str(part) for part in item["loc"]) or "(file)"
    kind, message = item["type"], str(item["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        return where, "is missing"
    if kind == "extra_forbidden":
        return where, "unknown field"
    if kind in ("string_type", "model_type"):
        got = "" if where in _SECRET_FIELDS else f" (got {item['input']!r})"
        return where, f"must be a string in quotes{got}"
    return where, message


def parse_provision_file(data: bytes, origin: str) -> ProvisionFile:
    """The checked provisioning file; ``ProvisionFileError`` with one line otherwise."""
    import tomllib

    if len(data) > MAX_FILE_BYTES:
        raise ProvisionFileError(f"{origin}: too large for a provisioning file ({len(data)} bytes)")
    try:
        values = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProvisionFileError(f"{origin}: not valid TOML: the file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionFileError(f"{origin}: not valid TOML: {exc}") from None
    try:
        return ProvisionFile.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where, reason = _reason(first)
        if where == "(file)":  # the model validator (Wi-Fi pair) names its own fields
            raise ProvisionFileError(f"{origin}: {reason}") from None
        raise ProvisionFileError(f"{origin}: {where}: {reason}") from None


# -- the journal and the plan ----------------------------------------------------------------


class Step(StrEnum):
    KEYS = "keys"  # the kiosk's Ed25519 and X25519 key pairs exist (made once, then reused)
    FIRST_BOOT = "first-boot"  # Wi-Fi, SSH key and time zone files for the image to apply
    REGISTER = "register"  # the public keys are registered with the cloud; its keys known
    CONFIG = "config"  # kiosk.toml names the kiosk, the cloud and the pinned roster key
    CLEANUP = "cleanup"  # the provisioning file (and its token) is gone from the boot partition


STEPS: tuple[Step, ...] = tuple(Step)


class Registration(BaseModel):
    """What the cloud answered to ``POST /v1/provision`` (the part the kiosk keeps), held to
    the rules of the settings it goes into: an answer that breaks them is refused before it
    is recorded, never kept to fail every later run."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kiosk_id: str
    public_key: str
    box_public_key: str | None = None
    site: str = ""
    roster_public_key: str | None = Field(default=None, pattern=r"^[A-Za-z0-9+/]{43}=$")
    roster_model: str = ""

    @field_validator("roster_public_key", mode="before")
    @classmethod
    def _none_served(cls, value: Any) -> Any:
        return None if value == "" else value

    _strong_roster_key = field_validator("roster_public_key")(strong_pinned_key)

    @field_validator("site")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not _line(200)(value):
            raise ValueError("must be one line of at most 200 characters")
        return value


class Journal(BaseModel):
    """The steps done for one provisioning file; never holds the token or a private key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    kiosk_id: str
    token_id: str
    cloud_url: str
    done: tuple[Step, ...] = ()
    public_key: str | None = None
    box_public_key: str | None = None
    registration: Registration | None = None

    def record(self, step: Step, **changes: Any) -> Journal:
        done = tuple(s for s in STEPS if s in self.done or s == step)
        return self.model_copy(update={**changes, "done": done})


@dataclass(frozen=True)
class Plan:
    """Where to start from, and the steps left in order (none: already provisioned)."""

    journal: Journal
    steps: tuple[Step, ...]
    resumed: bool = False

    @property
    def nothing_to_do(self) -> bool:
        return not self.steps


def plan(request: ProvisionFile | None, journal: Journal | None, origin: str) -> Plan:
    """The steps left, given the provisioning file (None when it is gone) and the journal."""
    if request is None:
        if journal is None:
            raise ProvisionStateError(
                f"{origin}: no such file, and this kiosk was never provisioned"
            )
        if Step.CONFIG not in journal.done:
            done = ", ".join(journal.done) or "nothing"
            raise ProvisionStateError(
                f"{origin}: no such file, but provisioning of {journal.kiosk_id} stopped "
                f"before it finished (done: {done}); put the provisioning file back"
            )
        return Plan(journal, () if Step.CLEANUP in journal.done else (Step.CLEANUP,))
    fresh = Journal(
        kiosk_id=request.kiosk_id, token_id=request.token_id, cloud_url=request.cloud_url
    )
    if journal is None:
        return Plan(fresh, STEPS)
    registered = Step.REGISTER in journal.done
    if journal.kiosk_id != request.kiosk_id and registered:
        raise ProvisionStateError(
            f"this kiosk is already provisioned as {journal.kiosk_id}, not {request.kiosk_id} "
            f"as {origin} says; a kiosk keeps its id (start from a clean state folder to "
            "make it another kiosk)"
        )
    same = (journal.kiosk_id, journal.token_id, journal.cloud_url) == (
        fresh.kiosk_id,
        fresh.token_id,
        fresh.cloud_url,
    )
    if not same:  # a new token (or cloud): register again, with the keys made before
        kept = (Step.KEYS,) if Step.KEYS in journal.done else ()
        start = fresh.model_copy(
            update={
                "done": kept,
                "public_key": journal.public_key,
                "box_public_key": journal.box_public_key,
            }
        )
        return Plan(start, tuple(s for s in STEPS if s not in kept), resumed=bool(kept))
    left = tuple(step for step in STEPS if step not in journal.done)
    if not left:  # done, yet the file is back: it holds a spent token, remove it again
        return Plan(journal, (Step.CLEANUP,))
    return Plan(journal, left, resumed=bool(journal.done))


def refusal(status: int | None, cloud_says: str, kiosk_id: str) -> str | None:
    """What to tell the installer when the cloud refuses the token (None: another refusal)."""
    issue = f"kiosk-cloud issue-token --kiosk-id {kiosk_id}"
    refused = f"the cloud refused the provisioning token ({cloud_says})"
    return {
        401: f"{refused}; issue a new one ({issue})",
        403: f"{refused}; use the kiosk id it was issued for, or a token for {kiosk_id}",
        409: f"the cloud refused to register {kiosk_id} ({cloud_says}); issue a token bound "
        f"to it ({issue})",
    }.get(status or 0)


# -- the settings file -----------------------------------------------------------------------


class _FileOnly(Settings):
    """The settings as one file gives them: no environment, no secret files."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # no secrets folder is given, so the secrets source reads nothing
        return init_settings, NestedSecretsSettingsSource(file_secret_settings)


def check_config(values: dict[str, Any], origin: str) -> Settings:
    """Validate settings values as ``kiosk config check`` would; ``ConfigError`` if bad."""
    try:
        return _FileOnly(**values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, origin)) from None


def render_config(
    base: dict[str, Any],
    request: ProvisionFile,
    state_dir: Path,
    registration: Registration | None = None,
) -> dict[str, Any]:
    """``base`` (the settings file already there, or empty) with what provisioning sets:
    the kiosk's id, site and state folder, the cloud URL and the pinned roster key. Every
    other setting is kept."""
    values = copy.deepcopy(base)

    def section(name: str) -> dict[str, Any]:
        found = values.setdefault(name, {})
        if not isinstance(found, dict):
            raise ConfigError(f"[{name}] must be a table in the settings file")
        return found

    site = registration.site if registration and registration.site else request.site
    others = {k: v for k, v in section("kiosk").items() if k not in ("id", "site")}
    values["kiosk"] = {"id": request.kiosk_id, "site": site, "state_dir": str(state_dir), **others}
    section("sync")["cloud_url"] = request.cloud_url
    if registration is not None:
        roster = section("roster")
        if registration.roster_public_key:
            roster["cloud_roster_key"] = registration.roster_public_key
        else:  # this cloud serves no roster: pin nothing
            roster.pop("cloud_roster_key", None)
            if not roster:
                values.pop("roster")
    return values


# -- files for the image's first-boot scripts ------------------------------------------------


@dataclass(frozen=True)
class FirstBootFile:
    """A file under ``<etc>/first-boot/`` for the image to apply; ``secret`` ones are 0600."""

    name: str
    text: str
    secret: bool = False

    def __repr__(self) -> str:
        return f"FirstBootFile({self.name})"


_NM_WIFI = """\
[connection]
id=kiosk-wifi
uuid={uuid}
type=wifi
autoconnect=true

[wifi]
mode=infrastructure
ssid={ssid}

[wifi-security]
key-mgmt=wpa-psk
psk={psk}

[ipv4]
method=auto

[ipv6]
method=auto
"""


def _keyfile_value(text: str) -> str:
    """A value escaped for a GLib key file (NetworkManager's keyfile format)."""
    escaped = text.replace("\\", "\\\\")
    return "\\s" + escaped[1:] if escaped.startswith(" ") else escaped


def first_boot_files(request: ProvisionFile) -> tuple[FirstBootFile, ...]:
    """``wifi.nmconnection`` (a NetworkManager keyfile, 0600), ``authorized_keys`` (the
    technician's SSH key) and ``timezone`` (one zone name), for what the file asks."""
    files: list[FirstBootFile] = []
    if request.wifi_ssid:
        text = _NM_WIFI.format(
            uuid=uuid.uuid5(uuid.NAMESPACE_URL, f"kiosk-wifi:{request.wifi_ssid}"),
            ssid=_keyfile_value(request.wifi_ssid),
            psk=_keyfile_value(request.wifi_psk.get_secret_value()),
        )
        files.append(FirstBootFile("wifi.nmconnection", text, secret=True))
    if request.ssh_key:
        files.append(FirstBootFile("authorized_keys", request.ssh_key + "\n"))
    if request.timezone:
        files.append(FirstBootFile("timezone", request.timezone + "\n"))
    return tuple(files)
