"""Cameras: one small protocol and three sources (replay, OpenCV, picamera2).

``Frame`` carries an RGB picture and the monotonic time it was taken. Every source decodes
through ``decode_image``/``to_rgb8``, so odd input (grayscale, 16-bit, alpha, oversized,
corrupt, a format other than JPEG, PNG or WebP) becomes the same RGB uint8 frames or a ``FrameError`` naming the problem. A live
source that vanishes raises ``CameraOpenError``; ``ReconnectingCamera`` (what
``open_camera`` returns) reopens it with backoff and reports each change.
"""

from hardware.cameras.base import Camera, Frame, Image
from hardware.cameras.codec import (
    ACCEPTED_FORMATS,
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    cap_pixels,
    decode_image,
    list_images,
    read_image,
    read_image_bytes,
    to_rgb8,
)
from hardware.cameras.factory import open_camera, source_for
from hardware.cameras.headers import header_size
from hardware.cameras.opencv import OpenCVCamera
from hardware.cameras.picamera import Picamera2Camera
from hardware.cameras.reconnect import CameraStatus, ReconnectingCamera
from hardware.cameras.replay import ReplayCamera

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "Camera",
    "CameraStatus",
    "Frame",
    "Image",
    "OpenCVCamera",
    "Picamera2Camera",
    "ReconnectingCamera",
    "ReplayCamera",
    "cap_pixels",
    "decode_image",
    "header_size",
    "list_images",
    "open_camera",
    "read_image",
    "read_image_bytes",
    "source_for",
    "to_rgb8",
]
