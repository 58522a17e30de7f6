"""Liveness visits: what the face in front of the kiosk does over time, and the checks fed
from the frames a kiosk camera would see, as the live pipeline feeds them.

A visit is a function from time to a 640x480 frame (``liveness_clips``) and the prompt the
kiosk asks at ``PROMPT_AT`` (when a risky verdict has come, after a few votes). Kinds:

- ``genuine``: the rider, in front of the camera, blinks now and then (every 2.5-5 s) and
  answers the prompt after a reaction time of 0.6-1.2 s: a turn of 30-45 degrees that
  comes back after 0.6 s, or two blinks 0.5-0.8 s apart.
- ``still``: a photo of the rider on a phone (moiré, glare, the hand's pans, zooms and
  shake): nothing moves on the face.
- ``video``: a recording of the rider replayed on a phone: blinks every 2-5 s and one head
  turn of 25-40 degrees to a random side at a random moment, whatever the prompt.
- ``answer``: a recording that does answer the prompt, replayed on a phone (an attacker
  who holds a clip for each prompt and picks the right one).
- ``switch``: a photo on a phone, swapped for a photo of the head turned the asked way
  (made by the same warp) once the prompt is up.
- ``tilt``: a photo on a phone turned about its vertical axis by up to 35 degrees once the
  prompt is up (``sign`` picks the direction).

``run`` feeds two checks the same samples: ``LivenessCheck`` with the challenge (escalated
at ``PROMPT_AT``) and one without (blink liveness alone, the check before the challenge),
and times the face mesh beside dlib's 68-point model on the same boxes.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, replace

from edge.vision.challenge import LivenessCheck
from edge.vision.liveness import ChallengeConfig, LivenessConfig, Prompt
from models.encoder import FaceBox, FaceEngine, pick_face
from models.images import Image
from tests.benchmarks.liveness_clips import Phone, Scene, camera_frame, close_eyes, turn_head

FPS = 10.0
PROMPT_AT = 0.5
BLINK_S = 0.35
TURN_UP_S, TURN_HOLD_S = 0.4, 0.6
CHALLENGE = ChallengeConfig()
KINDS = ("genuine", "still", "video", "answer", "switch", "tilt")


@dataclass(frozen=True)
class Script:
    """What the face does: blinks (start times) and turns (start time, peak yaw)."""

    blinks: tuple[float, ...] = ()
    turns: tuple[tuple[float, float], ...] = ()

    def closure(self, t: float) -> float:
        for start in self.blinks:
            if 0.0 <= t - start < BLINK_S:
                return min(1.0, 1.5 * math.sin(math.pi * (t - start) / BLINK_S))
        return 0.0

    def yaw(self, t: float) -> float:
        for start, peak in self.turns:
            into = t - start
            if 0.0 <= into < 2 * TURN_UP_S + TURN_HOLD_S:
                rise = min(into, 2 * TURN_UP_S + TURN_HOLD_S - into) / TURN_UP_S
                return peak * _smooth(min(1.0, rise))
        return 0.0


def _smooth(x: float) -> float:
    return x * x * (3 - 2 * x)


def natural_blinks(rng: random.Random, until: float, first: float = 0.2) -> list[float]:
    times, t = [], first + rng.uniform(0.0, 2.0)
    while t < until:
        times.append(t)
        t += rng.uniform(2.5, 5.0)
    return times


def answer(prompt: Prompt, rng: random.Random, at: float) -> Script:
    """A rider answering ``prompt`` shown at ``at``."""
    start = at + rng.uniform(0.6, 1.2)
    if prompt == "blink_twice":
        return Script(blinks=(start, start + rng.uniform(0.5, 0.8)))
    peak = rng.uniform(30.0, 45.0) * (1.0 if prompt == "turn_left" else -1.0)
    return Script(turns=((start, peak),))


def _near(t: float, script: Script) -> bool:
    """A natural blink that would fall into an answer (its own blinks or its turn)."""
    busy = [(s, s + BLINK_S) for s in script.blinks]
    busy += [(s, s + 2 * TURN_UP_S + TURN_HOLD_S) for s, _ in script.turns]
    return any(a - 0.5 <= t <= b + 0.5 for a, b in busy)


class Visit:
    """Someone (or something) in front of the camera: ``react`` hears each new prompt,
    ``frame_at`` gives the camera's frame at a time (see the module docstring)."""

    def __init__(self, kind: str, scene: Scene, seed: int, sign: float = 1.0) -> None:
        if kind not in KINDS:
            raise ValueError(f"no such visit: {kind}")
        self.kind, self.scene, self.seed, self.sign = kind, scene, seed, sign
        self.rng = random.Random(seed)
        self.phone = None if kind == "genuine" else Phone(seed)
        self.blinks: list[float] = []
        self.turns: list[tuple[float, float]] = []
        self.swap: tuple[float, float] | None = None  # (from, yaw): ``switch`` and ``tilt``
        if kind in ("genuine", "answer"):
            self.blinks = natural_blinks(self.rng, 30.0)
        elif kind == "video":
            self.blinks = natural_blinks(self.rng, 30.0, first=0.0)
            side = self.rng.choice((1.0, -1.0))
            self.turns = [(self.rng.uniform(0.5, 6.5), side * self.rng.uniform(25.0, 40.0))]

    def react(self, t: float, prompt: Prompt) -> None:
        """A new prompt on the screen at ``t``."""
        if self.kind in ("genuine", "answer"):
            # a rider still turned from the last answer comes back to the screen first
            busy = [start + 2 * TURN_UP_S + TURN_HOLD_S for start, _ in self.turns]
            asked = answer(prompt, self.rng, max([t, *busy]))
            self.blinks = [b for b in self.blinks if not _near(b, asked)] + list(asked.blinks)
            self.turns += list(asked.turns)
        elif self.kind in ("switch", "tilt"):
            towards = {"turn_left": 1.0, "turn_right": -1.0}.get(prompt, 0.0)
            sign = self.sign if self.kind == "tilt" else 1.0
            self.swap = (t + self.rng.uniform(0.6, 1.2), 35.0 * towards * sign)

    def frame_at(self, t: float) -> Image:
        scene, phone, seed = self.scene, self.phone, self.seed
        if self.kind == "switch":
            image = scene.image
            if self.swap is not None and t >= self.swap[0] and round(self.swap[1]):
                image = turn_head(scene, self.swap[1])
            return camera_frame(image, scene, t, seed, phone=phone)
        if self.kind == "tilt":
            tilt = 0.0
            if self.swap is not None:
                tilt = self.swap[1] * _smooth(min(1.0, max(0.0, (t - self.swap[0]) / 0.5)))
            return camera_frame(scene.image, scene, t, seed, phone=phone, tilt_deg=tilt)
        script = Script(tuple(sorted(self.blinks)), tuple(self.turns))
        yaw = script.yaw(t)
        image = turn_head(scene, yaw) if round(yaw) else scene.image
        closure = script.closure(t)
        if closure > 0.0 and not round(yaw):
            image = close_eyes(image, scene.eyes, closure)
        return camera_frame(image, scene, t, seed, phone=phone)


