"""Challenge liveness: when the risk is higher, the rider answers a random prompt.

Blink liveness (``edge.vision.liveness``) stops a photo but not a video of the rider
replayed on a phone. For the visits where a wrong rental costs most (a face sent to the
claim step, a rider flagged as a lookalike) the kiosk asks for something a recording does
not do on cue: "turn your head to your left", "... to your right" or "blink twice", chosen
at random (``ChallengeConfig.choose``) when the challenge starts, and checked from the face
mesh's landmarks over the next frames (``models.mesh.FaceSample``). Pure code: samples and
times in, a ``LivenessState`` out.

- **Turn.** The head's yaw is compared with the rider's own straight-on yaw (the median of
  the last second of samples before the prompt, or the first two after it): the answer is
  ``turn_deg`` towards the asked side on ``turned_frames`` frames in a row, the frame just
  before them part of the way there (at least ``RAMP`` of ``turn_deg``): a real turn
  passes through, a second photo swapped in jumps. ``turn_deg`` the other way first
  fails.
- **Blink twice.** Two blinks (the same detector as blink liveness), the second over within
  ``double_blink_s`` of the first one's closing, both after the prompt. A turn of
  ``turn_deg`` either way meanwhile fails (the rider was asked to look at the camera).
  The eyes of a face turned by more than half of ``turn_deg`` are not read (they look
  wider turned, which would raise the open level a blink is measured against).
- No answer within ``timeout_s`` fails.
- With ``rounds`` above 1, another prompt (never the same twice in a row) follows each
  answer, once the head is back within half of ``turn_deg`` of straight on; each round
  has its own ``timeout_s``. A replayed video that happens to answer one prompt must
  also happen to answer the next, in time.

``LivenessCheck`` is what the live pipeline holds per tracked face: blink liveness until
``escalate`` starts the challenge (from then on only the challenge counts; a blink
timeout before it is forgiven, the challenge being the stronger test).
"""

from __future__ import annotations

import statistics
from collections import deque

from edge.vision.liveness import (
    TIMEOUT_REASON,
    BlinkDetector,
    BlinkLiveness,
    ChallengeConfig,
    LivenessConfig,
    LivenessState,
    Prompt,
    Status,
    mean_ear,
)
from models.hints import Hint
from models.mesh import FaceSample

HINTS: dict[Prompt, Hint] = {
    "turn_left": Hint.TURN_LEFT,
    "turn_right": Hint.TURN_RIGHT,
    "blink_twice": Hint.BLINK_TWICE,
}
# yaw > 0 is the rider turned to their own left (models.mesh.Pose)
SIDE: dict[Prompt, float] = {"turn_left": 1.0, "turn_right": -1.0, "blink_twice": 0.0}
WRONG_WAY = "turned the other way"
LOOKED_AWAY = "looked away"
BASELINE_S = 1.0
RAMP = 0.2  # the frame before the turned ones is at least this share of turn_deg


