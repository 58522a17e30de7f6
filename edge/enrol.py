"""Enrolment from image files: one template per usable photo, a reason for every refusal.

Each photo is enrolled by ``models.enrolment.enrol_image`` (the same single-frame path as
the kiosk, shared with the cloud's enrolment): a template, or the reason it is refused. A
folder is read in one of two shapes:
one sub-folder per person (the sub-folder's name is the person id; sub-folders whose name
starts with ``_`` or ``.`` are skipped), or image files directly in the folder (each file's
stem is the person id). Every file in a rider's place (hidden ones apart) is a photo of
them, whatever its name ends with: its format is read from its bytes, so a TIFF or HEIC
photo is refused by name and a JPEG without ``.jpg`` is read, never skipped unsaid; a
rider's sub-folder with no file is a rider with no photo.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cloud_sync.errors import InputError
from models.encoder import FaceEncoder
from models.enrolment import Accepted, Refusal, enrol_image
from models.images import DEFAULT_MAX_PIXELS
from models.quality import QualityConfig

PERSON_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class EnrolReport:
    """Templates made, per person, and the images refused with their reasons."""

    templates: list[tuple[str, npt.NDArray[np.float64]]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    accepted: dict[str, list[Accepted]] = field(default_factory=dict)
    refused_by_person: dict[str, list[Refusal]] = field(default_factory=dict)

    @property
    def people(self) -> list[str]:
        return sorted({person for person, _ in self.templates})

    def add(self, person: str, outcome: Accepted | Refusal) -> None:
        if isinstance(outcome, Accepted):
            self.templates.append((person, outcome.encoding))
            self.accepted.setdefault(person, []).append(outcome)
        else:
            self.refused.append(outcome)
            self.refused_by_person.setdefault(person, []).append(outcome)

    def persons(self) -> list[str]:
        """Every person seen, enrolled or not, in order."""
        return sorted(set(self.accepted) | set(self.refused_by_person))


def check_person_id(person: str, where: str) -> str:
    if not PERSON_ID.match(person):
        raise InputError(
            f"{where}: {person!r} is not a valid person id (1-128 letters, digits, . _ -; "
            "starting with a letter or digit)"
        )
    return person


def photo_files(folder: Path) -> list[Path]:
    """What lies directly inside ``folder`` apart from folders and hidden files, in name
    order: each is a photo, whatever its name ends with (``enrol_image`` reads the format
    from its bytes, and refuses a dangling link or a device by name)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and not p.is_dir())


def images_by_person(folder: Path) -> dict[str, list[Path]]:
    """Map person id to photo files for either folder shape (a rider's sub-folder with no
    file maps to no photo, so that the rider is reported, not skipped)."""
    if not folder.is_dir():
        raise InputError(
            f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder"
        )
    subfolders = sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    found: dict[str, list[Path]] = {}
    if subfolders:
        for sub in subfolders:
            found[sub.name] = photo_files(sub)
    else:
        for image in photo_files(folder):
            found.setdefault(image.stem, []).append(image)
    if not any(found.values()):
        raise InputError(f"{folder}: holds no images to enrol")
    for person in found:
        check_person_id(person, str(folder))
    return found


def enrol_images(
    engine: FaceEncoder,
    person: str,
    images: Sequence[Path],
    quality: QualityConfig | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    report: EnrolReport | None = None,
) -> EnrolReport:
    """Encode every usable photo of one person."""
    report = report if report is not None else EnrolReport()
    quality = quality or QualityConfig()
    for path in images:
        report.add(person, enrol_image(engine, path, quality, max_pixels))
    return report


def enrol_folder(
    engine: FaceEncoder,
    folder: Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    quality: QualityConfig | None = None,
) -> EnrolReport:
    """Encode every usable photo under ``folder`` (see ``images_by_person``)."""
    report = EnrolReport()
    for person, images in images_by_person(folder).items():
        enrol_images(engine, person, images, quality, max_pixels, report)
    return report
