"""Settings sections owned by the kiosk runtime itself."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class KioskSection(BaseModel):
    """Who this kiosk is and where it keeps its state."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default="kiosk-dev", pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    site: str = Field(default="", max_length=200)
    mode: Literal["rental", "boarding"] = "rental"
    state_dir: Path = Path("/var/lib/kiosk")


class VisionSection(BaseModel):
    """Face detection and the matching decision."""

    model_config = ConfigDict(extra="forbid")

    detect_width: int = Field(default=640, ge=160, le=1920)
    max_upsample: int = Field(default=1, ge=0, le=2)
    max_image_pixels: int = Field(default=40_000_000, ge=1_000_000, le=200_000_000)
    match_threshold: float = Field(default=0.5, gt=0.1, lt=0.8)
    match_margin: float = Field(default=0.08, ge=0.0, lt=0.5)


class LogSection(BaseModel):
    """Log format and level."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