class Challenge:
    """One prompt, answered or not; ``update`` per frame from the prompt's first frame."""

    def __init__(
        self,
        prompt: Prompt,
        config: ChallengeConfig,
        blinks: LivenessConfig,
        started: float,
        baseline: list[float] | None = None,
        settled: bool = True,
    ) -> None:
        self.prompt = prompt
        self.config = config
        self.started = started
        self._baseline = list(baseline or [])
        self.straight = statistics.median(self._baseline) if len(self._baseline) >= 2 else None
        self._settled = settled  # False: wait for the head to come back to straight on
        self._detector = BlinkDetector(blinks)
        self._blink_closed: list[float] = []
        self._turned = 0
        self._ramped = False  # the frame before the turned ones was part of the way
        self._previous = 0.0  # the last frame's turn towards the asked side
        self._samples = 0
        self._status: Status = "pending"
        self._reason = f"waiting for {prompt}"

    def state(self) -> LivenessState:
        hint = HINTS[self.prompt] if self._status == "pending" else None
        if self._status == "failed":
            hint = Hint.LOOK_AT_CAMERA
        return LivenessState(
            self._status,
            self._reason,
            hint,
            len(self._blink_closed),
            self._samples,
            self.prompt,
        )

    def update(self, now: float, sample: FaceSample | None) -> LivenessState:
        if self._status != "pending":
            return self.state()
        if sample is not None:
            self._samples += 1
            self._observe(now, sample)
        if self._status == "pending" and now - self.started > self.config.timeout_s:
            self._finish("failed", TIMEOUT_REASON)
        return self.state()

    def _finish(self, status: Status, reason: str) -> None:
        self._status, self._reason = status, reason

    def _observe(self, now: float, sample: FaceSample) -> None:
        yaw = sample.pose.yaw
        if self.straight is None:
            self._baseline.append(yaw)
            if len(self._baseline) >= 2:
                self.straight = statistics.median(self._baseline)
            self._detector.observe(now, mean_ear(sample.eyes))
            return
        turn = yaw - self.straight
        if not self._settled:
            self._settled = abs(turn) < 0.5 * self.config.turn_deg
            if not self._settled:
                return  # a turned face's eyes look wider: not the open level to compare with
        side = SIDE[self.prompt]
        if side == 0.0:
            self._blink(now, sample, turn)
        else:
            self._turn(side * turn)

    def _turn(self, towards: float) -> None:
        limit = self.config.turn_deg
        if towards <= -limit:
            self._finish("failed", WRONG_WAY)
            return
        if towards >= limit:
            if self._turned == 0:
                self._ramped = self._previous >= RAMP * limit
            self._turned += 1
            if self._turned >= self.config.turned_frames and self._ramped:
                self._finish("passed", f"{self.prompt} seen")
        else:
            self._turned = 0
        self._previous = towards

    def _blink(self, now: float, sample: FaceSample, turn: float) -> None:
        if abs(turn) >= self.config.turn_deg:
            self._finish("failed", LOOKED_AWAY)
            return
        if abs(turn) >= 0.5 * self.config.turn_deg:
            return
        blink = self._detector.observe(now, mean_ear(sample.eyes))
        if blink is None or blink.closed_at < self.started:
            return
        self._blink_closed.append(blink.closed_at)
        if len(self._blink_closed) >= 2:
            first = self._blink_closed[-2]
            if blink.opened_at - first <= self.config.double_blink_s:
                self._finish("passed", "blink_twice seen")


class LivenessCheck:
    """One tracked face's liveness: blinks, then the challenge once ``escalate`` is called."""

    def __init__(self, config: LivenessConfig) -> None:
        self.config = config
        self.blinks = BlinkLiveness(config)
        self.challenge: Challenge | None = None
        self.answered: list[Prompt] = []  # the rounds passed so far
        self._yaws: deque[tuple[float, float]] = deque()
        self._state: LivenessState | None = None

    @property
    def challenged(self) -> bool:
        return self.challenge is not None

    def update(self, now: float, sample: FaceSample | None) -> LivenessState:
        """One frame (``sample`` ``None``: no face seen in it)."""
        if self.challenge is not None:
            self._state = self._rounds(now, self.challenge.update(now, sample))
            return self._state
        if sample is not None:
            self._yaws.append((now, sample.pose.yaw))
            while self._yaws and now - self._yaws[0][0] > BASELINE_S:
                self._yaws.popleft()
        self._state = self.blinks.update(now, None if sample is None else sample.eyes)
        return self._state

    def escalate(self, now: float) -> LivenessState:
        """Start the challenge (once; a no-op without ``config.challenge``): the state to
        show from now on, with the prompt's hint."""
        config = self.config.challenge
        if config is None:
            return self._state or self.blinks.update(now, None)
        if self.challenge is None:
            prompt = config.choose(config.prompts)
            baseline = [yaw for _, yaw in self._yaws]
            self.challenge = Challenge(prompt, config, self.config, now, baseline)
            self._state = self.challenge.state()
        return self._state or self.challenge.state()

    def _rounds(self, now: float, state: LivenessState) -> LivenessState:
        """A round just passed: the next prompt, until ``rounds`` are answered."""
        config, current = self.config.challenge, self.challenge
        if state.status != "passed" or config is None or current is None:
            return state
        if len(self.answered) == config.rounds:
            return state  # answered already: the state stays passed
        self.answered.append(current.prompt)
        if len(self.answered) == config.rounds:
            return state
        others = [p for p in config.prompts if p != current.prompt] or list(config.prompts)
        straight = current.straight if current.straight is not None else 0.0
        self.challenge = Challenge(
            config.choose(others), config, self.config, now, [straight, straight], settled=False
        )
        return self.challenge.state()


__all__ = ["HINTS", "Challenge", "LivenessCheck"]
