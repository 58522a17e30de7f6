"""Errors raised by device drivers (``hardware``).

The tree, by phase::

    HardwareError
    ├── CameraError
    │   ├── CameraOpenError (ConnectionError)   the source cannot be opened or vanished
    │   └── FrameError (ValueError)             a frame or image cannot be decoded
    └── BoardError                              the slot board (serial line)

Exceptions of third-party libraries (OpenCV, pyserial) are translated into these where
they enter, so nothing outside ``hardware`` sees them.
"""

from __future__ import annotations


class HardwareError(Exception):
    """Root of every error raised by a device driver."""


class CameraError(HardwareError):
    """A camera source failed."""


class CameraOpenError(CameraError, ConnectionError):
    """The camera source cannot be opened, or disappeared."""


class FrameError(CameraError, ValueError):
    """A frame or image file cannot be decoded into a picture."""


class BoardError(HardwareError):
    """The slot board failed."""
