"""The decision policy, k-of-n consensus and the decision record."""

from __future__ import annotations

import json

import pytest

from edge.vision.consensus import CONFLICT, Consensus, DecisionRecord, Vote
from edge.vision.policy import Candidate, Candidates, Decision, ThresholdMarginPolicy


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
