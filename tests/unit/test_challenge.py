"""The challenge: a random prompt answered from landmarks over frames; a still, a swapped
photo or a clip that does something else does not answer it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge.vision.challenge import LOOKED_AWAY, WRONG_WAY, LivenessCheck
from edge.vision.liveness import TIMEOUT_REASON, ChallengeConfig, LivenessConfig, Prompt
from models.hints import Hint
from models.mesh import FaceSample, Pose
from tests.unit.test_liveness import eyes

FPS = 15.0


def sample(yaw: float = 0.0, openness: float = 0.3, rng: np.random.Generator | None = None):
    jitter = 0.0 if rng is None else rng.normal(0, 0.8)
    return FaceSample(eyes(openness, 0.2, rng), Pose(yaw + jitter, 0.0, 0.0), 1.0)


def check(*prompts: Prompt, rounds: int = 1, timeout_s: float = 4.0) -> LivenessCheck:
    asked = list(prompts)
    config = ChallengeConfig(rounds=rounds, timeout_s=timeout_s, choose=lambda _: asked.pop(0))
    return LivenessCheck(LivenessConfig(challenge=config))


def feed(live: LivenessCheck, yaws: list[float], openness: list[float] | None = None) -> list:
    """A second of the face straight on, then the prompt, then ``yaws`` (one per frame)."""
    rng = np.random.default_rng(3)
    for n in range(int(FPS)):
        live.update(n / FPS, sample(0.0, rng=rng))
    states = [live.escalate(1.0)]
    opens = openness or [0.3] * len(yaws)
    for n, (yaw, value) in enumerate(zip(yaws, opens, strict=True)):
        states.append(live.update(1.0 + (n + 1) / FPS, sample(yaw, value, rng)))
    return states


def turn(peak: float, frames_up: int = 6, hold: int = 8) -> list[float]:
    up = [peak * (n + 1) / frames_up for n in range(frames_up)]
    return [0.0] * 10 + up + [peak] * hold + up[::-1] + [0.0] * 10


def test_the_prompt_is_shown_as_a_hint_once_the_challenge_starts() -> None:
    live = check("turn_left")
    assert live.update(0.0, sample()).hint == Hint.BLINK  # blink liveness before
    state = live.escalate(0.1)
    assert (state.status, state.prompt, state.hint) == ("pending", "turn_left", Hint.TURN_LEFT)


@pytest.mark.parametrize("prompt", ["turn_left", "turn_right", "blink_twice"])
def test_a_still_photo_answers_no_prompt(prompt: Prompt) -> None:
    states = feed(check(prompt), [0.0] * int(5 * FPS))
    assert "passed" not in {s.status for s in states}
    assert (states[-1].status, states[-1].reason) == ("failed", TIMEOUT_REASON)


def test_a_turn_to_the_asked_side_passes_and_the_other_way_fails() -> None:
    assert feed(check("turn_left"), turn(30.0))[-1].status == "passed"
    assert feed(check("turn_right"), turn(-30.0))[-1].status == "passed"
    wrong = feed(check("turn_left"), turn(-30.0))[-1]
    assert (wrong.status, wrong.reason) == ("failed", WRONG_WAY)


def test_a_small_turn_is_not_an_answer() -> None:
    assert feed(check("turn_left"), turn(10.0) + [0.0] * 60)[-1].status == "failed"


def test_a_photo_swapped_for_a_turned_one_does_not_pass() -> None:
    """The yaw jumps from straight on to turned between two frames: no frame on the way."""
    jumped = [0.0] * 10 + [30.0] * 60
    assert feed(check("turn_left"), jumped)[-1].status == "failed"


def blinks(times: list[int], frames: int) -> list[float]:
    openness = [0.3] * frames
    for start in times:
        for n, value in enumerate((0.2, 0.1, 0.1, 0.22)):
            openness[start + n] = value
    return openness


def test_two_blinks_close_together_pass_and_one_or_two_far_apart_do_not() -> None:
    frames = int(5 * FPS)  # past the 4 s timeout
    flat = [0.0] * frames
    assert feed(check("blink_twice"), flat, blinks([10, 20], frames))[-1].status == "passed"
    assert feed(check("blink_twice"), flat, blinks([10], frames))[-1].status == "failed"
    assert feed(check("blink_twice"), flat, blinks([5, 45], frames))[-1].status == "failed"


def test_looking_away_while_asked_to_blink_fails() -> None:
    state = feed(check("blink_twice"), turn(30.0))[-1]
    assert (state.status, state.reason) == ("failed", LOOKED_AWAY)


def test_a_second_round_asks_another_prompt_once_the_head_is_back() -> None:
    live = check("turn_left", "turn_right", rounds=2)
    states = feed(live, turn(30.0) + turn(-30.0))
    prompts = [s.prompt for s in states]
    first_pass = prompts.index("turn_right")
    assert set(prompts[:first_pass]) == {"turn_left"}
    assert all(s.status == "pending" for s in states[: first_pass + 1])
    assert states[-1].status == "passed" and live.answered == ["turn_left", "turn_right"]


def test_one_answer_is_not_enough_for_two_rounds() -> None:
    states = feed(check("turn_left", "turn_right", rounds=2), turn(30.0) + [0.0] * 90)
    assert states[-1].status == "failed" and states[-1].prompt == "turn_right"


def test_without_a_challenge_escalate_keeps_blink_liveness() -> None:
    live = LivenessCheck(LivenessConfig())
    live.update(0.0, sample())
    state = live.escalate(0.1)
    assert (state.status, state.prompt, state.hint) == ("pending", None, Hint.BLINK)
    assert not live.challenged


def test_the_prompt_is_drawn_by_the_configured_chooser() -> None:
    drawn: list[tuple[Prompt, ...]] = []

    def choose(prompts: tuple[Prompt, ...]) -> Prompt:
        drawn.append(tuple(prompts))
        return prompts[-1]

    config = replace(ChallengeConfig(), choose=choose)
    live = LivenessCheck(LivenessConfig(challenge=config))
    assert live.escalate(0.0).prompt == "blink_twice"
    assert drawn == [("turn_left", "turn_right", "blink_twice")]


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="prompts"):
        ChallengeConfig(prompts=())
    with pytest.raises(ValueError, match="rounds"):
        ChallengeConfig(rounds=0)
