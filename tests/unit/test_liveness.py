"""Blink liveness: a blink passes, a still face (a photo) times out, slow closures do not count."""

from __future__ import annotations

import numpy as np
import pytest

from edge.vision.liveness import BlinkLiveness, LivenessConfig, eye_aspect_ratio
from models.hints import Hint


def eye(
    openness: float, centre: tuple[float, float] = (100.0, 100.0), width: float = 30.0
) -> np.ndarray:
    """Six iBUG eye points whose aspect ratio is ``openness``."""
    cx, cy = centre
    half = width / 2
    lid = openness * width  # each vertical pair is this far apart
    return np.array(
        [
            [cx - half, cy],
            [cx - half / 3, cy - lid / 2],
            [cx + half / 3, cy - lid / 2],
            [cx + half, cy],
            [cx + half / 3, cy + lid / 2],
            [cx - half / 3, cy + lid / 2],
        ]
    )


def eyes(
    openness: float, jitter: float = 0.0, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    left, right = eye(openness, (80, 100)), eye(openness, (140, 100))
    if rng is not None and jitter:
        left = left + rng.normal(0, jitter, left.shape)
        right = right + rng.normal(0, jitter, right.shape)
    return left, right


def feed(
    check: BlinkLiveness, openness: list[float], fps: float = 15.0, jitter: float = 0.0
) -> list[str]:
    rng = np.random.default_rng(0)
    return [
        check.update(i / fps, eyes(value, jitter, rng)).status for i, value in enumerate(openness)
    ]


def test_eye_aspect_ratio_of_known_shapes() -> None:
    assert eye_aspect_ratio(eye(0.3)) == pytest.approx(0.3)
    assert eye_aspect_ratio(eye(0.05)) == pytest.approx(0.05)
    assert eye_aspect_ratio(np.zeros((6, 2))) == 0.0


def test_a_blink_passes() -> None:
    sequence = [0.30] * 8 + [0.22, 0.12, 0.10, 0.20, 0.29] + [0.30] * 5
    statuses = feed(BlinkLiveness(), sequence, jitter=0.2)
    assert statuses[-1] == "passed"
    assert statuses.index("passed") == 12  # the frame the eye is open again
    assert set(statuses[:12]) == {"pending"}


def test_a_still_photo_is_refused_after_the_timeout() -> None:
    """A printed photo: the eyes never move, only the detector's jitter."""
    check = BlinkLiveness(LivenessConfig(timeout_s=4.0))
    statuses = feed(check, [0.30] * 90, jitter=0.3)  # six seconds at 15 fps
    assert "passed" not in statuses
    assert statuses[59] == "pending" and statuses[61] == "failed"
    state = check.update(6.1, eyes(0.30))
    assert state.status == "failed" and state.hint == Hint.LOOK_AND_BLINK


def test_eyes_closed_for_long_are_not_a_blink() -> None:
    sequence = [0.30] * 5 + [0.08] * 30 + [0.30] * 5  # two seconds shut
    assert "passed" not in feed(BlinkLiveness(), sequence)


def test_no_face_frames_still_run_the_clock() -> None:
    check = BlinkLiveness(LivenessConfig(timeout_s=2.0))
    assert check.update(0.0, None).status == "pending"
    assert check.update(2.5, None).status == "failed"


def test_reset_starts_over() -> None:
    check = BlinkLiveness(LivenessConfig(timeout_s=1.0))
    feed(check, [0.3] * 30)
    check.reset()
    assert check.update(100.0, eyes(0.3)).status == "pending"
