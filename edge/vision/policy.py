"""The decision policy: from the nearest enrolled people to "this is X" or "nobody".

Pure code. ``ThresholdMarginPolicy`` accepts the nearest person only when their nearest
template is closer than ``threshold`` and the nearest *other* person is at least ``margin``
further away; everything else is refused with a reason. A policy sees the roster's size
(``Candidates.roster_people``), so a roster-size-aware policy (a claim step for large
rosters) can take its place behind the same ``Policy`` protocol.

``Decision`` is the single-frame outcome. It never holds a template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Reasons, stable strings (``kiosk faces identify`` prints them).
MATCH = "match"
UNKNOWN = "unknown"
AMBIGUOUS = "ambiguous"
EMPTY_ROSTER = "empty roster"
NO_FACE = "no face"
SEVERAL_FACES = "several faces"
UNREADABLE = "unreadable image"


@dataclass(frozen=True)
class Candidate:
    """One enrolled person near a probe: their id and the distance to their nearest template."""

    person_id: str
    distance: float
    template: int


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

    @property
    def accepted(self) -> bool:
        return self.person_id is not None


class Policy(Protocol):
    """Turns the nearest candidates of one probe into a decision."""

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
