"""Liveness: a still photo held up to the camera must not pass; a blinking rider does.

Pure code over a sequence of per-frame samples (a timestamp and, when the face was found,
the six contour points of each eye). The eye aspect ratio (EAR, Soukupová and Čech 2016:
the eye's two vertical openings over its width) drops when the eyelids close. A blink is
an open eye, then a frame where the EAR has fallen below ``closed_ratio`` of the rider's
own open level, then open again, all within ``max_blink_s`` (``BlinkDetector``). The open
level is the upper envelope of the recent EARs, so it adapts to each face and to the
camera's angle.

``BlinkLiveness`` is the passive check every visit makes: one blink passes. A photo (or a
replayed still frame) has a constant EAR, so it never blinks: the check times out after
``timeout_s`` and the rider is told what to do. The eye points come from the face mesh's
eye contour model (``models.mesh``: Google's MediaPipe models, Apache-2.0).

Known limit: a video of the rider blinking, played on a phone, passes this check. When the
risk is higher (the claim step, a lookalike), the rider also answers a random prompt
(``ChallengeConfig``, ``edge.vision.challenge``) that a replayed video does not answer
except by chance.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from models.hints import Hint

Eye = npt.NDArray[np.float64]
Status = Literal["pending", "passed", "failed"]
Prompt = Literal["turn_left", "turn_right", "blink_twice"]
PROMPTS: tuple[Prompt, ...] = ("turn_left", "turn_right", "blink_twice")

BLINK_HINT = Hint.BLINK
TIMEOUT_REASON = "liveness not confirmed"
TIMEOUT_HINT = Hint.LOOK_AND_BLINK


@dataclass(frozen=True)
class ChallengeConfig:
    """The prompt a rider answers when the risk is higher (``edge.vision.challenge``).

    ``turn_deg``: how far the head turns from the rider's own straight-on pose, held for
    ``turned_frames`` frames in a row, after at least one frame part of the way there
    (a real turn passes through; a second photo swapped in jumps). ``double_blink_s``: two
    blinks, the second over within this of the first one's closing. ``rounds``: prompts
    answered one after the other, each within ``timeout_s``. ``choose`` picks each prompt
    (``secrets.choice``: a replayed video cannot know it in advance)."""

    prompts: tuple[Prompt, ...] = PROMPTS
    rounds: int = 1
    timeout_s: float = 8.0
    turn_deg: float = 15.0
    turned_frames: int = 2
    double_blink_s: float = 1.5
    choose: Callable[[Sequence[Prompt]], Prompt] = field(
        default=secrets.choice, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not self.prompts or any(p not in PROMPTS for p in self.prompts):
            raise ValueError(f"prompts must be some of {PROMPTS}, got {self.prompts}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")


@dataclass(frozen=True)
class LivenessConfig:
    timeout_s: float = 6.0
    closed_ratio: float = 0.75
    reopen_ratio: float = 0.9
    min_open_ear: float = 0.15
    max_blink_s: float = 1.0
    history: int = 30
    challenge: ChallengeConfig | None = None  # None: never a prompt, blinks only


@dataclass(frozen=True)
class LivenessState:
    status: Status
    reason: str
    hint: Hint | None
    blinks: int
    samples: int
    prompt: Prompt | None = None  # the challenge asked, once there is one


@dataclass(frozen=True)
class Blink:
    """One blink: when the eye was first seen closed, and open again."""

    closed_at: float
    opened_at: float


def eye_aspect_ratio(eye: npt.ArrayLike) -> float:
    """(|p2-p6| + |p3-p5|) / (2 |p1-p4|) for the six points of one eye, in iBUG order."""
    points = np.asarray(eye, dtype=np.float64).reshape(6, 2)
    vertical = np.linalg.norm(points[1] - points[5]) + np.linalg.norm(points[2] - points[4])
    horizontal = np.linalg.norm(points[0] - points[3])
    return float(vertical / (2.0 * horizontal)) if horizontal > 1e-6 else 0.0


def mean_ear(eyes: tuple[Eye, Eye]) -> float:
    return (eye_aspect_ratio(eyes[0]) + eye_aspect_ratio(eyes[1])) / 2.0


class BlinkDetector:
    """Turns one EAR per frame into blinks (``observe`` returns one as the eye reopens)."""

    def __init__(self, config: LivenessConfig) -> None:
        self.config = config
        self._recent: deque[float] = deque(maxlen=config.history)
        self._closed_at: float | None = None
        self._open_seen = False

    def observe(self, timestamp: float, ear: float) -> Blink | None:
        config = self.config
        open_level = max(self._recent) if self._recent else ear
        self._recent.append(ear)
        if open_level < config.min_open_ear:
            return None  # no open eye seen yet: nothing to compare a closed eye against
        if self._closed_at is None:
            if ear >= config.reopen_ratio * open_level:
                self._open_seen = True
            elif self._open_seen and ear <= config.closed_ratio * open_level:
                self._closed_at = timestamp
            return None
        if timestamp - self._closed_at > config.max_blink_s:
            # closed for too long (eyes shut, or looking down): not a blink, start again
            self._closed_at = None
            self._open_seen = False
            return None
        if ear >= config.reopen_ratio * open_level:
            blink = Blink(self._closed_at, timestamp)
            self._closed_at = None
            return blink
        return None


class BlinkLiveness:
    """Feed ``update`` one sample per frame; it passes after one blink, fails on timeout."""

    def __init__(self, config: LivenessConfig | None = None) -> None:
        self.config = config or LivenessConfig()
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new face in front of the camera."""
        self._started: float | None = None
        self._detector = BlinkDetector(self.config)
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
            if self._detector.observe(timestamp, mean_ear(eyes)) is not None:
                self._blinks += 1
                self._status = "passed"
        if self._status == "pending" and timestamp - self._started > self.config.timeout_s:
            self._status = "failed"
        return self._state()
