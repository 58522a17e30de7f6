"""Enrolment from image files: one template per usable photo, a reason for every refusal.

A folder is read in one of two shapes: one sub-folder per person (the sub-folder's name is
the person id), or image files directly in the folder (each file's stem is the person id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.errors import InputError
from edge.vision.engine import FaceEngine
from hardware.camera import IMAGE_SUFFIXES, list_images, read_image
from hardware.errors import CameraOpenError, FrameError

PERSON_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Refusal:
    image: Path
    reason: str


@dataclass
class EnrolReport:
    """Templates made, per person, and the images refused with their reasons."""

    templates: list[tuple[str, npt.NDArray[np.float64]]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def people(self) -> list[str]:
        return sorted({person for person, _ in self.templates})


def images_by_person(folder: Path) -> dict[str, list[Path]]:
    """Map person id to image files for either folder shape."""
    if not folder.is_dir():
        raise InputError(
            f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder"
        )
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    found: dict[str, list[Path]] = {}
    if subfolders:
        for sub in subfolders:
            images = sorted(
                p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if images:
                found[sub.name] = images
    else:
        try:
            for image in list_images(folder):
                found.setdefault(image.stem, []).append(image)
        except CameraOpenError as exc:
            raise InputError(str(exc)) from None
    if not found:
        raise InputError(f"{folder}: holds no images to enrol")
    for person in found:
        if not PERSON_ID.match(person):
            raise InputError(
                f"{folder}: {person!r} is not a valid person id (letters, digits, . _ -)"
            )
    return found


def enrol_folder(engine: FaceEngine, folder: Path, max_pixels: int = 40_000_000) -> EnrolReport:
    """Encode every usable photo under ``folder``."""
    report = EnrolReport()
    for person, images in images_by_person(folder).items():
        for image_path in images:
            try:
                image = read_image(image_path, max_pixels)
            except FrameError as exc:
                report.refused.append(Refusal(image_path, str(exc)))
                continue
            boxes = engine.detect(image)
            if not boxes:
                report.refused.append(Refusal(image_path, "no face found"))
                continue
            largest = max(box.area for box in boxes)
            comparable = [box for box in boxes if box.area >= 0.5 * largest]
            if len(comparable) > 1:
                report.refused.append(
                    Refusal(
                        image_path,
                        f"{len(comparable)} faces of similar size: use a photo of one person",
                    )
                )
                continue
            chosen = max(boxes, key=lambda box: box.area)
            report.templates.append((person, engine.encode(image, chosen)))
    return report
