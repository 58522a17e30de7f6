"""The dlib models behind typed methods: the only module that touches dlib's untyped API.

Each model file is checked against ``models/manifest.json`` and then loaded from the very
path that was checked. The 68-point landmark model (trained on iBUG 300-W, whose licence
excludes commercial use) is never loaded by the kiosk: liveness reads the face mesh
(``models.mesh``). ``landmarks68`` stays for the liveness benchmark, which times the two
side by side and places the synthetic blinks of its simulated riders with it (a model
other than the one that measures them).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

import models

Points = npt.NDArray[np.float64]

#: Indices of the two eyes (6 points each) in the 68-point scheme (benchmarks only).
EYE_68 = (tuple(range(36, 42)), tuple(range(42, 48)))


@dataclass(frozen=True)
class RawDetection:
    left: int
    top: int
    right: int
    bottom: int
    score: float


# The aligned face the encoder reads: 150 px square with a quarter of padding, as
# ``compute_face_descriptor(image, shape)`` makes it.
CHIP_SIZE = 150
CHIP_PADDING = 0.25
JITTER_SEED = 150


def jittered(chip: npt.NDArray[np.uint8], copies: int) -> list[npt.NDArray[np.uint8]]:
    """``copies`` variations of an aligned face: rotated up to 3 degrees, scaled by up to
    3%, shifted by up to 2% and mirrored on every other copy; the same for the same chip."""
    rng = np.random.default_rng(JITTER_SEED)
    size = chip.shape[0]
    out = []
    for number in range(copies):
        matrix = cv2.getRotationMatrix2D(
            (size / 2, size / 2), rng.uniform(-3.0, 3.0), rng.uniform(0.97, 1.03)
        )
        matrix[:, 2] += rng.uniform(-0.02, 0.02, 2) * size
        copy = cv2.warpAffine(chip, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
        if number % 2 == 0:
            copy = copy[:, ::-1]
        out.append(np.ascontiguousarray(copy, dtype=np.uint8))
    return out


class DlibModels:
    """HOG detector, 5-point (and lazily 68-point) landmarks, and the ResNet encoder."""

    encoder_version: str
    landmarks_version: str

    def __init__(self, folder: Path | None = None) -> None:
        import dlib

        paths = models.verify(("face_encoder", "landmarks_5"), folder=folder)
        versions = {entry.name: entry.version for entry in models.load_manifest()}
        self._folder = folder
        self._dlib: Any = dlib
        self._detector: Any = dlib.get_frontal_face_detector()
        self._sp5: Any = dlib.shape_predictor(str(paths["landmarks_5"]))
        self._encoder: Any = dlib.face_recognition_model_v1(str(paths["face_encoder"]))
        self._sp68: Any = None
        self._lock = threading.Lock()
        self.encoder_version = versions["face_encoder"]
        self.landmarks_version = versions["landmarks_5"]

    def detect(
        self, image: npt.NDArray[np.uint8], upsample: int, floor: float = 0.0
    ) -> list[RawDetection]:
        """HOG detections scoring at least ``floor`` (dlib's own cut is 0), in ``image``'s
        pixels."""
        # dlib reads a numpy view of part of a frame (a region's rows with the frame's
        # stride) wrongly, and not always the same way: it gets its own contiguous copy
        image = np.ascontiguousarray(image)
        rects, scores, _ = self._detector.run(image, upsample, floor)
        return [
            RawDetection(r.left(), r.top(), r.right(), r.bottom(), float(score))
            for r, score in zip(rects, scores, strict=True)
        ]

    def _rect(self, box: tuple[int, int, int, int]) -> Any:
        left, top, right, bottom = box
        return self._dlib.rectangle(int(left), int(top), int(right), int(bottom))

    @staticmethod
    def _points(shape: Any) -> Points:
        return np.array([[part.x, part.y] for part in shape.parts()], dtype=np.float64)

    def landmarks5(self, image: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> Points:
        """The 5 landmarks (eye corners, base of the nose) of the face in ``box``."""
        return self._points(self._sp5(image, self._rect(box)))

    def landmarks68(self, image: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> Points:
        """The 68 landmarks (iBUG scheme) of the face in ``box``; loads that model once.
        Benchmarks only (non-commercial training data): the kiosk never calls it."""
        if self._sp68 is None:
            with self._lock:
                if self._sp68 is None:
                    path = models.verify(("landmarks_68",), folder=self._folder)["landmarks_68"]
                    self._sp68 = self._dlib.shape_predictor(str(path))
        return self._points(self._sp68(image, self._rect(box)))

    def encode(
        self,
        image: npt.NDArray[np.uint8],
        box: tuple[int, int, int, int],
        landmarks5: Points,
        jitters: int = 1,
    ) -> npt.NDArray[np.float64]:
        """The 128-d encoding of the face aligned on its 5 landmarks (as face_recognition does).

        With ``jitters`` above 1, the mean over the aligned face and ``jitters - 1`` copies
        of it slightly rotated, scaled, shifted and (half of them) mirrored (``jittered``).
        The copies come from a fixed seed, so the same photo always gives the same
        encoding (dlib's own ``num_jitters`` draws from a generator shared between calls).
        """
        dlib = self._dlib
        parts = dlib.points([dlib.point(round(x), round(y)) for x, y in landmarks5])
        shape = dlib.full_object_detection(self._rect(box), parts)
        if jitters <= 1:
            return np.array(self._encoder.compute_face_descriptor(image, shape, 1), np.float64)
        chip = np.asarray(dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
        chips = [chip, *jittered(chip, jitters - 1)]
        descriptors = self._encoder.compute_face_descriptor(chips)
        return np.asarray(np.mean([np.array(d) for d in descriptors], axis=0), dtype=np.float64)
