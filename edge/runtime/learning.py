"""Templates that learn: the kiosk proposes a verified visit's live encoding to the cloud.

After a visit the kiosk is sure of, the fused encoding of the visit's frames (each frame
passed the quality gate before it was encoded; ``edge.vision.live``) is sealed under the
roster data key (``cloud_sync.template_seal``) and appended to the outbox as a
``template.proposed`` event. The cloud decides whether it becomes a template
(``cloud_sync.server.learning``); the kiosk receives it, if at all, in a later delta.

A visit is sure enough when:

- ``claim_verified``: the claim step verified the face against the rider who holds the
  typed code (``edge.runtime.claim_step``), or
- ``confident_match``: the policy decided automatically with a distance at least
  ``CONFIDENT_BELOW`` under its ``max_distance`` (0.52 - 0.12 = 0.40 with the shipped
  operating points) and a margin over the next rider at least ``CONFIDENT_MARGIN_TIMES``
  its ``min_margin`` (3 x 0.04 = 0.12). On ``dev/`` no wrong-person decision of the
  policy comes near both at once (``docs/face-pipeline.md``, "Templates that learn").

Never for a rider flagged as a lookalike, never without the cloud's data key (a local
roster), at most one proposal per rider per visit (``min_gap_s``) and ``per_day`` per
rider in any 24 hours. The limits count the proposals the outbox holds (``earlier``), so a
restart of the kiosk does not reset them. The encoding is never logged.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal

import structlog

from cloud_sync.events import TemplateProposed
from cloud_sync.outbox import Outbox
from cloud_sync.template_seal import seal_template
from edge.vault.values import Rider
from edge.vision.consensus import DecisionRecord, fuse
from edge.vision.matcher import Vector

log = structlog.get_logger("edge.learning")

Reason = Literal["claim_verified", "confident_match"]
Earlier = Callable[[float], Iterable[tuple[str, float]]]

CONFIDENT_BELOW = 0.12  # distance at most max_distance - this
CONFIDENT_MARGIN_TIMES = 3.0  # margin at least this many times min_margin
PER_DAY = 2
MIN_GAP_S = 1800.0  # one proposal per visit: a rider lingering or coming back at once
DAY_S = 86400.0


def very_confident(
    distance: float | None, margin: float | None, max_distance: float, min_margin: float
) -> bool:
    """A distance and margin well inside the policy's ``max_distance`` and ``min_margin``
    (see the module's docstring); no margin (one rider enrolled) is never confident."""
    if distance is None or margin is None:
        return False
    near = distance <= max_distance - CONFIDENT_BELOW
    return near and margin >= CONFIDENT_MARGIN_TIMES * min_margin


def proposals_in(outbox: Outbox) -> Earlier:
    """The ``template.proposed`` events ``outbox`` holds since a time, as (rider, when):
    what a restarted learner counts against its limits."""

    def earlier(since: float) -> list[tuple[str, float]]:
        return [
            (e.payload.person_id, e.occurred_at.timestamp())
            for e in outbox.recent_of("template.proposed", since)
            if isinstance(e.payload, TemplateProposed)
        ]

    return earlier


def confident(record: DecisionRecord) -> bool:
    """An accepted automatic decision that is ``very_confident``."""
    return record.accepted and very_confident(
        record.distance, record.margin, record.threshold, record.required_margin
    )


class TemplateLearner:
    """Proposes templates for verified visits, within the kiosk's per-rider limits."""

    def __init__(
        self,
        kiosk_id: str,
        model: str,
        data_key: Callable[[], tuple[str, bytes] | None],
        append: Callable[..., Any],
        *,
        per_day: int = PER_DAY,
        min_gap_s: float = MIN_GAP_S,
        clock: Callable[[], float] = time.time,
        earlier: Earlier | None = None,
    ) -> None:
        self.kiosk_id = kiosk_id
        self.model = model
        self._data_key = data_key
        self._append = append
        self.per_day = per_day
        self.min_gap_s = min_gap_s
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._earlier = earlier

    def _recall(self, now: float) -> None:
        """Once, before the first proposal: the proposals made in the last day, kept by
        the outbox across a restart."""
        if self._earlier is None:
            return
        found = sorted(self._earlier(now - DAY_S), key=lambda p: p[1])  # raises: tried again
        self._earlier = None
        for person_id, at in found:
            self._recent.setdefault(person_id, deque()).append(at)

    def _allowed(self, person_id: str, now: float) -> bool:
        self._recall(now)
        recent = self._recent.setdefault(person_id, deque())
        while recent and now - recent[0] >= DAY_S:
            recent.popleft()
        if recent and now - recent[-1] < self.min_gap_s:
            return False
        return len(recent) < self.per_day

    def propose(
        self,
        rider: Rider | None,
        encodings: tuple[Vector, ...],
        reason: Reason,
        distance: float | None,
        margin: float | None,
    ) -> bool:
        """Append a ``template.proposed`` event for ``rider``; whether one was appended."""
        if rider is None or rider.lookalike or not encodings or distance is None:
            return False
        key = self._data_key()
        if key is None:
            return False
        now = self._clock()
        if not self._allowed(rider.person_id, now):
            return False
        key_id, material = key
        sealed = seal_template(material, key_id, rider.person_id, self.kiosk_id, fuse(encodings))
        appended = self._append(
            "template.proposed",
            person_id=rider.person_id,
            model=self.model,
            key_id=key_id,
            sealed=sealed,
            reason=reason,
            distance=round(float(distance), 4),
            margin=None if margin is None else round(float(margin), 4),
        )
        if appended is None:  # dropped: no room for telemetry
            return False
        self._recent[rider.person_id].append(now)
        log.info("template.proposed", person_id=rider.person_id, reason=reason)
        return True

    def after_decision(
        self, rider: Rider | None, record: DecisionRecord, encodings: tuple[Vector, ...]
    ) -> bool:
        """A face decided automatically: a proposal when the decision was ``confident``."""
        if not confident(record):
            return False
        return self.propose(rider, encodings, "confident_match", record.distance, record.margin)
