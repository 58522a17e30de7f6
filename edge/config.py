"""Settings sections owned by the kiosk runtime itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloud_sync import setting_paths
from cloud_sync.config import HOST_PATTERN, one_line
from cloud_sync.curve_points import strong_pinned_key


class KioskSection(BaseModel):
    """Who this kiosk is and where it keeps its state."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default="kiosk-dev", pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    site: str = Field(default="", max_length=200)
    mode: Literal["rental", "boarding"] = "rental"
    state_dir: Path = Path("/var/lib/kiosk")
    route: str = Field(default="", max_length=64, description="boarding mode: the route served")
    vehicle: str = Field(default="", max_length=64, description="boarding mode: the vehicle")

    _state_dir = field_validator("state_dir")(setting_paths.folder)
    _one_line = field_validator("site", "route", "vehicle")(one_line)


class QualitySection(BaseModel):
    """The quality gate before a face is encoded (see docs/face-pipeline.md)."""

    model_config = ConfigDict(extra="forbid")

    min_face_px: int = Field(default=56, ge=40, le=1000)
    min_inside: float = Field(default=0.75, ge=0.0, le=1.0)
    min_sharpness: float = Field(default=3.5, ge=0.0, le=10_000.0)
    min_brightness: float = Field(default=40.0, ge=0.0, le=255.0)
    max_brightness: float = Field(default=220.0, ge=0.0, le=255.0)
    max_roll_deg: float = Field(default=25.0, gt=0.0, le=90.0)
    max_yaw: float = Field(default=0.45, gt=0.0, le=2.0)
    min_pitch: float = Field(default=0.35, ge=0.0, le=2.0)
    max_pitch: float = Field(default=1.25, ge=0.0, le=3.0)

    @model_validator(mode="after")
    def _ordered(self) -> QualitySection:
        if self.min_brightness >= self.max_brightness:
            raise ValueError("min_brightness must be below max_brightness")
        if self.min_pitch >= self.max_pitch:
            raise ValueError("min_pitch must be below max_pitch")
        return self


class LivenessSection(BaseModel):
    """The check that a live person, not a photo, is in front of the camera."""

    model_config = ConfigDict(extra="forbid")

    # "blink" reads the eyes from the face mesh (models/mesh.py: Google's MediaPipe models,
    # Apache-2.0); "off" also turns the challenge off.
    method: Literal["blink", "off"] = "blink"
    timeout_s: float = Field(default=6.0, gt=0.5, le=60.0)
    closed_ratio: float = Field(default=0.75, gt=0.3, lt=1.0)
    # "risky": a face offered the claim step, or a match of a rider flagged as a lookalike,
    # answers a random prompt from `prompts` first (edge/vision/challenge.py); "off": blinks
    challenge: Literal["risky", "off"] = "risky"
    prompts: tuple[Literal["turn_left", "turn_right", "blink_twice"], ...] = Field(
        default=("turn_left", "turn_right", "blink_twice"), min_length=1
    )
    # prompts answered one after the other, each within challenge_timeout_s (a replayed
    # video must happen to answer each of them: docs/face-pipeline.md, Liveness)
    rounds: int = Field(default=2, ge=1, le=3)
    challenge_timeout_s: float = Field(default=5.0, ge=2.0, le=60.0)
    turn_deg: float = Field(default=15.0, ge=8.0, le=45.0)


