"""Compatibility name for ``hardware.cameras`` (the camera sources now live in that package)."""

from hardware.cameras import (
    IMAGE_SUFFIXES,
    Camera,
    Frame,
    Image,
    ReplayCamera,
    decode_image,
    list_images,
    read_image,
    to_rgb8,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "Camera",
    "Frame",
    "Image",
    "ReplayCamera",
    "decode_image",
    "list_images",
    "read_image",
    "to_rgb8",
]
