"""The demo's default sample set, made from photos that ship with scikit-image.

scikit-image's data folder holds public-domain pictures: ``astronaut.png`` (NASA portrait
of astronaut Eileen Collins) and several without a face (``coffee.png``, ``chelsea.png``,
``rocket.jpg``). The rider is enrolled from the original portrait; the replayed frames are
new views of it (mirrored, darker, smaller in the frame) mixed with the no-face pictures,
so every decision the demo prints is a real run of the face model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from cloud_sync.private_files import private_dir
from models.images import Image, read_image

SAMPLE_RIDER = "eileen-collins"


@dataclass(frozen=True)
class SampleSet:
    enroll_dir: Path
    frames_dir: Path


def _data_file(name: str) -> Path:
    return Path(str(resources.files("skimage").joinpath("data", name)))


def _write(path: Path, image: Image) -> None:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"cannot write {path}")


def _smaller_in_frame(image: Image, size: int = 200) -> Image:
    canvas = np.full((480, 640, 3), 40, dtype=np.uint8)
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    top, left = (480 - size) // 2, (640 - size) // 2
    canvas[top : top + size, left : left + size] = small
    return canvas


def write_sample_set(dest: Path) -> SampleSet:
    """Create (or refresh) the sample enrolment and frame folders under ``dest``."""
    enroll_dir = dest / "enroll"
    frames_dir = dest / "frames"
    rider_dir = enroll_dir / SAMPLE_RIDER
    for folder in (rider_dir, frames_dir):
        private_dir(folder)
    portrait_path = _data_file("astronaut.png")
    shutil.copyfile(portrait_path, rider_dir / "portrait.png")
    portrait = read_image(portrait_path)
    darker = np.clip(portrait.astype(np.float32) * 0.65 + 8, 0, 255).astype(np.uint8)
    _write(frames_dir / "01-rider-mirrored.png", np.ascontiguousarray(portrait[:, ::-1]))
    shutil.copyfile(_data_file("coffee.png"), frames_dir / "02-no-face-coffee.png")
    _write(frames_dir / "03-rider-darker.png", darker)
    shutil.copyfile(_data_file("chelsea.png"), frames_dir / "04-no-face-cat.png")
    _write(frames_dir / "05-rider-small.png", _smaller_in_frame(portrait))
    shutil.copyfile(_data_file("rocket.jpg"), frames_dir / "06-no-face-rocket.jpg")
    return SampleSet(enroll_dir=enroll_dir, frames_dir=frames_dir)
