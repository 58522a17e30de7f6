"""Settings sections owned by the kiosk runtime itself."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class KioskSection(BaseModel):
    """Who this kiosk is and where it keeps its state."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default="kiosk-dev", pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    site: str = Field(default="", max_length=200)
    mode: Literal["rental", "boarding"] = "rental"
    state_dir: Path = Path("/var/lib/kiosk")
    route: str = Field(default="", max_length=64, description="boarding mode: the route served")
    vehicle: str = Field(default="", max_length=64, description="boarding mode: the vehicle")


class QualitySection(BaseModel):
    """The quality gate before a face is encoded (see docs/face-pipeline.md)."""

    model_config = ConfigDict(extra="forbid")

    min_face_px: int = Field(default=80, ge=40, le=1000)
    min_inside: float = Field(default=0.75, ge=0.0, le=1.0)
    min_sharpness: float = Field(default=15.0, ge=0.0, le=10_000.0)
    min_brightness: float = Field(default=40.0, ge=0.0, le=255.0)
    max_brightness: float = Field(default=220.0, ge=0.0, le=255.0)
    max_roll_deg: float = Field(default=25.0, gt=0.0, le=90.0)
    max_yaw: float = Field(default=0.35, gt=0.0, le=2.0)
    min_pitch: float = Field(default=0.45, ge=0.0, le=2.0)
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

    # "blink" needs dlib's 68-point landmark model (iBUG 300-W: non-commercial licence).
    method: Literal["blink", "off"] = "blink"
    timeout_s: float = Field(default=6.0, gt=0.5, le=60.0)
    closed_ratio: float = Field(default=0.75, gt=0.3, lt=1.0)


class VisionSection(BaseModel):
    """Face detection, the quality gate, liveness and the matching decision."""

    model_config = ConfigDict(extra="forbid")

    detect_width: int = Field(default=640, ge=160, le=1920)
    live_detect_width: int = Field(default=320, ge=160, le=1920)
    max_upsample: int = Field(default=1, ge=0, le=2)
    min_detection_score: float = Field(default=0.25, ge=-1.0, le=3.0)
    max_image_pixels: int = Field(default=40_000_000, ge=1_000_000, le=200_000_000)
    match_threshold: float = Field(default=0.47, gt=0.1, lt=0.8)
    match_margin: float = Field(default=0.08, ge=0.0, lt=0.5)
    consensus_k: int = Field(default=2, ge=1, le=10)
    consensus_n: int = Field(default=3, ge=1, le=20)
    track_lost_s: float = Field(default=0.7, gt=0.0, le=10.0)
    reverify_s: float = Field(default=2.0, gt=0.0, le=30.0)
    retry_refused_s: float = Field(default=1.0, gt=0.0, le=30.0)
    quality: QualitySection = QualitySection()
    liveness: LivenessSection = LivenessSection()

    @model_validator(mode="after")
    def _consensus(self) -> VisionSection:
        if self.consensus_k > self.consensus_n:
            raise ValueError("consensus_k must not exceed consensus_n")
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


class UiSection(BaseModel):
    """The rider screen's local server."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    language: Literal["en", "es"] = "en"


class FlowSection(BaseModel):
    """Timeouts of the rider's flow, in seconds."""

    model_config = ConfigDict(extra="forbid")

    checking_s: float = Field(default=10.0, gt=0, le=120)
    eject_s: float = Field(default=8.0, gt=0, le=120)
    take_s: float = Field(default=30.0, gt=0, le=300)
    result_s: float = Field(default=5.0, gt=0, le=60)
    repeat_guard_s: float = Field(default=60.0, ge=0, le=3600)
    boarding_window_s: float = Field(default=600.0, ge=0, le=86400)
