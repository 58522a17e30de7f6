"""Fusing the encodings of several frames of one face before the decision."""

from __future__ import annotations

import numpy as np
import pytest

from edge.vision.consensus import FUSE_SPREAD, fuse
from edge.vision.live import LiveConfig, LivePipeline
from edge.vision.matcher import Gallery
from edge.vision.policy import ThresholdMarginPolicy
from tests.unit.test_live_pipeline import VECTORS, ScriptedEngine, frame, run

OFFSET = np.zeros(128)
OFFSET[0] = 0.30  # how far this rider's frames sit from the enrolment template
# Frame noise in directions orthogonal to each other and to the offset: one frame is
# 0.39 from the template, the mean of three 0.33 (and frames are 0.35 apart).
NOISE = [np.eye(128)[axis] * 0.25 for axis in (1, 2, 3, 4, 5, 6, 7, 8)]


def test_fuse_averages_frames_close_to_the_newest() -> None:
    a, b = np.full(128, 0.01), np.full(128, 0.02)
    assert np.allclose(fuse([a, b]), (a + b) / 2)
    assert np.allclose(fuse([b]), b)


def test_fuse_never_blends_another_face() -> None:
    ann, bob = VECTORS[1], VECTORS[2]
    assert np.linalg.norm(ann - bob) > FUSE_SPREAD
    assert np.allclose(fuse([ann, ann + 0.001, bob]), bob)  # the track changed person
    assert np.allclose(fuse([bob, ann, ann + 0.002]), ann + 0.001)


def test_fuse_needs_an_encoding() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fuse([])


class NoisyEngine(ScriptedEngine):
    """Ann's frames: a fixed offset from her template plus fresh noise every frame."""

    def encode(
        self, image: np.ndarray, box: object, points: np.ndarray | None = None
    ) -> np.ndarray:
        noise = NOISE[self.encoded % len(NOISE)]
        self.encoded += 1
        return VECTORS[1] + OFFSET + noise


def noisy_pipeline(fuse_frames: int) -> LivePipeline:
    gallery = Gallery([("ann", VECTORS[1]), ("bob", VECTORS[2])])
    policy = ThresholdMarginPolicy(0.36, 0.08)
    return LivePipeline(NoisyEngine(), gallery, policy, config=LiveConfig(fuse_frames=fuse_frames))


def test_a_rider_whose_single_frames_miss_is_recognised_from_fused_frames() -> None:
    single = np.linalg.norm(OFFSET + NOISE[0])
    assert single > 0.36  # each frame alone is refused
    outcomes = run(noisy_pipeline(3), [frame(i, person=1) for i in range(10)])
    records = [o.record for o in outcomes if o.record]
    assert [(r.person_id, r.reason) for r in records] == [("ann", "match")]
    assert records[0].distance is not None and records[0].distance < 0.36
    assert outcomes[0].vote is not None and outcomes[0].vote.person_id is None  # frame one


def test_without_fusion_the_same_frames_are_refused() -> None:
    outcomes = run(noisy_pipeline(1), [frame(i, person=1) for i in range(10)])
    records = [o.record for o in outcomes if o.record]
    assert [(r.person_id, r.reason) for r in records] == [(None, "unknown")]


def test_simulated_camera_frames_are_repeatable_and_differ() -> None:
    from edge.vision.frames import camera_frames

    still = np.asarray(np.random.default_rng(3).integers(0, 256, (120, 100, 3)), dtype=np.uint8)
    first = camera_frames(still, 3, seed=7)
    again = camera_frames(still, 3, seed=7)
    other = camera_frames(still, 3, seed=8)
    assert all(f.shape == still.shape and f.dtype == np.uint8 for f in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[0], still)
