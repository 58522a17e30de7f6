"""Build the face pipeline's parts from the settings (``vision`` section)."""

from __future__ import annotations

from edge.config import QualitySection, VisionSection
from edge.vault.store import RosterStore
from edge.vision.engine import FaceEngine
from edge.vision.live import LiveConfig
from edge.vision.liveness import LivenessConfig
from edge.vision.matcher import Gallery
from edge.vision.policy import ThresholdMarginPolicy
from edge.vision.quality import QualityConfig


def quality_config(section: QualitySection) -> QualityConfig:
    return QualityConfig(**section.model_dump())


def policy(vision: VisionSection) -> ThresholdMarginPolicy:
    return ThresholdMarginPolicy(vision.match_threshold, vision.match_margin)


def liveness_config(vision: VisionSection) -> LivenessConfig:
    return LivenessConfig(
        timeout_s=vision.liveness.timeout_s, closed_ratio=vision.liveness.closed_ratio
    )


def live_config(vision: VisionSection) -> LiveConfig:
    return LiveConfig(
        detect_width=vision.live_detect_width,
        consensus_k=vision.consensus_k,
        consensus_n=vision.consensus_n,
        track_lost_s=vision.track_lost_s,
        reverify_s=vision.reverify_s,
        retry_refused_s=vision.retry_refused_s,
    )


def liveness(vision: VisionSection) -> LivenessConfig | None:
    """The liveness check's settings, or ``None`` when ``vision.liveness.method`` is off."""
    return liveness_config(vision) if vision.liveness.method == "blink" else None


def engine(vision: VisionSection) -> FaceEngine:
    return FaceEngine(
        detect_width=vision.detect_width,
        max_upsample=vision.max_upsample,
        min_score=vision.min_detection_score,
    )


def gallery(store: RosterStore, model_version: str) -> Gallery:
    """The roster's templates for ``model_version``, decrypted into an in-memory matrix."""
    entries = store.load().templates.get(model_version, [])
    if not entries:
        return Gallery([])
    return Gallery.from_matrix([person for person, _ in entries], [vector for _, vector in entries])