class VisionSection(BaseModel):
    """Face detection, the quality gate, liveness and the matching decision."""

    model_config = ConfigDict(extra="forbid")

    detect_width: int = Field(default=640, ge=160, le=1920)
    live_detect_width: int = Field(default=320, ge=160, le=1920)
    max_upsample: int = Field(default=1, ge=0, le=2)
    min_detection_score: float = Field(default=0.25, ge=-1.0, le=3.0)
    max_image_pixels: int = Field(default=40_000_000, ge=1_000_000, le=200_000_000)
    # Above 1, an enrolment template is the mean encoding of this many jittered copies of
    # the face (live frames always use one). Off by default: on lfw-dev it recognises more
    # riders but lets more strangers through (docs/face-pipeline.md).
    enrol_jitters: int = Field(default=1, ge=1, le=100)
    # A rider enrolled from several photos is matched against the mean of their templates
    # (on dev with two photos: 258 of 258 recognised, against 244 with each template apart).
    fuse_templates: bool = True
    # propose verified visits' encodings as templates (edge.runtime.learning)
    learn_templates: bool = True
    # "cohort": the roster-size aware policy with the claim step (docs/face-pipeline.md),
    # its numbers from operating_points (default: the file calibrated on lfw-dev that ships
    # in edge/vision); "threshold": match_threshold and match_margin alone.
    policy: Literal["cohort", "threshold"] = "cohort"
    operating_points: Path | None = None
    match_threshold: float = Field(default=0.47, gt=0.1, lt=0.8)
    match_margin: float = Field(default=0.08, ge=0.0, lt=0.5)
    claim_tries: int = Field(default=3, ge=1, le=10, description="wrong claims before a lock")
    claim_lock_s: float = Field(default=300.0, ge=10.0, le=86400.0)
    claim_window_s: float = Field(default=600.0, ge=10.0, le=86400.0)
    # Limits a new face track or a restart does not reset (kept in claims.sqlite): wrong
    # claims against each rider the face could be, and at this kiosk, within their windows
    claim_rider_tries: int = Field(
        default=6, ge=1, le=50, description="wrong claims against one rider before a lock"
    )
    claim_rider_window_s: float = Field(default=86400.0, ge=600.0, le=7 * 86400.0)
    claim_kiosk_tries: int = Field(
        default=30, ge=1, le=1000, description="wrong claims at this kiosk before a lock"
    )
    claim_kiosk_window_s: float = Field(default=3600.0, ge=60.0, le=86400.0)
    consensus_k: int = Field(default=2, ge=1, le=10)
    consensus_n: int = Field(default=3, ge=1, le=20)
    fuse_frames: int = Field(
        default=3, ge=1, le=8, description="frames of one face averaged before each decision"
    )
    track_lost_s: float = Field(default=0.7, gt=0.0, le=10.0)
    reverify_s: float = Field(default=2.0, gt=0.0, le=30.0)
    retry_refused_s: float = Field(default=1.0, gt=0.0, le=30.0)
    claim_frames: int = Field(
        default=8,
        ge=1,
        le=16,
        description="frames of a face fused for the claim step's check, gathered while the"
        " rider types",
    )
    claim_frame_s: float = Field(default=0.25, gt=0.0, le=5.0)
    quality: QualitySection = QualitySection()
    liveness: LivenessSection = LivenessSection()

    _points_file = field_validator("operating_points")(setting_paths.input_file)

    @model_validator(mode="after")
    def _consensus(self) -> VisionSection:
        if self.consensus_k > self.consensus_n:
            raise ValueError("consensus_k must not exceed consensus_n")
        if not self.claim_tries <= self.claim_rider_tries <= self.claim_kiosk_tries:
            raise ValueError(
                "claim_tries <= claim_rider_tries <= claim_kiosk_tries, so a rider's own"
                " typos lock their visit before their name, and their name before the kiosk"
            )
        return self


class LogSection(BaseModel):
    """Log format and level."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class RosterSection(BaseModel):
    """The encrypted roster and the keys that open it."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(default="roster.sqlite", min_length=1, pattern=r"^[^/]+$")
    keys_dir: Path | None = Field(default=None, description="default: <state_dir>/keys")
    cloud_roster_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9+/]{43}=$",
        description="the cloud's roster signing key (Ed25519, base64), pinned at provisioning",
    )
    max_age_h: float = Field(default=72.0, gt=0, le=24 * 365)
    purge_after_h: float = Field(
        default=168.0,
        ge=0,
        le=24 * 365,
        description="a kiosk that has not heard from the cloud for this long deletes its "
        "roster (every template and data key) by itself, and pulls a full one when it can "
        "again; 0: never (a roster enrolled locally is never purged)",
    )

    _strong_roster_key = field_validator("cloud_roster_key")(strong_pinned_key)
    _keys_dir = field_validator("keys_dir")(setting_paths.folder)
    erase_wait_s: float = Field(
        default=3.0,
        ge=0,
        le=60,
        description="how long deleting a rider waits for a reader in another process before "
        "it reports the erasure as pending (the kiosk then finishes it by itself)",
    )


