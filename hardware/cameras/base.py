"""What every camera source shares: the ``Frame`` it yields and the ``Camera`` protocol."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from models.images import Image


@dataclass(frozen=True)
class Frame:
    """One picture from a camera, RGB, with the monotonic time it was captured."""

    image: Image
    timestamp: float
    index: int
    source: str

    def __repr__(self) -> str:  # never dump pixels into a log
        height, width = self.image.shape[:2]
        return f"Frame(index={self.index}, source={self.source!r}, {width}x{height}, t={self.timestamp:.3f})"


class Camera(Protocol):
    """What the vision pipeline needs from a camera.

    ``frames`` raises ``CameraOpenError`` when the device cannot be opened or vanishes, and
    ``FrameError`` for one picture that cannot be decoded; a live camera never ends.
    """

    def frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends (a live camera never ends)."""
        ...

    def close(self) -> None:
        """Release the device; ``frames`` stops at its next step."""
        ...
