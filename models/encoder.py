"""The face engine: find the faces in a frame, their landmarks, and the 128-d encoding.

Detection runs on a copy of the frame scaled down to ``detect_width`` (HOG); only when it
finds nothing does it look again upsampled, for a face that is small in the frame, and in a
photo larger than that, at finer scales in tiles (``models.scan``). A face
found in a box under about HOG's smallest window (90 px in the frame) is looked at again
on its region at full resolution, upsampled once, so that its box fits the face rather
than the window (``_closer``). Boxes
are mapped back to full-frame pixels, where the 5 landmarks and the encoding are computed
(the same alignment and network as ``face_recognition.face_encodings``). While a face is
tracked, ``detect_near`` looks only around its last box, at a scale where the face is
about ``roi_face_px`` wide: a few milliseconds instead of a full-frame pass.

The model files are checked against ``models/manifest.json`` before they are loaded.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from models.dlib_models import DlibModels, Points
from models.images import Image
from models.mesh import FaceSample, MeshModel
from models.scan import finer_levels, scan_scale, tiles

Encoding = npt.NDArray[np.float64]

# About HOG's smallest window, in the pixels it scans: a face found in a box under this
# width may be smaller than its box (``FaceEngine._closer``)
SMALLEST_WINDOW_PX = 90


@dataclass(frozen=True)
class FaceBox:
    """A face's bounding box in frame pixels (may reach past the frame's edges)."""

    top: int
    right: int
    bottom: int
    left: int
    score: float = 1.0

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2

    def ltrb(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom

    def inside_fraction(self, width: int, height: int) -> float:
        """The share of the box's area that lies inside a ``width`` x ``height`` frame."""
        if self.area == 0:
            return 0.0
        inner_w = max(0, min(self.right, width) - max(self.left, 0))
        inner_h = max(0, min(self.bottom, height) - max(self.top, 0))
        return inner_w * inner_h / self.area

    def iou(self, other: FaceBox) -> float:
        inner_w = max(0, min(self.right, other.right) - max(self.left, other.left))
        inner_h = max(0, min(self.bottom, other.bottom) - max(self.top, other.top))
        inner = inner_w * inner_h
        union = self.area + other.area - inner
        return inner / union if union > 0 else 0.0


@dataclass(frozen=True)
class Observation:
    """The face the engine acts on, with how many faces the frame held."""

    box: FaceBox
    faces: int
    encoding: Encoding

    def __repr__(self) -> str:  # never print a template
        return f"Observation(box={self.box}, faces={self.faces})"


class FaceEncoder(Protocol):
    """What the decision code needs from a face model (the real one is ``FaceEngine``)."""

    model_version: str

    def detect(self, image: Image) -> list[FaceBox]: ...

    def landmarks(self, image: Image, box: FaceBox) -> Points: ...

    def encode(self, image: Image, box: FaceBox, landmarks: Points | None = None) -> Encoding: ...


def pick_face(boxes: list[FaceBox], width: int, height: int) -> FaceBox:
    """The largest face, with faces near the centre of the frame preferred."""
    centre_x, centre_y = width / 2, height / 2
    diagonal = math.hypot(width, height) or 1.0

    def score(box: FaceBox) -> float:
        box_x, box_y = box.centre
        off_centre = math.hypot(box_x - centre_x, box_y - centre_y) / diagonal
        return box.area * (1.0 - off_centre)

    return max(boxes, key=score)


def rival_faces(boxes: list[FaceBox], chosen: FaceBox, ratio: float = 0.5) -> int:
    """How many other faces are at least ``ratio`` of the chosen face's area."""
    return sum(1 for box in boxes if box is not chosen and box.area >= ratio * chosen.area)


def _distinct(boxes: list[FaceBox]) -> list[FaceBox]:
    """``boxes`` without those overlapping a better-scoring one (tiles share a margin)."""
    kept: list[FaceBox] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(box.iou(other) < 0.5 for other in kept):
            kept.append(box)
    return kept


def _resize(image: Image, scale: float) -> Image:
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, size, interpolation=interpolation), dtype=np.uint8)


