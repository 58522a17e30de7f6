"""Open the camera that the settings name (``camera.kind``), reopening it when it is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hardware.cameras.base import Camera
from hardware.cameras.opencv import OpenCVCamera
from hardware.cameras.picamera import Picamera2Camera
from hardware.cameras.reconnect import CameraStatus, ReconnectingCamera
from hardware.cameras.replay import ReplayCamera
from hardware.config import CameraConfig
from hardware.errors import CameraOpenError


def source_for(config: CameraConfig, max_pixels: int) -> Callable[[], Camera]:
    """A function that opens the configured source once (no retries)."""
    if config.kind == "replay":
        if not config.source:
            raise CameraOpenError("camera.source is empty: give the folder or video to replay")
        folder = Path(config.source)
        return lambda: ReplayCamera(
            folder, fps=config.fps, loop=config.loop, max_pixels=max_pixels, skip_bad=True
        )
    if config.kind == "opencv":
        source = config.source or "0"
        return lambda: OpenCVCamera(
            source,
            width=config.width,
            height=config.height,
            fps=config.fps,
            open_timeout_s=config.open_timeout_s,
            max_pixels=max_pixels,
        )
    index = int(config.source) if config.source.isdigit() else 0
    return lambda: Picamera2Camera(config.width, config.height, camera_index=index)


def open_camera(
    config: CameraConfig,
    max_pixels: int = 40_000_000,
    on_status: Callable[[CameraStatus], None] | None = None,
) -> ReconnectingCamera:
    """The configured camera behind ``ReconnectingCamera`` (a replay gives up after one try)."""
    return ReconnectingCamera(
        source_for(config, max_pixels),
        initial_s=config.reconnect_initial_s,
        max_s=config.reconnect_max_s,
        give_up_after=1 if config.kind == "replay" else None,
        on_status=on_status,
    )
