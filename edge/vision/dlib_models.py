"""The dlib models behind typed methods: the only module that touches dlib's untyped API.

Each model file is checked against ``models/manifest.json`` and then loaded from the very
path that was checked. The 68-point landmark model (trained on iBUG 300-W, whose licence
excludes commercial use) is loaded only when blink liveness asks for it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import models

Points = npt.NDArray[np.float64]

#: Indices of the two eyes (6 points each) in the 68-point scheme.
EYE_68 = (tuple(range(36, 42)), tuple(range(42, 48)))


@dataclass(frozen=True)
class RawDetection:
    left: int
    top: int
    right: int
    bottom: int
    score: float


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

    def detect(self, image: npt.NDArray[np.uint8], upsample: int) -> list[RawDetection]:
        """HOG detections with their scores, in ``image``'s pixels."""
        rects, scores, _ = self._detector.run(image, upsample, 0.0)
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
        """The 68 landmarks (iBUG scheme) of the face in ``box``; loads that model once."""
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
    ) -> npt.NDArray[np.float64]:
        """The 128-d encoding of the face aligned on its 5 landmarks (as face_recognition does)."""
        dlib = self._dlib
        parts = dlib.points([dlib.point(round(x), round(y)) for x, y in landmarks5])
        shape = dlib.full_object_detection(self._rect(box), parts)
        return np.array(self._encoder.compute_face_descriptor(image, shape, 1), dtype=np.float64)
