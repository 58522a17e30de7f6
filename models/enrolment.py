"""Enrolment from one photo: its template, or the reason it cannot be used.

The photo goes through the same single-frame path as the kiosk's camera frames (read with
the pixel cap, detect, pick the face, quality gate, encode: ``models.analysis``). A photo
with no face, with several faces of comparable size, or failing the quality gate is refused
with the reason and the rider's hint in words. Used by ``kiosk enroll`` (``edge.enrol``
reads folders of photos) and by the cloud's ``kiosk-cloud riders add``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.analysis import analyse
from models.encoder import FaceEncoder
from models.errors import ImageError
from models.hints import english
from models.images import DEFAULT_MAX_PIXELS, decode_image, read_image_bytes
from models.quality import QualityConfig
from models.reasons import NO_FACE, SEVERAL_FACES


@dataclass(frozen=True)
class Refusal:
    image: Path
    reason: str


@dataclass(frozen=True)
class Accepted:
    image: Path
    encoding: npt.NDArray[np.float64] = field(repr=False)
    source: bytes = field(repr=False)


def enrol_image(
    engine: FaceEncoder,
    path: Path,
    quality: QualityConfig,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Accepted | Refusal:
    """One photo: its template, or why it cannot be used."""
    try:
        data = read_image_bytes(path, max_pixels, path.name)
        image = decode_image(data, path.name, max_pixels)
    except ImageError as exc:
        return Refusal(path, str(exc).removeprefix(f"{path.name}: "))
    analysis = analyse(engine, image, quality)
    if analysis.encoding is not None:
        return Accepted(path, analysis.encoding, data)
    if analysis.reason == NO_FACE:
        return Refusal(path, "no face found")
    if analysis.reason == SEVERAL_FACES:
        return Refusal(path, f"{analysis.faces} faces of similar size: use a photo of one person")
    return Refusal(path, f"{analysis.reason} ({english(analysis.hint).rstrip('.').lower()})")
