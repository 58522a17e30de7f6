"""The decision policy: from the nearest enrolled people to "this is X", "nobody", or "ask".

Pure code. Two policies sit behind the ``Policy`` protocol:

- ``ThresholdMarginPolicy``: the nearest person is accepted when their nearest template is
  closer than ``threshold`` and the nearest *other* person is at least ``margin`` further.
- ``CohortPolicy`` (the default): a score that normalises the distance against the matched
  template's own cohort (how far its nearest other enrolled people are: a template in a
  crowded part of face space must be matched more closely) and rewards the gap to the
  next person, compared with a threshold chosen from a table of operating points by the
  roster's size. When the face is close to someone but not certain enough, when the
  roster is larger than any calibrated operating point, or when the matched rider has a
  lookalike enrolled, the decision is ``claim required``: the rider confirms a short
  claim and the search becomes a 1:1 or 1:few verification (``edge.vision.claim``).

``Decision`` is the single-frame outcome. It never holds a template. The calibrated
numbers live in ``operating_points.json`` beside this module (``load_operating_points``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

# Reasons, stable strings (``kiosk faces identify`` prints them); a picture without a face
# to act on gives ``models.reasons.NO_FACE`` or ``SEVERAL_FACES``.
MATCH = "match"
UNKNOWN = "unknown"
AMBIGUOUS = "ambiguous"
CLAIM_REQUIRED = "claim required"
EMPTY_ROSTER = "empty roster"
UNREADABLE = "unreadable image"

OPERATING_POINTS = "operating_points.json"


@dataclass(frozen=True)
class Candidate:
    """One enrolled person near a probe: their id and the distance to their nearest template.

    ``cohort`` is that template's cohort statistic (the mean distance to its nearest other
    enrolled people), ``neighbour`` the distance from this person's templates to the nearest
    other enrolled person (both ``None`` when the gallery did not compute them), and
    ``flagged`` says the rider record carries a lookalike flag from enrolment.
    """

    person_id: str
    distance: float
    template: int
    cohort: float | None = None
    neighbour: float | None = None
    flagged: bool = False


@dataclass(frozen=True)
class Candidates:
    """The nearest enrolled people to one probe, nearest first, one entry per person."""

    nearest: tuple[Candidate, ...]
    roster_people: int
    roster_templates: int

    @property
    def best(self) -> Candidate | None:
        return self.nearest[0] if self.nearest else None

    @property
    def margin(self) -> float | None:
        """How much further the nearest *other* person is (``None`` with one person enrolled)."""
        if len(self.nearest) < 2:
            return None
        return self.nearest[1].distance - self.nearest[0].distance


@dataclass(frozen=True)
class Decision:
    """The outcome for one face: who it is (or ``None``) and why."""

    person_id: str | None
    distance: float | None
    margin: float | None
    reason: str
    score: float | None = None  # the policy's score, when it computes one

    @property
    def accepted(self) -> bool:
        return self.person_id is not None


class Policy(Protocol):
    """Turns the nearest candidates of one probe into a decision.

    ``threshold`` is the largest distance the policy ever accepts and ``margin`` the
    smallest gap to the next person it ever accepts (both go into decision records).
    """

    @property
    def threshold(self) -> float: ...

    @property
    def margin(self) -> float: ...

    def decide(self, candidates: Candidates) -> Decision: ...


@dataclass(frozen=True)
class ThresholdMarginPolicy:
    """Accept under ``threshold`` and ``margin`` ahead of the next person; refuse otherwise."""

    threshold: float = 0.47
    margin: float = 0.08

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 2.0:
            raise ValueError(f"threshold must be in (0, 2), got {self.threshold}")
        if not 0.0 <= self.margin < 2.0:
            raise ValueError(f"margin must be in [0, 2), got {self.margin}")

    def decide(self, candidates: Candidates) -> Decision:
        best = candidates.best
        if best is None:
            return Decision(None, None, None, EMPTY_ROSTER)
        gap = candidates.margin
        if best.distance >= self.threshold:
            return Decision(None, best.distance, gap, UNKNOWN)
        if gap is not None and gap < self.margin:
            return Decision(None, best.distance, gap, AMBIGUOUS)
        return Decision(best.person_id, best.distance, gap, MATCH)


@dataclass(frozen=True)
class Normaliser:
    """Turns a distance into a cohort-normalised one.

    ``effective = centre + w * (cohort - centre)``, where ``w`` grows from 0 to 1 as the
    cohort was computed from more other people (fully trusted from ``full_people``): a
    roster of a dozen people says little about how crowded a template's neighbourhood is.
    The normalised distance is ``distance - weight * (effective - centre)``.
    """

    weight: float
    centre: float
    full_people: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 5.0 or not 0.0 < self.centre < 2.0:
            raise ValueError(f"cohort weight/centre out of range: {self.weight}, {self.centre}")
        if self.full_people < 1:
            raise ValueError(f"full_people must be at least 1, got {self.full_people}")

    def trust(self, roster_people: int) -> float:
        return min(1.0, max(0, roster_people - 1) / self.full_people)

    def distance(self, distance: float, cohort: float | None, roster_people: int) -> float | None:
        """The normalised distance, or ``None`` when a cohort is needed but missing."""
        trust = self.trust(roster_people)
        if trust == 0.0 or self.weight == 0.0:
            return distance
        if cohort is None:
            return None
        return distance - self.weight * trust * (cohort - self.centre)


@dataclass(frozen=True)
class OperatingPoint:
    """For rosters of up to ``people`` people: accept when the score is below ``threshold``."""

    people: int
    threshold: float


@dataclass(frozen=True)
class CohortPolicy:
    """Cohort-normalised score, threshold by roster size, a claim when not certain enough.

    ``score = normalised(d1) - margin_weight * min(d2 - d1, gap_cap)`` (``gap_cap`` stands
    in for the gap when only one person is enrolled). The nearest person is accepted when
    ``score`` is under the operating point for the roster's size, ``d1`` under
    ``max_distance`` and the gap at least ``min_margin``, and they have no lookalike (a
    flag from enrolment, or another rider enrolled within ``lookalike_distance``).
    Otherwise the decision is ``claim required`` while ``d1`` is under ``claim_distance``
    (a claim could still verify this face) and ``unknown`` beyond it.
    """

    points: tuple[OperatingPoint, ...]
    normaliser: Normaliser
    margin_weight: float
    gap_cap: float
    max_distance: float
    min_margin: float
    claim_distance: float
    lookalike_distance: float = 0.0

    def __post_init__(self) -> None:
        sizes = [p.people for p in self.points]
        if sizes != sorted(set(sizes)) or any(size < 1 for size in sizes):
            raise ValueError(f"operating points must have rising roster sizes, got {sizes}")
        if not 0.0 < self.max_distance < 2.0 or not 0.0 < self.claim_distance < 2.0:
            raise ValueError("max_distance and claim_distance must be in (0, 2)")
        if not 0.0 <= self.min_margin <= self.gap_cap < 2.0 or self.margin_weight < 0.0:
            raise ValueError("need 0 <= min_margin <= gap_cap < 2 and margin_weight >= 0")

    @property
    def threshold(self) -> float:
        return self.max_distance

    @property
    def margin(self) -> float:
        return self.min_margin

    @property
    def max_people(self) -> int:
        """The largest roster with an automatic decision (a claim for every face beyond)."""
        return self.points[-1].people if self.points else 0

    def point(self, roster_people: int) -> OperatingPoint | None:
        """The operating point for a roster of this size (the next larger calibrated size)."""
        return next((p for p in self.points if roster_people <= p.people), None)

    def lookalike(self, candidate: Candidate) -> bool:
        near = candidate.neighbour is not None and candidate.neighbour < self.lookalike_distance
        return candidate.flagged or near

    def score(self, candidates: Candidates) -> float | None:
        best = candidates.best
        if best is None:
            return None
        normalised = self.normaliser.distance(best.distance, best.cohort, candidates.roster_people)
        if normalised is None:
            return None
        gap = candidates.margin
        return normalised - self.margin_weight * min(
            self.gap_cap if gap is None else gap, self.gap_cap
        )

    def held_by(self, candidates: Candidates) -> tuple[str, ...]:
        """What keeps the nearest person from being accepted: any of ``size`` (no
        operating point for a roster this large), ``score``, ``distance`` (not under
        ``max_distance``), ``gap`` (under ``min_margin``) and ``lookalike``; none when
        accepted. The fleet evaluation counts them; ``decide`` accepts on none."""
        return self._judge(candidates)[0]

    def _judge(self, candidates: Candidates) -> tuple[tuple[str, ...], float | None]:
        best = candidates.best
        if best is None:
            return ("empty",), None
        gap = candidates.margin
        score = self.score(candidates)
        point = self.point(candidates.roster_people)
        held = {
            "size": point is None,
            "score": point is not None and (score is None or score >= point.threshold),
            "distance": best.distance >= self.max_distance,
            "gap": gap is not None and gap < self.min_margin,
            "lookalike": self.lookalike(best),
        }
        return tuple(name for name, holds in held.items() if holds), score

    def decide(self, candidates: Candidates) -> Decision:
        best = candidates.best
        if best is None:
            return Decision(None, None, None, EMPTY_ROSTER)
        gap = candidates.margin
        held, score = self._judge(candidates)
        if not held:
            return Decision(best.person_id, best.distance, gap, MATCH, score)
        reason = CLAIM_REQUIRED if best.distance < self.claim_distance else UNKNOWN
        return Decision(None, best.distance, gap, reason, score)


def automatic_limit(policy: Policy) -> int | None:
    """The largest roster ``policy`` decides on without a claim (``None``: no limit)."""
    return policy.max_people if isinstance(policy, CohortPolicy) else None


def load_operating_points(path: Path | None = None) -> dict[str, Any]:
    """The calibrated numbers: ``path``, or the file shipped beside this module."""
    if path is None:
        text = resources.files("edge.vision").joinpath(OPERATING_POINTS).read_text("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def cohort_policy(points: dict[str, Any]) -> CohortPolicy:
    """The 1:N policy described by the ``identify`` section of an operating-points file."""
    section = points["identify"]
    return CohortPolicy(
        points=tuple(
            OperatingPoint(int(p["people"]), float(p["threshold"])) for p in section["points"]
        ),
        normaliser=normaliser(section),
        margin_weight=float(section["margin_weight"]),
        gap_cap=float(section["gap_cap"]),
        max_distance=float(section["max_distance"]),
        min_margin=float(section["min_margin"]),
        claim_distance=float(points["verify"]["max_distance"]),
        lookalike_distance=float(section["lookalike_distance"]),
    )


def normaliser(section: dict[str, Any]) -> Normaliser:
    return Normaliser(
        float(section["cohort_weight"]),
        float(section["cohort_centre"]),
        int(section["cohort_people"]),
    )
