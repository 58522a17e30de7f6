"""Open the camera that the settings name (``camera.kind``), reopening it when it is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hardware.cameras.base import Camera
from hardware.cameras.opencv import OpenCVCamera
from hardware.cameras.picamera import Picamera2Camera
from hardware.cameras.reconnect import CameraStatus, ReconnectingCamera
from hardware.cameras.replay import VIDEO_SUFFIXES, ReplayCamera, list_images
from hardware.config import CameraConfig, shown_source
from hardware.errors import CameraOpenError


def source_for(config: CameraConfig, max_pixels: int) -> Callable[[], Camera]:
    """A function that opens the configured source once (no retries).

    A replay's source is checked here: a folder that is missing or holds no image (and is
    not a video file) raises ``CameraOpenError`` at once, naming ``camera.source``; a live
    camera (``opencv``, ``picamera``) is only opened by the function, so that it may be
    plugged in later.
    """
    if config.kind == "replay":
        if not config.source:
            raise CameraOpenError("camera.source is empty: give the folder or video to replay")
        folder = Path(config.source)
        if not (folder.is_file() and folder.suffix.lower() in VIDEO_SUFFIXES):
            try:  # a replay no retry can mend: said here, at start, not by a camera that gives up
                list_images(folder)
            except CameraOpenError as exc:
                raise CameraOpenError(f"camera.source {exc}") from None
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
    """The configured camera behind ``ReconnectingCamera`` (a replay gives up after one try).

    A source that keeps the consumer waiting ``camera.stall_s`` for a frame (three frame
    periods at ``camera.fps``, if longer) is reported ``stalled`` until frames come again;
    a live camera (not a replay, nor a video file) that gives the same picture that long,
    ``frozen`` until it moves.
    """
    return ReconnectingCamera(
        source_for(config, max_pixels),
        initial_s=config.reconnect_initial_s,
        max_s=config.reconnect_max_s,
        give_up_after=1 if config.kind == "replay" else None,
        on_status=on_status,
        stall_s=max(config.stall_s, 3 / config.fps),
        name=f"camera {config.kind} {shown_source(config.source) or '(default)'}",
        frozen_check=config.kind != "replay" and not Path(config.source).is_file(),
    )
