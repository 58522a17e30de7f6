"""The live pipeline's rules, driven by a scripted engine (no model): consensus, one person
at a time, liveness, holding and re-checking a decided face."""

from __future__ import annotations

import numpy as np

from edge.vision.consensus import fuse
from edge.vision.live import LiveConfig, LivePipeline
from edge.vision.liveness import LivenessConfig
from edge.vision.matcher import Candidates, Gallery
from edge.vision.policy import CLAIM_REQUIRED, Decision, ThresholdMarginPolicy
from hardware.cameras import Frame
from models.encoder import FaceBox
from models.hints import Hint
from models.mesh import FaceSample, Pose
from tests.unit.test_liveness import eyes
from tests.unit.test_quality import BOX, landmarks, textured

SECOND = FaceBox(top=140, right=640, bottom=320, left=460)
PEOPLE = {1: "ann", 2: "bob", 3: "stranger"}
VECTORS = {code: np.random.default_rng(code).normal(0, 0.12, 128) for code in PEOPLE}
TEXTURE = textured()


class ScriptedEngine:
    """Reads who is in the frame from its first pixel: [person code, second face?, eye openness x100]."""

    model_version = "scripted"

    def __init__(self) -> None:
        self.encoded = 0

    def detect(
        self, image: np.ndarray, detect_width: int | None = None, max_upsample: int | None = None
    ) -> list[FaceBox]:
        code, second = int(image[0, 0, 0]), int(image[0, 0, 1])
        return ([BOX] if code else []) + ([SECOND] if second else [])

    def search(self, image: np.ndarray, quick_width: int) -> list[FaceBox]:
        return self.detect(image)

    def detect_near(self, image: np.ndarray, previous: FaceBox) -> list[FaceBox]:
        return self.detect(image)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        return landmarks(box)

    def encode(
        self, image: np.ndarray, box: FaceBox, points: np.ndarray | None = None
    ) -> np.ndarray:
        self.encoded += 1
        return VECTORS[int(image[0, 0, 0])] + 0.01

    def liveness_sample(self, image: np.ndarray, box: FaceBox) -> FaceSample:
        return FaceSample(eyes(int(image[0, 0, 2]) / 100), Pose(0.0, 0.0, 0.0), 1.0)


def frame(
    index: int, person: int = 0, second: bool = False, openness: float = 0.3, fps: float = 15.0
) -> Frame:
    image = TEXTURE.copy()
    image[0, 0] = (person, int(second), round(openness * 100))
    return Frame(image, index / fps, index, "scripted")


def pipeline(liveness: LivenessConfig | None = None) -> tuple[LivePipeline, ScriptedEngine]:
    engine = ScriptedEngine()
    gallery = Gallery([("ann", VECTORS[1]), ("bob", VECTORS[2])])
    return LivePipeline(
        engine, gallery, ThresholdMarginPolicy(0.47, 0.08), config=LiveConfig(), liveness=liveness
    ), engine


def run(pipe: LivePipeline, frames: list[Frame]) -> list:
    return [pipe.process(f) for f in frames]


def test_an_enrolled_rider_is_decided_on_the_second_frame_and_held() -> None:
    pipe, engine = pipeline()
    outcomes = run(pipe, [frame(i, person=1) for i in range(30)])
    records = [o.record for o in outcomes if o.record]
    assert len(records) == 1
    record = records[0]
    assert (record.person_id, record.frames_used, record.liveness, record.roster_people) == (
        "ann",
        2,
        "off",
        2,
    )
    assert outcomes[1].record is record and outcomes[0].person_id is None
    assert all(o.person_id == "ann" for o in outcomes[1:])
    assert record.latency_s == 1 / 15
    assert engine.encoded <= 4  # two votes, then a re-check every 1.5 s


def test_a_stranger_is_refused_once_and_never_held() -> None:
    pipe, _ = pipeline()
    outcomes = run(pipe, [frame(i, person=3) for i in range(20)])
    records = [o.record for o in outcomes if o.record]
    assert [(r.person_id, r.reason, r.frames_used) for r in records] == [(None, "unknown", 2)]
    assert all(o.person_id is None for o in outcomes)