class FaceEngine:
    """Detection, landmarks and encoding with dlib, tuned for a kiosk camera."""

    model_version = "dlib_resnet_v1"

    def __init__(
        self,
        detect_width: int = 640,
        max_upsample: int = 1,
        min_score: float = 0.25,
        roi_face_px: int = 90,
        dlib_models: DlibModels | None = None,
        jitters: int = 1,
        candidate_score: float = -0.6,
        look_closer: bool = True,
    ) -> None:
        if not 1 <= jitters <= 100:
            raise ValueError(f"jitters must be 1 to 100, got {jitters}")
        self._models = dlib_models or DlibModels()
        self.model_version = self._models.encoder_version
        self.detect_width = detect_width
        self.max_upsample = max_upsample
        self.min_score = min_score
        self.roi_face_px = roi_face_px
        self.jitters = jitters
        self.candidate_score = candidate_score
        self.look_closer = look_closer  # off: boxes as HOG gives them (benchmarks compare)
        self._mesh: MeshModel | None = None  # liveness landmarks, loaded when first needed
        self._mesh_lock = threading.Lock()

    def with_jitters(self, jitters: int) -> FaceEngine:
        """The same engine (and loaded models) encoding over ``jitters`` copies of a face."""
        return FaceEngine(
            self.detect_width,
            self.max_upsample,
            self.min_score,
            self.roi_face_px,
            self._models,
            jitters,
            self.candidate_score,
            self.look_closer,
        )

    def _run(
        self,
        image: Image,
        scale: float,
        upsample: int,
        offset: tuple[int, int] = (0, 0),
        floor: float | None = None,
        closer: bool = True,
    ) -> list[FaceBox]:
        """HOG on ``image`` scaled by ``scale`` and upsampled ``upsample`` times; boxes in
        ``image``'s pixels moved by ``offset``. With ``closer``, a face found at about the
        detector's smallest window is looked at again at higher resolution (``_closer``)."""
        small = image if scale == 1.0 else _resize(image, scale)
        dx, dy = offset
        cut = self.min_score if floor is None else floor
        found = []
        for det in self._models.detect(small, upsample, min(0.0, cut)):
            if det.score < cut:
                continue
            box = FaceBox(
                top=round(det.top / scale) + dy,
                right=round(det.right / scale) + dx,
                bottom=round(det.bottom / scale) + dy,
                left=round(det.left / scale) + dx,
                score=det.score,
            )
            # a face under the window's size in the frame itself, found without looking at
            # the frame at twice its resolution: its box may be the window's, not the face's
            small_face = box.width < SMALLEST_WINDOW_PX and scale * 2**upsample < 2.0
            if closer and self.look_closer and small_face:
                box = self._closer(image, box, offset)
            found.append(box)
        return found

    def _closer(self, image: Image, box: FaceBox, offset: tuple[int, int]) -> FaceBox:
        """``box`` as the detector finds it on its region at full resolution, upsampled
        once, when it is smaller there (else ``box`` itself, also when that finds no face
        there scoring ``min_score``).

        HOG reports a face smaller than its window at about the window's size: a 52 px face
        in a 640 px frame comes out as a 72 px box at 640, which the quality gate would call
        too small for the wrong reason and which misplaces the landmarks. Upsampled once,
        the window is half as large and the box fits the face: the gate then judges, and
        the encoder encodes, the face as it is in the frame."""
        dx, dy = offset
        local = FaceBox(box.top - dy, box.right - dx, box.bottom - dy, box.left - dx, box.score)
        height, width = image.shape[:2]
        pad = round(local.width * 0.5)
        left, top = max(0, local.left - pad), max(0, local.top - pad)
        right, bottom = min(width, local.right + pad), min(height, local.bottom + pad)
        if right - left < 16 or bottom - top < 16:
            return box
        region = image[top:bottom, left:right]
        found = self._run(region, 1.0, 1, offset=(left + dx, top + dy), closer=False)
        inside = [
            b
            for b in found
            if box.left <= b.centre[0] <= box.right and box.top <= b.centre[1] <= box.bottom
        ]
        closer = max(inside, key=lambda b: b.score) if inside else box
        # only a box the window made too large is corrected: a face as large as its box
        # keeps it (a neighbour's face grown by one pyramid step would count as a rival)
        return closer if closer.width < box.width else box

    def detect(
        self, image: Image, detect_width: int | None = None, max_upsample: int | None = None
    ) -> list[FaceBox]:
        """Every face in ``image``, in full-frame coordinates. A whole picture at the
        engine's own width (no ``detect_width`` given: a photo, the single-frame path) in
        which the scaled passes find nothing is also scanned at finer scales (``_finer``)."""
        height, width = image.shape[:2]
        scale = scan_scale(width, height, detect_width or self.detect_width)
        found: list[FaceBox] = []
        ladder = self.max_upsample if max_upsample is None else max_upsample
        for upsample in range(ladder + 1):
            found = self._run(image, scale, upsample)
            if found:
                return found
        if detect_width is not None:  # a pass of the live pipeline: bounded by its caller
            return []
        return self._finer(image, scale * 2**ladder)

    def _finer(self, image: Image, reached: float) -> list[FaceBox]:
        """Faces too small in a large picture for the scaled passes: the picture scanned
        again in tiles at finer scales (``models.scan.finer_levels``) until a level finds
        a face (a 200 px face in a 6000 px photo is 21 px at 640 wide)."""
        height, width = image.shape[:2]
        overlap = 2 * SMALLEST_WINDOW_PX  # scanned pixels: a face twice the window fits
        for scale in finer_levels(width, height, reached):
            found: list[FaceBox] = []
            for left, top, span in tiles(width, height, scale, self.detect_width, overlap):
                region = image[top : top + span, left : left + span]
                found += self._run(region, scale, 0, offset=(left, top))
            if found:
                return _distinct(found)
        return []

    def search(self, image: Image, quick_width: int) -> list[FaceBox]:
        """The faces ``detect`` finds, at about the cost of one pass at ``quick_width``.

        The quick pass keeps every face candidate down to ``candidate_score``; each one is
        then judged by ``detect`` itself (its scale, upsampling and ``min_score``) on the
        region around it, so that the live pipeline notices what ``kiosk faces identify``
        finds. A frame in which the quick pass sees no candidate at all is judged by it
        alone (``kiosk faces eval`` measures how often that misses a face)."""
        height, width = image.shape[:2]
        quick = scan_scale(width, height, quick_width)
        if quick >= scan_scale(width, height, self.detect_width):
            return self.detect(image)
        quick_pass = self._run(image, quick, 0, floor=self.candidate_score, closer=False)
        return self._confirmed(image, quick_pass)

    def _confirmed(self, image: Image, candidates: list[FaceBox]) -> list[FaceBox]:
        """The candidates that score ``min_score`` as they are, or that ``detect`` finds on
        their region (overlapping finds counted once)."""
        found: list[FaceBox] = []
        for candidate in candidates:
            boxes = [candidate] if candidate.score >= self.min_score else []
            for box in boxes or self._confirm(image, candidate):
                if all(box.iou(kept) < 0.5 for kept in found):
                    found.append(box)
        return found

    def _confirm(self, image: Image, candidate: FaceBox, context: float = 0.6) -> list[FaceBox]:
        """``detect`` on the region around ``candidate`` (the frame's scale, not the crop's)."""
        height, width = image.shape[:2]
        pad_x, pad_y = round(candidate.width * context), round(candidate.height * context)
        left, top = max(0, candidate.left - pad_x), max(0, candidate.top - pad_y)
        right = min(width, candidate.right + pad_x)
        bottom = min(height, candidate.bottom + pad_y)
        if right - left < 16 or bottom - top < 16:
            return []
        region = image[top:bottom, left:right]
        scale = scan_scale(width, height, self.detect_width)
        for upsample in range(self.max_upsample + 1):
            found = self._run(region, scale, upsample, offset=(left, top))
            if found:
                return found
        return []

    def detect_near(self, image: Image, previous: FaceBox, context: float = 0.3) -> list[FaceBox]:
        """Faces in the region around ``previous`` (a tracked face), in frame coordinates.

        A weak candidate (under ``min_score`` at this small scale) is judged as ``search``
        judges one: by ``detect`` on its region, so a face the offline tools find is not
        lost while tracked."""
        height, width = image.shape[:2]
        pad_x, pad_y = round(previous.width * context), round(previous.height * context)
        left, top = max(0, previous.left - pad_x), max(0, previous.top - pad_y)
        right, bottom = min(width, previous.right + pad_x), min(height, previous.bottom + pad_y)
        if right - left < 16 or bottom - top < 16:
            return []
        crop = image[top:bottom, left:right]
        scale = min(1.0, self.roi_face_px / max(1, previous.width))
        # a small, far face is looked for upsampled, as the pass that found it did (HOG
        # finds no face under 80 px)
        upsample = 1 if previous.width < self.roi_face_px else 0
        found = self._run(crop, scale, upsample, offset=(left, top), floor=self.candidate_score)
        return self._confirmed(image, found)

    def landmarks(self, image: Image, box: FaceBox) -> Points:
        """The 5 landmarks: two corners of each eye and the base of the nose."""
        return self._models.landmarks5(image, box.ltrb())

    def liveness_sample(self, image: Image, box: FaceBox) -> FaceSample | None:
        """The eyes and head pose of the face in ``box`` for liveness (``models.mesh``,
        loaded on first use), or ``None`` when the face mesh sees no face there."""
        if self._mesh is None:
            with self._mesh_lock:
                if self._mesh is None:
                    self._mesh = MeshModel()
        return self._mesh.sample(image, box.ltrb())

    def encode(self, image: Image, box: FaceBox, landmarks: Points | None = None) -> Encoding:
        """The 128-d encoding of the face in ``box`` (averaged over ``jitters`` copies)."""
        if landmarks is None:
            landmarks = self.landmarks(image, box)
        return self._models.encode(image, box.ltrb(), landmarks, self.jitters)

    def observe(self, image: Image) -> Observation | None:
        """The face to act on in ``image``, encoded, or ``None`` when there is no face."""
        boxes = self.detect(image)
        if not boxes:
            return None
        height, width = image.shape[:2]
        chosen = pick_face(boxes, width, height)
        return Observation(box=chosen, faces=len(boxes), encoding=self.encode(image, chosen))


def as_points(value: Any) -> Points:
    """``value`` as an (N, 2) float array (for landmarks handed in by tests or fakes)."""
    return np.asarray(value, dtype=np.float64).reshape(-1, 2)
