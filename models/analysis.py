"""The single-frame path: one picture in, the face to act on analysed and encoded.

Used by ``kiosk faces identify``, enrolment (on the kiosk and in the cloud), the accuracy
harness and the live pipeline for each frame it encodes: detect, pick the largest most
central face, refuse when another face of comparable size is present, compute the 5
landmarks, run the quality gate, and only then encode. Every refusal carries a reason and a
hint for the rider (a key). What the kiosk then decides is ``edge.vision.analysis``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.encoder import Encoding, FaceBox, FaceEncoder, pick_face, rival_faces
from models.hints import Hint
from models.images import Image
from models.quality import QualityConfig, QualityReport, assess
from models.reasons import NO_FACE, SEVERAL_FACES

NO_FACE_HINT = Hint.LOOK_AT_CAMERA
SEVERAL_FACES_HINT = Hint.ONE_AT_A_TIME


@dataclass(frozen=True)
class FaceAnalysis:
    """What one picture gave: the face count, the chosen face, and its encoding or a reason."""

    faces: int
    box: FaceBox | None = None
    quality: QualityReport | None = None
    encoding: Encoding | None = field(default=None, repr=False)
    reason: str | None = None
    hint: Hint | None = None

    @property
    def usable(self) -> bool:
        return self.encoding is not None


def analyse(
    engine: FaceEncoder,
    image: Image,
    quality: QualityConfig,
    rival_ratio: float = 0.5,
    boxes: list[FaceBox] | None = None,
) -> FaceAnalysis:
    """Detect (unless ``boxes`` are given), choose, check and encode the face to act on."""
    found = engine.detect(image) if boxes is None else boxes
    if not found:
        return FaceAnalysis(0, reason=NO_FACE, hint=NO_FACE_HINT)
    height, width = image.shape[:2]
    chosen = pick_face(found, width, height)
    if rival_faces(found, chosen, rival_ratio):
        return FaceAnalysis(len(found), chosen, reason=SEVERAL_FACES, hint=SEVERAL_FACES_HINT)
    landmarks = engine.landmarks(image, chosen)
    report = assess(image, chosen, landmarks, quality)
    if report.issue is not None:
        return FaceAnalysis(
            len(found), chosen, report, reason=report.issue.reason, hint=report.issue.hint
        )
    encoding = engine.encode(image, chosen, landmarks)
    return FaceAnalysis(len(found), chosen, report, encoding)
