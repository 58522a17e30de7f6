"""The kiosk's single-frame decision: who one analysed picture shows (``kiosk faces
identify``, the accuracy harness). The analysis itself (detect, choose, check, encode) is
``models.analysis``, shared with the cloud's enrolment.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.vision.matcher import Gallery
from edge.vision.policy import Decision, Policy
from models.analysis import FaceAnalysis, analyse
from models.encoder import FaceEncoder
from models.images import Image
from models.quality import QualityConfig
from models.reasons import NO_FACE


@dataclass(frozen=True)
class Identification:
    """The single-frame decision for one picture (what ``kiosk faces identify`` prints)."""

    person_id: str | None
    distance: float | None
    margin: float | None
    faces: int | None
    reason: str

    def as_json(self, image: str) -> dict[str, object]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "image": image,
            "person_id": self.person_id,
            "distance": rounded(self.distance),
            "margin": rounded(self.margin),
            "faces": self.faces,
            "reason": self.reason,
        }


def decide(gallery: Gallery, policy: Policy, analysis: FaceAnalysis) -> Identification:
    """The policy's decision on an analysed picture."""
    if analysis.encoding is None:
        return Identification(None, None, None, analysis.faces, analysis.reason or NO_FACE)
    decision: Decision = policy.decide(gallery.search(analysis.encoding))
    return Identification(
        decision.person_id, decision.distance, decision.margin, analysis.faces, decision.reason
    )


def identify(
    engine: FaceEncoder, gallery: Gallery, policy: Policy, image: Image, quality: QualityConfig
) -> Identification:
    """Analyse ``image`` and decide who it shows, as the kiosk would on one frame."""
    return decide(gallery, policy, analyse(engine, image, quality))
