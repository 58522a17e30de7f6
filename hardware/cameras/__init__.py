"""Cameras: one small protocol and three sources (replay, OpenCV, picamera2).

``Frame`` carries an RGB picture and the monotonic time it was taken. Every source decodes
through ``models.images`` (``decode_image``/``to_rgb8``, shared with enrolment and the
cloud), so odd input (grayscale, 16-bit, alpha, oversized, corrupt, a format other than
JPEG, PNG or WebP) becomes the same RGB uint8 frames or a ``FrameError`` naming the problem. A live
source that vanishes raises ``CameraOpenError``; ``ReconnectingCamera`` (what
``open_camera`` returns) reopens it with backoff and reports each change.
"""

from hardware.cameras.base import Camera, Frame
from hardware.cameras.factory import open_camera, source_for
from hardware.cameras.opencv import OpenCVCamera
from hardware.cameras.picamera import Picamera2Camera
from hardware.cameras.reconnect import CameraStatus, ReconnectingCamera
from hardware.cameras.replay import ReplayCamera, list_images

__all__ = [
    "Camera",
    "CameraStatus",
    "Frame",
    "OpenCVCamera",
    "Picamera2Camera",
    "ReconnectingCamera",
    "ReplayCamera",
    "list_images",
    "open_camera",
    "source_for",
]
