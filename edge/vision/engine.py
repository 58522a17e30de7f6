"""The face engine: find the face to act on in a frame and encode it.

Detection runs on a copy of the frame scaled down to ``detect_width`` (HOG, no upsampling);
only when nothing is found does it try again upsampled, for a face that is small in the
frame. Boxes are mapped back to the full frame, where landmarks and the 128-d encoding are
computed. Of several faces, the engine acts on the largest and most central one.

The model files are checked against ``models/manifest.json`` before face_recognition
loads them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

import models
from hardware.camera import Image


@dataclass(frozen=True)
class FaceBox:
    """A face's bounding box in frame pixels."""

    top: int
    right: int
    bottom: int
    left: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)


@dataclass(frozen=True)
class Observation:
    """The face the engine acts on, with how many faces the frame held."""

    box: FaceBox
    faces: int
    encoding: npt.NDArray[np.float64]

    def __repr__(self) -> str:  # never print a template
        return f"Observation(box={self.box}, faces={self.faces})"


def _load_face_recognition() -> Any:
    models.verify()
    with warnings.catch_warnings():
        # face_recognition_models imports pkg_resources, which warns on import.
        warnings.simplefilter("ignore", UserWarning)
        import face_recognition

    return face_recognition


def pick_face(boxes: list[FaceBox], width: int, height: int) -> FaceBox:
    """The largest face, with faces near the centre of the frame preferred."""
    centre_x, centre_y = width / 2, height / 2
    diagonal = math.hypot(width, height) or 1.0

    def score(box: FaceBox) -> float:
        box_x, box_y = (box.left + box.right) / 2, (box.top + box.bottom) / 2
        off_centre = math.hypot(box_x - centre_x, box_y - centre_y) / diagonal
        return box.area * (1.0 - off_centre)

    return max(boxes, key=score)


class FaceEngine:
    """Detection and encoding with face_recognition (dlib), tuned for a kiosk camera."""

    model_version = "dlib_resnet_v1"

    def __init__(self, detect_width: int = 640, max_upsample: int = 1) -> None:
        self._fr = _load_face_recognition()
        self.detect_width = detect_width
        self.max_upsample = max_upsample

    def detect(self, image: Image) -> list[FaceBox]:
        """Every face in ``image``, in full-frame coordinates."""
        height, width = image.shape[:2]
        scale = min(1.0, self.detect_width / width)
        small: npt.NDArray[Any] = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        found: list[tuple[int, int, int, int]] = []
        for upsample in range(self.max_upsample + 1):
            found = self._fr.face_locations(small, number_of_times_to_upsample=upsample)
            if found:
                break
        boxes = []
        for top, right, bottom, left in found:
            boxes.append(
                FaceBox(
                    top=max(0, round(top / scale)),
                    right=min(width, round(right / scale)),
                    bottom=min(height, round(bottom / scale)),
                    left=max(0, round(left / scale)),
                )
            )
        return boxes

    def encode(self, image: Image, box: FaceBox) -> npt.NDArray[np.float64]:
        """The 128-d encoding of the face in ``box``."""
        location = [(box.top, box.right, box.bottom, box.left)]
        encodings = self._fr.face_encodings(image, known_face_locations=location)
        return np.asarray(encodings[0], dtype=np.float64)

    def observe(self, image: Image) -> Observation | None:
        """The face to act on in ``image``, encoded, or ``None`` when there is no face."""
        boxes = self.detect(image)
        if not boxes:
            return None
        height, width = image.shape[:2]
        chosen = pick_face(boxes, width, height)
        return Observation(box=chosen, faces=len(boxes), encoding=self.encode(image, chosen))
