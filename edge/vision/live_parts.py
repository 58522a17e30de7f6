"""The live pipeline's parts that other modules use: its settings, the engine it needs,
what a frame gives (``FrameOutcome``) and the face it hands to the claim step
(``ClaimNeeded``), and two rules of its search and decision (``small_face_pass``,
``nearest_in_roster``). ``edge.vision.live`` runs them and re-exports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from edge.vision.consensus import ClaimWindow, DecisionRecord
from edge.vision.liveness import LivenessState
from edge.vision.matcher import Gallery, Vector
from edge.vision.policy import CLAIM_REQUIRED, Decision
from models.encoder import FaceBox, FaceEncoder
from models.hints import Hint
from models.images import Image
from models.mesh import FaceSample

LIVENESS_FAILED = "liveness not confirmed"
#: The most pixels the small-face pass scans before upsampling: a 1080p frame, whole
SMALL_FACE_PIXELS = 1920 * 1080


def small_face_pass(engine: LiveEngine, image: Image) -> list[FaceBox]:
    """The faces in ``image`` at its full width, upsampled when nothing is found there.

    At ``detect_width`` a face of 40-80 px in a 640 px frame is under the detector's
    smallest window even upsampled: a face the quality gate accepts must be found to be
    encoded, and one under its ``min_face_px`` to be told "come closer". A face found at
    about the window's size is looked at again on its region, upsampled
    (``FaceEngine._closer``), so the gate judges the face and not the window.

    A frame larger than ``SMALL_FACE_PIXELS`` (a 1080p camera's) is scanned at that many
    pixels: a 4K stream or a replayed 12 MP photo, scanned whole and then upsampled, took
    660 MB and 6 s on every third search of an empty scene (2 GB at 40 MP)."""
    height, width = image.shape[:2]
    scale = min(1.0, math.sqrt(SMALL_FACE_PIXELS / (width * height)))
    return engine.detect(image, max(1, round(width * scale)), None)


def nearest_in_roster(decision: Decision, roster: Gallery, probe: Vector) -> Decision:
    """A match among a kiosk's automatic set stands only when the matched rider is also the
    nearest rider of the whole roster; otherwise the face goes to the claim step. A rider
    from elsewhere who resembles someone in the set is a stranger to the set, and without
    this check the set's own operating point would accept them as that rider (the fleet
    evaluation measured 3 wrong persons in 1,935 visits on 8 kiosks, none with it)."""
    if decision.person_id is None or decision.distance is None:
        return decision
    if not roster.nearer_than(probe, decision.distance, decision.person_id):
        return decision
    return Decision(None, decision.distance, decision.margin, CLAIM_REQUIRED, decision.score)


class LiveEngine(FaceEncoder, Protocol):
    """A face engine that can also search near a tracked face and read its landmarks."""

    def detect(
        self, image: Image, detect_width: int | None = None, max_upsample: int | None = None
    ) -> list[FaceBox]: ...

    def search(self, image: Image, quick_width: int) -> list[FaceBox]: ...

    def detect_near(self, image: Image, previous: FaceBox) -> list[FaceBox]: ...

    def liveness_sample(self, image: Image, box: FaceBox) -> FaceSample | None: ...


@dataclass(frozen=True)
class LiveConfig:
    detect_width: int = 320
    consensus_k: int = 2
    consensus_n: int = 3
    fuse_frames: int = 3  # 1: every frame is decided on its own encoding
    track_lost_s: float = 0.7
    min_track_iou: float = 0.2
    reverify_s: float = 2.0
    retry_refused_s: float = 1.0
    full_scan_every: int = 8
    small_face_every: int = 3
    idle_change: float = 2.0
    idle_detect_every: int = 5
    rival_ratio: float = 0.5
    claim_frames: int = 8  # frames of a face gathered for the claim step's check
    claim_frame_s: float = 0.25  # how often, while the claim step gathers them


@dataclass(frozen=True, repr=False)
class ClaimNeeded:
    """A face the policy sent to the claim step: the track, and its encodings (newest last)
    held in memory for the 1:1 check only. ``window`` starts with the vote's and keeps
    growing with the face's frames while the rider types (``LiveConfig.claim_frames``).
    ``repr`` never shows the encodings."""

    track: int
    window: ClaimWindow
    roster_people: int

    def frames(self) -> tuple[Vector, ...]:
        """The encodings gathered so far (the vote's, and those seen since)."""
        return self.window.frames()

    def __repr__(self) -> str:
        return f"ClaimNeeded(track={self.track}, encodings={len(self.frames())})"


@dataclass(frozen=True)
class FrameOutcome:
    """What one frame gave: for the rider screen, the logs and the benchmarks."""

    index: int
    timestamp: float
    faces: int
    person_id: str | None  # the identity decided for the face in view, held while tracked
    hint: Hint | None  # what the rider should do (a key the rider page looks up)
    vote: Decision | None = None
    record: DecisionRecord | None = None
    liveness: LivenessState | None = None
    claim: ClaimNeeded | None = None  # a "claim required" record's face, for the claim step
    #: an accepted record's encodings (the fusion window), for a learned template
    #: (``edge.runtime.learning``); in memory only
    encodings: tuple[Vector, ...] = field(default=(), repr=False)