class UiSection(BaseModel):
    """The rider screen's local server."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        default="127.0.0.1",
        pattern=HOST_PATTERN,
        max_length=253,
        description="the address the rider page listens on: an IP address or a host name "
        "(127.0.0.1 keeps it on the kiosk; the page answers no request naming another)",
    )
    port: int = Field(default=8080, ge=0, le=65535)
    language: Literal["en", "es"] = Field(
        default="en", description="the language the screen starts in and returns to"
    )
    languages: list[Literal["en", "es"]] = Field(
        default=["en", "es"],
        min_length=1,
        description="a button on the screen for each, so riders choose (none shown for one)",
    )
    greet_by_name: bool = Field(
        default=False,
        description="show the rider's first name on success screens (off: a public screen)",
    )
    preview: bool = Field(
        default=False,
        description="a mirrored low-rate camera picture on the idle and checking screens,"
        " served to 127.0.0.1 only, never stored or logged",
    )
    preview_fps: float = Field(default=2.0, gt=0, le=10, description="the preview's rate")
    offline_after_s: float = Field(
        default=120.0,
        ge=10.0,
        le=86400.0,
        description="show 'Offline' once an event has waited this long with the cloud failing",
    )
    rotation: int = Field(
        default=0,
        description="the touch screen's rotation in degrees, clockwise: 0, 90, 180 or 270 "
        "(kiosk-ui.service)",
    )
    blank_after_s: Annotated[int, Field(ge=10, le=86400)] | Literal["never"] = Field(
        default="never",
        description="turn the screen's backlight off after this many seconds without a touch "
        '(10 to 86400), or "never" (kiosk-ui.service)',
    )

    @field_validator("rotation")
    @classmethod
    def _quarter_turn(cls, value: int) -> int:
        if value not in (0, 90, 180, 270):
            raise ValueError("must be 0, 90, 180 or 270")
        return value


class FlowSection(BaseModel):
    """Timeouts of the rider's flow and the runtime's board intervals, in seconds.

    ``board_eject_s`` is the slot-board driver's own eject timeout (how long it waits for
    the board to present the powerbank, asking again with the same request id meanwhile);
    ``eject_s``, the flow's, must be longer, so the flow never gives up before the driver.
    An eject the board may have carried out without confirming it is settled by asking the
    board again for up to ``confirm_s`` while the rider is asked to wait.
    """

    model_config = ConfigDict(extra="forbid")

    checking_s: float = Field(default=10.0, gt=0, le=120)
    eject_s: float = Field(default=8.0, gt=0, le=120)
    board_eject_s: float = Field(
        default=5.0, gt=0, le=110, description="the board driver's eject timeout"
    )
    confirm_s: float = Field(
        default=30.0, gt=0, le=600, description="asking again about an unconfirmed eject"
    )
    take_s: float = Field(default=30.0, gt=0, le=300)
    result_s: float = Field(default=5.0, gt=0, le=60)
    repeat_guard_s: float = Field(default=60.0, ge=0, le=3600)
    boarding_window_s: float = Field(default=600.0, ge=0, le=86400)
    refusal_window_s: float = Field(
        default=60.0, gt=0, le=86400, description="a rider's repeated refusals, one event"
    )
    claim_s: float = Field(
        default=30.0, ge=5, le=300, description="the claim screen waits this long for a code"
    )
    status_every_s: float = Field(
        default=5.0, ge=0.2, le=300, description="slot status re-read while the board answers"
    )
    status_offline_every_s: float = Field(
        default=1.0, ge=0.2, le=300, description="slot status re-read while it does not"
    )

    @model_validator(mode="after")
    def _flow_outlasts_driver(self) -> FlowSection:
        if self.eject_s <= self.board_eject_s:
            raise ValueError(
                f"flow.eject_s ({self.eject_s:g} s) must be longer than flow.board_eject_s "
                f"({self.board_eject_s:g} s), so the flow never gives up on an eject before "
                "the board driver does"
            )
        return self


def _default_restart() -> list[list[str]]:
    return [
        ["systemctl", "daemon-reload"],
        ["systemctl", "restart", "kiosk-edge.service", "kiosk-sync.service", "kiosk-ui.service"],
    ]


class UpdateSection(BaseModel):
    """``kiosk update``: where versions are installed, which release key signs the bundles,
    how the services are restarted and when a new version counts as healthy."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(
        default=Path("/opt/kiosk"), description="one folder per version, and current"
    )
    release_public_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9+/]{43}=$",
        description="the release key (Ed25519, raw, base64) that must sign every bundle",
    )
    _strong_release_key = field_validator("release_public_key")(strong_pinned_key)
    require_signature: bool = Field(
        default=True, description="refuse unsigned bundles (false only on a development kiosk)"
    )
    python: Path = Field(default=Path("/usr/bin/python3"), description="makes each version's venv")
    system_site_packages: bool = Field(
        default=True, description="the venv sees the OS's python3-picamera2"
    )
    unit_dir: Path = Field(default=Path("/etc/systemd/system"), description="unit links go here")
    restart_commands: list[list[str]] = Field(default_factory=_default_restart)
    health_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="default: http://127.0.0.1:<ui.port>/healthz",
    )
    health_command: list[str] | None = Field(
        default=None, description="instead of health_url: healthy when it exits 0"
    )
    health_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    health_interval_s: float = Field(default=2.0, gt=0, le=60)
    health_passes: int = Field(
        default=3, ge=1, le=100, description="consecutive healthy answers needed"
    )
    keep_versions: int = Field(default=3, ge=2, le=20, description="installed versions kept")

    _folders = field_validator("root", "unit_dir")(setting_paths.folder)
    _python = field_validator("python")(setting_paths.program_file)

    @model_validator(mode="after")
    def _health_window(self) -> UpdateSection:
        needed = self.health_passes * self.health_interval_s
        if self.health_timeout_s < needed:
            raise ValueError(
                f"health_timeout_s ({self.health_timeout_s:g} s) is shorter than "
                f"health_passes x health_interval_s ({needed:g} s): no version could ever "
                "count as healthy, and every update would be switched back"
            )
        return self

    @model_validator(mode="after")
    def _commands(self) -> UpdateSection:
        commands = [*self.restart_commands, *([self.health_command] if self.health_command else [])]
        if any(not command or not all(command) for command in commands):
            raise ValueError("restart_commands and health_command need a program name in each")
        return self