def test_two_people_in_view_get_no_decision() -> None:
    pipe, engine = pipeline()
    outcomes = run(pipe, [frame(i, person=1, second=True) for i in range(10)])
    assert not any(o.record or o.person_id for o in outcomes)
    assert outcomes[-1].hint == Hint.ONE_AT_A_TIME
    assert engine.encoded == 0


def test_the_next_rider_is_checked_before_the_label_moves_on() -> None:
    pipe, _ = pipeline()
    frames = (
        [frame(i, person=1) for i in range(5)]
        + [frame(5)]
        + [frame(i, person=2) for i in range(6, 12)]
    )
    outcomes = run(pipe, frames)
    assert outcomes[6].person_id != "ann"  # bob, in ann's place after one empty frame
    records = [o.record for o in outcomes if o.record]
    assert [r.person_id for r in records] == ["ann", "bob"]


def test_a_still_photo_never_passes_liveness() -> None:
    pipe, _ = pipeline(LivenessConfig(timeout_s=3.0))
    outcomes = run(
        pipe, [frame(i, person=1, openness=0.3) for i in range(75)]
    )  # 5 s, eyes never move
    records = [o.record for o in outcomes if o.record]
    assert [(r.person_id, r.reason, r.liveness) for r in records] == [
        (None, "liveness not confirmed", "failed")
    ]
    assert all(o.person_id is None for o in outcomes)
    assert outcomes[10].hint == Hint.BLINK
    assert outcomes[-1].hint == Hint.LOOK_AND_BLINK


def test_a_blink_lets_the_decision_through() -> None:
    pipe, _ = pipeline(LivenessConfig(timeout_s=3.0))
    openness = [0.3] * 6 + [0.1, 0.1] + [0.3] * 4
    outcomes = run(pipe, [frame(i, person=1, openness=o) for i, o in enumerate(openness)])
    records = [o.record for o in outcomes if o.record]
    assert [(r.person_id, r.liveness) for r in records] == [("ann", "passed")]
    assert outcomes.index(next(o for o in outcomes if o.record)) == 8  # the frame the eyes reopen


class ClaimEverything:
    """A policy that is never certain: every face close to a rider needs the claim."""

    threshold = 0.6
    margin = 0.0

    def decide(self, candidates: Candidates) -> Decision:
        best = candidates.best
        if best is None or best.distance >= 0.6:
            return Decision(None, None if best is None else best.distance, None, "unknown")
        return Decision(None, best.distance, candidates.margin, CLAIM_REQUIRED)


def claim_pipeline(liveness: LivenessConfig | None = None) -> LivePipeline:
    gallery = Gallery([("ann", VECTORS[1]), ("bob", VECTORS[2])])
    return LivePipeline(
        ScriptedEngine(), gallery, ClaimEverything(), config=LiveConfig(), liveness=liveness
    )


def test_a_claim_required_face_hands_over_its_encodings_once() -> None:
    outcomes = run(claim_pipeline(), [frame(i, person=1) for i in range(20)])
    decided = [o for o in outcomes if o.record]
    assert [(o.record.reason, o.record.person_id) for o in decided] == [(CLAIM_REQUIRED, None)]
    claim = decided[0].claim
    assert claim is not None and claim.roster_people == 2
    # the vote's two, then what the face gave since, never past the claim step's window
    assert 2 <= len(claim.frames()) <= LiveConfig().claim_frames
    assert np.allclose(fuse(claim.frames()), VECTORS[1] + 0.01)
    assert f"encodings={len(claim.frames())}" in repr(claim)
    assert "0.0" not in repr(claim)  # no template values
    assert "encoding" not in str(decided[0].record.as_dict())  # the record stays template-free
    assert all(o.claim is None for o in outcomes if o is not decided[0])


def test_the_claim_step_keeps_gathering_the_face_while_the_rider_types() -> None:
    pipe = claim_pipeline()
    frames = iter([frame(i, person=1) for i in range(60)])  # 4 s at 15 fps
    claim = None
    while claim is None:
        claim = pipe.process(next(frames)).claim
    assert len(claim.frames()) == 2  # the vote's own frames
    encoded = pipe.encodings
    run(pipe, [next(frames) for _ in range(15)])  # a second: a frame every 0.25 s
    assert 5 <= len(claim.frames()) <= 7 and pipe.encodings - encoded == len(claim.frames()) - 2
    run(pipe, list(frames))
    assert len(claim.frames()) == LiveConfig().claim_frames  # then it stops at its size
    assert np.allclose(fuse(claim.frames()), VECTORS[1] + 0.01)
    assert "encodings=8" in repr(claim) and "0.0" not in repr(claim)


