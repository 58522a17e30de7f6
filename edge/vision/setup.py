"""Build the face pipeline's parts from the settings (``vision`` section)."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from cloud_sync.errors import ConfigError
from edge.config import QualitySection, VisionSection
from edge.vault.store import RosterStore
from edge.vault.values import LoadedRoster
from edge.vision.claim import ClaimLockout, TryLimit, VerifyPolicy, verify_policy
from edge.vision.liveness import ChallengeConfig, LivenessConfig
from edge.vision.matcher import Gallery, rider_gallery
from edge.vision.policy import (
    Policy,
    ThresholdMarginPolicy,
    automatic_limit,
    cohort_policy,
    load_operating_points,
)

if TYPE_CHECKING:  # OpenCV and dlib load in the builders that need them, not for the policy
    from edge.vision.live import LiveConfig
    from models.encoder import FaceEngine
    from models.quality import QualityConfig


def quality_config(section: QualitySection) -> QualityConfig:
    from models.quality import QualityConfig

    return QualityConfig(**section.model_dump())


def operating_points(vision: VisionSection) -> dict[str, Any]:
    """The calibrated operating points (``vision.operating_points`` or the shipped file)."""
    path = vision.operating_points
    try:
        points = load_operating_points(path)
        cohort_policy(points)
        verify_policy(points)
    except FileNotFoundError:
        raise ConfigError(f"vision.operating_points: {path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        where = path or "the shipped operating points"
        raise ConfigError(
            f"vision.operating_points: {where} is not an operating-points file ({exc!r})"
        ) from None
    return points


def policy(vision: VisionSection) -> Policy:
    """The 1:N decision policy ``vision.policy`` names."""
    if vision.policy == "threshold":
        return ThresholdMarginPolicy(vision.match_threshold, vision.match_margin)
    return cohort_policy(operating_points(vision))


def automatic_up_to(vision: VisionSection) -> int | None:
    """The largest roster the 1:N policy decides on automatically; beyond it every rider
    confirms a claim (``None``: no limit, as with the threshold policy)."""
    return automatic_limit(policy(vision))


def beyond_automatic(riders: int, limit: int | None) -> str | None:
    """What an operator is told when a roster of ``riders`` is past ``limit``, else ``None``."""
    if limit is None or riders <= limit:
        return None
    return (
        f"{riders} riders, more than the {limit} the face policy is calibrated for: "
        "every rider confirms a claim"
    )


def claim_policy(vision: VisionSection) -> VerifyPolicy:
    """The strict 1:1 / 1:few policy of the claim step and ``kiosk faces verify``."""
    return verify_policy(operating_points(vision))


def claim_lockout(vision: VisionSection) -> ClaimLockout:
    return ClaimLockout(
        vision.claim_tries,
        vision.claim_lock_s,
        vision.claim_window_s,
        rider=TryLimit(vision.claim_rider_tries, vision.claim_rider_window_s),
        kiosk=TryLimit(vision.claim_kiosk_tries, vision.claim_kiosk_window_s),
    )


def liveness_config(vision: VisionSection) -> LivenessConfig:
    section = vision.liveness
    challenge = None
    if section.challenge == "risky":
        challenge = ChallengeConfig(
            prompts=section.prompts,
            rounds=section.rounds,
            timeout_s=section.challenge_timeout_s,
            turn_deg=section.turn_deg,
        )
    return LivenessConfig(
        timeout_s=section.timeout_s, closed_ratio=section.closed_ratio, challenge=challenge
    )


def live_config(vision: VisionSection) -> LiveConfig:
    from edge.vision.live import LiveConfig

    return LiveConfig(
        detect_width=vision.live_detect_width,
        consensus_k=vision.consensus_k,
        consensus_n=vision.consensus_n,
        fuse_frames=vision.fuse_frames,
        track_lost_s=vision.track_lost_s,
        reverify_s=vision.reverify_s,
        retry_refused_s=vision.retry_refused_s,
        claim_frames=vision.claim_frames,
        claim_frame_s=vision.claim_frame_s,
    )


def liveness(vision: VisionSection) -> LivenessConfig | None:
    """The liveness check's settings, or ``None`` when ``vision.liveness.method`` is off."""
    return liveness_config(vision) if vision.liveness.method == "blink" else None


def engine(vision: VisionSection) -> FaceEngine:
    from models.encoder import FaceEngine

    return FaceEngine(
        detect_width=vision.detect_width,
        max_upsample=vision.max_upsample,
        min_score=vision.min_detection_score,
    )


def enrol_engine(vision: VisionSection, live: FaceEngine | None = None) -> FaceEngine:
    """The engine that makes enrolment templates: ``vision.enrol_jitters`` copies per face
    (``live``'s loaded models when given)."""
    return (live or engine(vision)).with_jitters(vision.enrol_jitters)


def gallery_of(
    loaded: LoadedRoster,
    model_version: str,
    fuse: bool = True,
    only: Collection[str] | None = None,
) -> Gallery:
    """The decrypted roster's templates for ``model_version`` as a gallery, with the riders'
    lookalike flags (the gallery computes its cohorts and neighbours as it is built). With
    ``fuse`` (``vision.fuse_templates``), each rider's templates count as one, their mean;
    with ``only``, just those riders (a kiosk's automatic set)."""
    entries = loaded.templates.get(model_version, [])
    if only is not None:
        entries = [(person, vector) for person, vector in entries if person in only]
    flagged = [person for person, rider in loaded.riders.items() if rider.lookalike]
    people = [person for person, _ in entries]
    return rider_gallery(people, [vector for _, vector in entries], flagged, fuse)


def gallery(store: RosterStore, model_version: str, fuse: bool = True) -> Gallery:
    """The roster's templates for ``model_version``, decrypted into an in-memory matrix."""
    return gallery_of(store.load(), model_version, fuse)
