"""Liveness: a still photo held up to the camera must not pass; a blinking rider does.

Pure code over a sequence of per-frame samples (a timestamp and, when the face was found,
the six contour points of each eye). The eye aspect ratio (EAR, Soukupová and Čech 2016:
the eye's two vertical openings over its width) drops when the eyelids close. A blink is
an open eye, then a frame where the EAR has fallen below ``closed_ratio`` of the rider's
own open level, then open again, all within ``max_blink_s``. The open level is the upper
envelope of the recent EARs, so it adapts to each face and to the camera's angle.

A photo (or a replayed still frame) has a constant EAR, so it never blinks: the check
times out after ``timeout_s`` and the rider is told what to do. The eye points come from
dlib's 68-point model, trained on iBUG 300-W, whose licence excludes commercial use:
see docs/face-pipeline.md before shipping with ``vision.liveness.method = "blink"``.

Known limit: a video of the rider blinking, played on a phone, passes. This check raises
the bar from "hold up a printed photo" to "replay a video"; it is not a full
presentation-attack detector.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from models.hints import Hint

Eye = npt.NDArray[np.float64]
Status = Literal["pending", "passed", "failed"]

BLINK_HINT = Hint.BLINK
TIMEOUT_REASON = "liveness not confirmed"
TIMEOUT_HINT = Hint.LOOK_AND_BLINK


@dataclass(frozen=True)
class LivenessConfig:
    timeout_s: float = 6.0
    closed_ratio: float = 0.75
    reopen_ratio: float = 0.9
    min_open_ear: float = 0.15
    max_blink_s: float = 1.0
    history: int = 30


@dataclass(frozen=True)
class LivenessState:
    status: Status
    reason: str
    hint: Hint | None
    blinks: int
    samples: int


def eye_aspect_ratio(eye: npt.ArrayLike) -> float:
    """(|p2-p6| + |p3-p5|) / (2 |p1-p4|) for the six points of one eye, in iBUG order."""
    points = np.asarray(eye, dtype=np.float64).reshape(6, 2)
    vertical = np.linalg.norm(points[1] - points[5]) + np.linalg.norm(points[2] - points[4])
    horizontal = np.linalg.norm(points[0] - points[3])
    return float(vertical / (2.0 * horizontal)) if horizontal > 1e-6 else 0.0


class BlinkLiveness:
    """Feed ``update`` one sample per frame; it passes after one blink, fails on timeout."""

    def __init__(self, config: LivenessConfig | None = None) -> None:
        self.config = config or LivenessConfig()
        self._recent: deque[float] = deque(maxlen=self.config.history)
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new face in front of the camera."""
        self._started: float | None = None
        self._recent.clear()
        self._closed_at: float | None = None
        self._open_seen = False
        self._blinks = 0
        self._samples = 0
        self._status: Status = "pending"

    def _state(self) -> LivenessState:
        if self._status == "passed":
            return LivenessState("passed", "blink seen", None, self._blinks, self._samples)
        if self._status == "failed":
            return LivenessState(
                "failed", TIMEOUT_REASON, TIMEOUT_HINT, self._blinks, self._samples
            )
        return LivenessState(
            "pending", "waiting for a blink", BLINK_HINT, self._blinks, self._samples
        )

    def update(self, timestamp: float, eyes: tuple[Eye, Eye] | None) -> LivenessState:
        """One frame: its monotonic time and both eyes' points (``None``: no face seen)."""
        if self._status != "pending":
            return self._state()
        if self._started is None:
            self._started = timestamp
        if eyes is not None:
            self._samples += 1
            ear = (eye_aspect_ratio(eyes[0]) + eye_aspect_ratio(eyes[1])) / 2.0
            self._observe(timestamp, ear)
        if self._status == "pending" and timestamp - self._started > self.config.timeout_s:
            self._status = "failed"
        return self._state()

    def _observe(self, timestamp: float, ear: float) -> None:
        config = self.config
        open_level = max(self._recent) if self._recent else ear
        self._recent.append(ear)
        if open_level < config.min_open_ear:
            return  # no open eye seen yet: nothing to compare a closed eye against
        if self._closed_at is None:
            if ear >= config.reopen_ratio * open_level:
                self._open_seen = True
            elif self._open_seen and ear <= config.closed_ratio * open_level:
                self._closed_at = timestamp
            return
        if timestamp - self._closed_at > config.max_blink_s:
            # closed for too long (eyes shut, or looking down): not a blink, start again
            self._closed_at = None
            self._open_seen = False
            return
        if ear >= config.reopen_ratio * open_level:
            self._blinks += 1
            self._status = "passed"
