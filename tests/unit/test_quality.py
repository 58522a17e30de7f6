"""The quality gate on synthetic faces: each failed check names its reason and a hint."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from models.encoder import FaceBox
from models.hints import Hint
from models.quality import (
    ALL_ISSUES,
    BLURRED,
    FACE_CUT_OFF,
    FACE_TOO_SMALL,
    NOT_FRONTAL,
    TOO_BRIGHT,
    TOO_DARK,
    QualityConfig,
    assess,
    pose_from_landmarks,
)


def landmarks(
    box: FaceBox, roll_deg: float = 0.0, yaw: float = 0.0, pitch: float = 0.75
) -> np.ndarray:
    """dlib's 5 points for a face in ``box``: eye corners (0-1, 2-3) and the nose base (4)."""
    cx, cy = box.centre
    span = box.width * 0.4
    angle = math.radians(roll_deg)
    along = np.array([math.cos(angle), math.sin(angle)])
    down = np.array([-along[1], along[0]])
    centre = np.array([cx, cy - 0.1 * box.height])
    right_eye, left_eye = centre + along * span / 2, centre - along * span / 2
    corner = along * span * 0.2
    nose = centre + along * yaw * span + down * pitch * span
    return np.array(
        [right_eye + corner, right_eye - corner, left_eye + corner, left_eye - corner, nose]
    )


def textured(height: int = 480, width: int = 640, mean: float = 128.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (height // 4, width // 4))
    pattern = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    grey = np.clip(mean + 40 * pattern, 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


BOX = FaceBox(top=120, right=420, bottom=320, left=220)


def check(image: np.ndarray, box: FaceBox = BOX, **pose: float) -> str | None:
    report = assess(image, box, landmarks(box, **pose), QualityConfig())
    return None if report.issue is None else report.issue.reason


def test_a_good_face_passes() -> None:
    report = assess(textured(), BOX, landmarks(BOX), QualityConfig())
    assert report.ok and report.face_px == 200 and report.inside == 1.0
    assert report.pose.roll_deg == pytest.approx(0.0, abs=1e-9)
    assert report.pose.yaw == pytest.approx(0.0, abs=1e-9)
    assert report.pose.pitch == pytest.approx(0.75)


@pytest.mark.parametrize(("roll", "yaw"), [(10.0, 0.0), (-20.0, 0.1), (0.0, -0.3)])
def test_pose_is_read_back_from_landmarks(roll: float, yaw: float) -> None:
    pose = pose_from_landmarks(landmarks(BOX, roll_deg=roll, yaw=yaw))
    assert pose.roll_deg == pytest.approx(roll)
    assert pose.yaw == pytest.approx(yaw)


def test_each_check_names_its_reason() -> None:
    small = FaceBox(top=200, right=350, bottom=250, left=300)  # under the 56 px minimum
    assert check(textured(), small) == FACE_TOO_SMALL.reason
    half_out = FaceBox(top=-150, right=420, bottom=150, left=120)
    assert check(textured(), half_out) == FACE_CUT_OFF.reason
    assert check(textured(mean=20)) == TOO_DARK.reason
    assert check(textured(mean=245)) == TOO_BRIGHT.reason
    assert check(textured(), roll_deg=40.0) == NOT_FRONTAL.reason
    assert check(textured(), yaw=0.5) == NOT_FRONTAL.reason
    assert check(textured(), pitch=0.2) == NOT_FRONTAL.reason
    blurred = cv2.GaussianBlur(textured(), (0, 0), 6)
    assert check(blurred) == BLURRED.reason
    noise = np.random.default_rng(1).normal(0.0, 4.0, blurred.shape)
    assert check(np.clip(blurred + noise, 0, 255).astype(np.uint8)) == BLURRED.reason


def test_every_issue_has_a_hint_for_the_rider() -> None:
    for issue in (FACE_TOO_SMALL, FACE_CUT_OFF, BLURRED, TOO_DARK, TOO_BRIGHT, NOT_FRONTAL):
        assert isinstance(issue.hint, Hint)  # a key the rider page words in every language
    assert len({issue.hint for issue in ALL_ISSUES}) == len(ALL_ISSUES)