def test_a_face_that_left_adds_nothing_to_the_held_claim() -> None:
    pipe = claim_pipeline()
    outcomes = run(pipe, [frame(i, person=1) for i in range(10)])
    claim = next(o.claim for o in outcomes if o.claim)
    held = len(claim.frames())
    run(pipe, [frame(i) for i in range(10, 30)] + [frame(i, person=2) for i in range(30, 60)])
    assert len(claim.frames()) == held  # another track, another face: never fused in


def test_a_set_match_stands_only_when_no_rider_outside_the_set_is_nearer() -> None:
    engine = ScriptedEngine()
    members = [("ann", VECTORS[1]), ("bob", VECTORS[2])]
    automatic = Gallery(members)
    pipe = LivePipeline(engine, automatic, ThresholdMarginPolicy(0.47, 0.08))
    # everyone: ann's twin from another kiosk sits exactly where this face is
    everyone = Gallery([*members, ("twin", VECTORS[1] + 0.01)])
    pipe.swap_gallery(automatic, roster=everyone)
    outcomes = run(pipe, [frame(i, person=1) for i in range(10)])
    records = [o.record for o in outcomes if o.record]
    assert [(r.person_id, r.reason) for r in records] == [(None, CLAIM_REQUIRED)]
    assert next(o.claim for o in outcomes if o.record) is not None  # to the claim step
    pipe.swap_gallery(automatic, roster=Gallery([*members, ("carl", VECTORS[3])]))
    records = [o.record for o in run(pipe, [frame(i, person=1) for i in range(10)]) if o.record]
    assert [r.person_id for r in records] == ["ann"]  # nobody nearer: the set decides


def test_a_stranger_or_a_match_never_asks_for_a_claim() -> None:
    unknown = run(claim_pipeline(), [frame(i, person=3) for i in range(10)])
    assert [o.record.reason for o in unknown if o.record] == ["unknown"]
    assert all(o.claim is None for o in unknown)
    pipe, _ = pipeline()
    assert all(o.claim is None for o in run(pipe, [frame(i, person=1) for i in range(10)]))


def test_each_new_track_is_a_new_claim() -> None:
    frames = [frame(i, person=1) for i in range(5)] + [frame(i) for i in range(5, 20)]
    frames += [frame(i, person=1) for i in range(20, 25)]
    claims = [o.claim for o in run(claim_pipeline(), frames) if o.claim]
    assert len(claims) == 2 and claims[0].track != claims[1].track


def test_the_claim_step_waits_for_a_live_face() -> None:
    still = run(
        claim_pipeline(LivenessConfig(timeout_s=3.0)),
        [frame(i, person=1, openness=0.3) for i in range(75)],
    )
    assert [(o.record.reason, o.claim) for o in still if o.record] == [
        ("liveness not confirmed", None)
    ]
    openness = [0.3] * 6 + [0.1, 0.1] + [0.3] * 4
    blinked = run(
        claim_pipeline(LivenessConfig(timeout_s=3.0)),
        [frame(i, person=1, openness=o) for i, o in enumerate(openness)],
    )
    decided = [o for o in blinked if o.record]
    assert [(o.record.reason, o.record.liveness) for o in decided] == [(CLAIM_REQUIRED, "passed")]
    assert decided[0].claim is not None


def test_a_slow_frame_does_not_lose_a_face_that_never_left() -> None:
    """The CPU falls behind (the next frame a second later): a stranger still in view keeps
    the track that refused it, so no second refusal; a face missed over frames for longer
    than ``track_lost_s`` is a new track."""
    pipe, _ = pipeline()
    seen = [frame(i, person=3) for i in range(5)]  # refused on the second frame
    seen += [frame(i, person=3) for i in range(20, 25)]  # after a 1 s stall, still there
    assert len([o.record for o in run(pipe, seen) if o.record]) == 1
    gone = [frame(i, person=0) for i in range(25, 40)] + [frame(i, person=3) for i in range(40, 45)]
    assert len([o.record for o in run(pipe, gone) if o.record]) == 1  # away 1 s: a new track