@dataclass
class Result:
    """How one visit went: each check's outcome and when, and what the landmarks cost."""

    kind: str
    prompt: Prompt
    challenge: str = "pending"
    challenge_reason: str = ""
    challenge_at: float | None = None  # seconds after the prompt
    first_round: str = "pending"  # the first prompt alone (a one-round challenge)
    first_at: float | None = None
    blink_only: str = "pending"
    frames: int = 0
    faces: int = 0
    mesh_s: list[float] = field(default_factory=list)
    dlib68_s: list[float] = field(default_factory=list)


def _find(engine: FaceEngine, image: Image, previous: FaceBox | None) -> FaceBox | None:
    """The face as the live pipeline finds a tracked one: near its last box, else a search."""
    boxes = engine.detect_near(image, previous) if previous is not None else []
    if not boxes:
        boxes = engine.search(image, 320)
    return pick_face(boxes, image.shape[1], image.shape[0]) if boxes else None


def run(
    engine: FaceEngine,
    item: Visit,
    prompts: list[Prompt],
    challenge: ChallengeConfig = CHALLENGE,
    time_dlib: bool = False,
) -> Result:
    """Feed the visit's frames to both checks until both are decided or the visit ends;
    the challenge asks ``prompts`` in turn (one per round)."""
    queue = list(prompts)
    config = replace(challenge, choose=lambda _allowed: queue.pop(0))
    challenged = LivenessCheck(LivenessConfig(challenge=config))
    blinks_only = LivenessCheck(LivenessConfig())
    result = Result(item.kind, prompts[0])
    duration = PROMPT_AT + config.rounds * (config.timeout_s + 1.0) + 0.3
    box: FaceBox | None = None
    shown: Prompt | None = None
    for n in range(int(duration * FPS)):
        t = n / FPS
        image = item.frame_at(t)
        found = _find(engine, image, box)
        sample = None
        # as the live pipeline: a face the detector lost is looked for by the mesh at its
        # last place while a challenge runs
        look = found or (box if challenged.challenged else None)
        box = found or box
        if look is not None:
            result.faces += found is not None
            started = time.perf_counter()
            sample = engine.liveness_sample(image, look)
            result.mesh_s.append(time.perf_counter() - started)
            if time_dlib:
                started = time.perf_counter()
                engine._models.landmarks68(image, look.ltrb())
                result.dlib68_s.append(time.perf_counter() - started)
        result.frames += 1
        state = challenged.update(t, sample)
        if t >= PROMPT_AT:
            state = challenged.escalate(t)
        if state.prompt is not None and state.status == "pending" and state.prompt != shown:
            shown = state.prompt
            item.react(t, shown)
        passive = blinks_only.update(t, sample)
        if result.first_round == "pending" and (challenged.answered or state.status == "failed"):
            result.first_round = "passed" if challenged.answered else "failed"
            result.first_at = t - PROMPT_AT
        if state.status != "pending" and result.challenge == "pending":
            result.challenge, result.challenge_reason = state.status, state.reason
            result.challenge_at = t - PROMPT_AT
        if passive.status != "pending":
            result.blink_only = passive.status
        if result.challenge != "pending" and result.blink_only != "pending":
            break
    return result
