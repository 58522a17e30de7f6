"""The decision policies (threshold-and-margin, roster-size aware), k-of-n consensus, records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.vision.calibrate import Trials, scores
from edge.vision.calibrate_verify import Attempts, to_serve
from edge.vision.consensus import CONFLICT, Consensus, DecisionRecord, Vote
from edge.vision.policy import (
    Candidate,
    Candidates,
    CohortPolicy,
    Decision,
    Normaliser,
    OperatingPoint,
    ThresholdMarginPolicy,
    cohort_policy,
    load_operating_points,
)


def cands(*pairs: tuple[str, float]) -> Candidates:
    return Candidates(
        tuple(Candidate(p, d, i) for i, (p, d) in enumerate(pairs)), len(pairs), len(pairs)
    )


@pytest.mark.parametrize(
    ("candidates", "person", "reason"),
    [
        (cands(("ann", 0.30), ("bob", 0.60)), "ann", "match"),
        (cands(("ann", 0.47), ("bob", 0.90)), None, "unknown"),  # at the threshold: refused
        (cands(("ann", 0.469), ("bob", 0.90)), "ann", "match"),
        (cands(("ann", 0.40), ("bob", 0.47)), None, "ambiguous"),  # 0.07 ahead, 0.08 needed
        (cands(("ann", 0.40), ("bob", 0.4801)), "ann", "match"),
        (cands(("ann", 0.30)), "ann", "match"),  # a roster of one: no other person to beat
        (cands(("ann", 0.55)), None, "unknown"),
        (Candidates((), 0, 0), None, "empty roster"),
    ],
)
def test_threshold_and_margin(candidates: Candidates, person: str | None, reason: str) -> None:
    decision = ThresholdMarginPolicy(0.47, 0.08).decide(candidates)
    assert (decision.person_id, decision.reason) == (person, reason)
    if candidates.nearest:
        assert decision.distance == candidates.nearest[0].distance
        assert decision.margin == candidates.margin


def test_policy_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="threshold"):
        ThresholdMarginPolicy(0.0, 0.1)
    with pytest.raises(ValueError, match="margin"):
        ThresholdMarginPolicy(0.5, -0.1)


def yes(person: str, distance: float = 0.3, margin: float = 0.2) -> Vote:
    return Vote(person, distance, margin, "match")


def no(reason: str = "unknown", distance: float | None = 0.7) -> Vote:
    return Vote(None, distance, None, reason)


def test_two_of_three_accepts_the_same_person() -> None:
    consensus = Consensus(2, 3)
    assert consensus.add(yes("ann", 0.30, 0.25)) is None  # one frame never decides
    verdict = consensus.add(yes("ann", 0.35, 0.15))
    assert verdict is not None
    assert (verdict.person_id, verdict.reason, verdict.frames_used) == ("ann", "match", 2)
    assert verdict.distance == 0.35 and verdict.margin == 0.15  # the worst of the agreeing frames


def test_a_refused_frame_between_two_accepts_still_counts_k_of_n() -> None:
    consensus = Consensus(2, 3)
    assert consensus.add(yes("ann")) is None
    assert consensus.add(no("face blurred", None)) is None
    verdict = consensus.add(yes("ann"))
    assert verdict is not None and verdict.person_id == "ann"


def test_two_people_in_the_window_never_decide() -> None:
    consensus = Consensus(2, 3)
    assert consensus.add(yes("ann")) is None
    assert consensus.add(yes("bob")) is None
    assert consensus.add(yes("ann")) is None  # ann twice, but bob is still in the window
    assert consensus.add(yes("ann")) is None  # window: bob, ann, ann
    verdict = consensus.add(yes("ann"))  # window: ann, ann, ann
    assert verdict is not None and verdict.person_id == "ann"
    assert CONFLICT  # the reason name exists for callers that report it


def test_refused_when_k_of_n_is_out_of_reach() -> None:
    consensus = Consensus(3, 5)  # refused after 5 - 3 + 1 = 3 refusals in a row
    assert consensus.add(no("unknown", 0.8)) is None
    assert consensus.add(no("ambiguous", 0.45)) is None
    verdict = consensus.add(no("unknown", 0.9))
    assert verdict is not None
    assert (verdict.person_id, verdict.reason, verdict.distance) == (None, "unknown", 0.45)
    assert verdict.frames_used == 3
    two_of_three = Consensus(2, 3)
    assert two_of_three.add(yes("ann")) is None
    assert two_of_three.add(no()) is None
    assert two_of_three.add(no()) is not None  # the last two refused: ann cannot reach 2 of 3


def test_consensus_bounds() -> None:
    with pytest.raises(ValueError):
        Consensus(3, 2)
    single = Consensus(1, 1)
    verdict = single.add(Vote.of(Decision("ann", 0.2, None, "match")))
    assert verdict is not None and verdict.person_id == "ann"


def test_decision_record_is_plain_data_without_templates() -> None:
    record = DecisionRecord(
        person_id="ann",
        reason="match",
        distance=0.312345678,
        margin=0.2,
        threshold=0.47,
        required_margin=0.08,
        model_version="dlib_resnet_v1",
        frames_used=2,
        frames_seen=3,
        liveness="passed",
        roster_people=17,
        started_at=10.0,
        decided_at=10.25,
    )
    data = record.as_dict()
    assert data["distance"] == 0.3123 and data["latency_ms"] == 250.0
    assert set(data) == {
        "person_id",
        "reason",
        "distance",
        "margin",
        "threshold",
        "required_margin",
        "model_version",
        "frames_used",
        "frames_seen",
        "liveness",
        "roster_people",
        "latency_ms",
    }
    assert len(json.dumps(data)) < 400


# -- the roster-size aware policy -------------------------------------------------------------

COHORT = CohortPolicy(
    points=(OperatingPoint(10, 2.0), OperatingPoint(100, 0.46), OperatingPoint(400, 0.42)),
    normaliser=Normaliser(2.0, 0.63, 1),
    margin_weight=0.75,
    gap_cap=0.15,
    max_distance=0.5,
    min_margin=0.02,
    claim_distance=0.6,
    lookalike_distance=0.45,
)


def roster(
    people: int, *pairs: tuple[str, float], cohort: float = 0.63, neighbour: float = 0.6
) -> Candidates:
    nearest = tuple(Candidate(p, d, i, cohort, neighbour) for i, (p, d) in enumerate(pairs))
    return Candidates(nearest, people, people)


@pytest.mark.parametrize(
    ("candidates", "person", "reason"),
    [
        (roster(300, ("ann", 0.35), ("bob", 0.60)), "ann", "match"),  # 0.35 - 0.75*0.15 < 0.42
        (roster(300, ("ann", 0.46), ("bob", 0.48)), None, "claim required"),  # close, unsure
        (roster(300, ("ann", 0.58), ("bob", 0.70)), None, "claim required"),  # a claim may tell
        (roster(300, ("ann", 0.62), ("bob", 0.70)), None, "unknown"),  # beyond any claim
        (roster(300, ("ann", 0.30), ("bob", 0.31)), None, "claim required"),  # twins: ask
        (roster(50, ("ann", 0.45), ("bob", 0.46)), None, "claim required"),  # gap under 0.02
        (roster(50, ("ann", 0.45), ("bob", 0.50)), "ann", "match"),  # small roster: looser
        (roster(401, ("ann", 0.20), ("bob", 0.70)), None, "claim required"),  # too large
        (roster(1, ("ann", 0.49)), "ann", "match"),  # a roster of one: the gap stands at its cap
        (roster(1, ("ann", 0.52)), None, "claim required"),
        (Candidates((), 0, 0), None, "empty roster"),
    ],
)
def test_cohort_policy_decisions(candidates: Candidates, person: str | None, reason: str) -> None:
    decision = COHORT.decide(candidates)
    assert (decision.person_id, decision.reason) == (person, reason)


def test_a_crowded_template_must_be_matched_more_closely() -> None:
    sparse = roster(300, ("ann", 0.44), ("bob", 0.60), cohort=0.70)
    crowded = roster(300, ("ann", 0.44), ("bob", 0.60), cohort=0.56)
    assert COHORT.decide(sparse).reason == "match"
    assert COHORT.decide(crowded).reason == "claim required"
    score = COHORT.score(sparse)
    assert score == pytest.approx(0.44 - 2.0 * (0.70 - 0.63) - 0.75 * 0.15)


def test_lookalikes_always_go_through_the_claim_step() -> None:
    near_twin = roster(300, ("ann", 0.30), ("bob", 0.60), neighbour=0.44)
    assert COHORT.decide(near_twin).reason == "claim required"
    flagged = Candidates((Candidate("ann", 0.30, 0, 0.63, 0.6, True),), 300, 300)
    assert COHORT.decide(flagged).reason == "claim required"


@pytest.mark.parametrize(
    ("candidates", "held"),
    [
        (roster(300, ("ann", 0.35), ("bob", 0.60)), ()),
        (roster(300, ("ann", 0.49), ("bob", 0.55)), ("score",)),
        (roster(300, ("ann", 0.51), ("bob", 0.80), cohort=0.9), ("distance",)),
        (roster(300, ("ann", 0.30), ("bob", 0.31), cohort=0.9), ("gap",)),
        (roster(300, ("ann", 0.30), ("bob", 0.60), neighbour=0.44), ("lookalike",)),
        (roster(500, ("ann", 0.20), ("bob", 0.60)), ("size",)),
        (roster(300, ("ann", 0.55), ("bob", 0.56)), ("score", "distance", "gap")),
        (Candidates((), 0, 0), ("empty",)),
    ],
)
def test_what_holds_a_face_back_is_what_decide_refuses_on(
    candidates: Candidates, held: tuple[str, ...]
) -> None:
    assert COHORT.held_by(candidates) == held
    assert (COHORT.decide(candidates).reason == "match") == (held == ())


def test_a_missing_cohort_is_never_guessed() -> None:
    missing = Candidates(
        (Candidate("ann", 0.30, 0), Candidate("bob", 0.6, 1)),
        roster_people=300,
        roster_templates=300,
    )
    assert COHORT.decide(missing).reason == "claim required"


def test_operating_point_by_roster_size() -> None:
    assert COHORT.point(1) == OperatingPoint(10, 2.0)
    assert COHORT.point(11) == OperatingPoint(100, 0.46)
    assert COHORT.point(400) == OperatingPoint(400, 0.42)
    assert COHORT.point(401) is None and COHORT.max_people == 400
    assert (COHORT.threshold, COHORT.margin) == (0.5, 0.02)  # what decision records show
    with pytest.raises(ValueError, match="rising"):
        CohortPolicy(
            (OperatingPoint(100, 0.4), OperatingPoint(10, 0.5)),
            Normaliser(1.0, 0.63, 1),
            0.5,
            0.15,
            0.5,
            0.0,
            0.6,
        )


def test_the_calibration_arithmetic_is_the_policy_s() -> None:
    """``calibrate.scores`` (vectorised, used to fit the table) decides as the policy does."""
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(400):
        people = int(rng.choice([1, 5, 60, 250, 390]))
        d1 = float(rng.uniform(0.2, 0.65))
        gap = None if people == 1 else float(rng.uniform(0.0, 0.3))
        rows.append((people, d1, gap, float(rng.uniform(0.5, 0.75)), float(rng.uniform(0.4, 0.7))))
    trials = Trials(
        genuine_total=len(rows),
        unknown_total=0,
        genuine=np.ones(len(rows), dtype=bool),
        right=np.ones(len(rows), dtype=bool),
        d1=np.array([r[1] for r in rows]),
        gap=np.array([np.nan if r[2] is None else r[2] for r in rows]),
        cohort=np.array([r[3] for r in rows]),
        neighbour=np.array([r[4] for r in rows]),
        flagged=np.zeros(len(rows), dtype=bool),
        people=np.array([r[0] for r in rows]),
    )
    params = {
        "margin_weight": 0.75,
        "cohort_weight": 2.0,
        "cohort_people": 1,
        "gap_cap": 0.15,
        "max_distance": 0.5,
        "min_margin": 0.02,
        "lookalike_distance": 0.45,
    }
    score, gates = scores(trials, params, 0.63)
    for i, (people, d1, gap, cohort, neighbour) in enumerate(rows):
        nearest = [Candidate("a", d1, 0, cohort, neighbour)]
        if gap is not None:
            nearest.append(Candidate("b", d1 + gap, 1, cohort, neighbour))
        candidates = Candidates(tuple(nearest), people, people)
        threshold = COHORT.point(people)
        assert threshold is not None
        expected = bool(gates[i] and score[i] < threshold.threshold)
        assert (COHORT.decide(candidates).reason == "match") == expected
        assert COHORT.score(candidates) == pytest.approx(score[i])


def test_the_shipped_operating_points_load() -> None:
    points = load_operating_points()
    policy = cohort_policy(points)
    assert policy.max_people >= 100
    thresholds = [p.threshold for p in policy.points]
    assert thresholds == sorted(thresholds, reverse=True)  # never looser for a larger roster
    assert 0.4 <= policy.max_distance <= 0.55 and policy.lookalike_distance > 0


def test_the_threshold_to_serve_a_share_of_all_riders_and_its_cost() -> None:
    """``calibrate_verify.to_serve``: unencoded riders count as refused; the threshold is the
    loosest genuine score needed, and every impostor under it is a false accept."""
    genuine = np.array([True] * 8 + [False] * 6)
    scores_ = np.array([0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.58, 0.62] + [0.5, 0.56, 0.59] * 2)
    attempts = Attempts(genuine, scores_, np.full(14, np.nan), 8, genuine_total=10)
    served = to_serve(attempts, scores_, share=0.7)  # 7 of 10: up to 0.58
    assert served["threshold"] == pytest.approx(0.58)
    assert (served["false_accepts"], served["false_accept_rate"]) == (4, round(4 / 6, 6))
    assert to_serve(attempts, scores_, share=0.9)["threshold"] is None  # 9 of 10: 8 encoded
