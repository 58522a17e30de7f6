"""Settings sections for the devices: the camera and the slot board."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: query parameters some IP cameras take their credentials in (``?user=..&password=..``)
_SECRET_QUERY = re.compile(
    r"(?i)(^|[&;])((?:password|passwd|pwd|pass|token|auth|key|secret)=)[^&;]*"
)


def shown_source(source: str) -> str:
    """``camera.source`` as logs, status and ``kiosk config show`` may show it: an IP
    camera's URL without its password (``rtsp://admin:***@host/...``, also in the query)."""
    if "://" not in source:
        return source  # a device index or path, a folder, a file
    try:
        parts = urlsplit(source)
        password = parts.password
    except ValueError:  # a malformed URL (a bad port): keep only what precedes the host
        return source.split("://", 1)[0] + "://***"
    netloc = parts.netloc
    if password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = _SECRET_QUERY.sub(r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class CameraConfig(BaseModel):
    """Where frames come from.

    ``replay`` reads a folder of images (or a video file) at ``fps``; ``opencv`` opens a V4L2
    device index or path, an RTSP/HTTP URL or a video file; ``picamera2`` is the Raspberry Pi
    camera (Raspberry Pi OS only; ``source`` is its index). A source that is lost is reopened
    after ``reconnect_initial_s``, doubling up to ``reconnect_max_s``. A source that gives no
    frame for ``stall_s`` (or three frame periods, if longer) without saying why (a read that
    waits for ever) counts as lost until frames come again; so does a live camera that gives
    the same picture that long (frozen).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["replay", "opencv", "picamera2"] = "replay"
    source: str = Field(default="", description="folder, device, URL or file, by kind")
    fps: float = Field(default=5.0, gt=0, le=120)
    width: int = Field(default=640, ge=160, le=4096)
    height: int = Field(default=480, ge=120, le=4096)
    loop: bool = Field(default=False, description="replay: start again at the end")
    open_timeout_s: float = Field(default=5.0, gt=0, le=60, description="opencv: open/read timeout")
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=600)
    stall_s: float = Field(
        default=5.0, gt=0, le=600, description="no frame for this long: the camera is lost"
    )

    @model_validator(mode="after")
    def _reconnect_order(self) -> CameraConfig:
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_initial_s ({self.reconnect_initial_s:g} s) must not exceed "
                f"reconnect_max_s ({self.reconnect_max_s:g} s): waits double up to the latter"
            )
        return self


class BoardConfig(BaseModel):
    """The slot board on its serial line (any pyserial URL), and the cabinet's slots.

        ``min_charge_pct`` is the least charge a powerbank needs to be ejected for a rental.
    A powerbank the board reports at ``hot_battery_c`` or hotter, or that stays docked below
    full without gaining charge for ``charge_stall_s``, is flagged and not rented
    (``edge.cabinet.battery``).
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default="/dev/ttyAMA0", min_length=1)
    baudrate: int = Field(default=115200, ge=1200, le=3_000_000)
    timeout_s: float = Field(default=0.5, gt=0, le=10)
    retries: int = Field(default=3, ge=0, le=10)
    slots: int = Field(default=8, ge=1, le=64)
    min_charge_pct: int = Field(default=80, ge=1, le=100, description="least charge to rent")
    hot_battery_c: int = Field(
        default=50, ge=20, le=120, description="a powerbank this hot (deg C) is not rented"
    )
    charge_stall_s: float = Field(
        default=1800.0,
        ge=0,
        le=7 * 86400,
        description="a powerbank docked below full that gains no charge for this long is not "
        "rented (0: never judged)",
    )
