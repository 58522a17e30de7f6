"""Choosing the next batch to send: bounded by count and bytes, live events first.

Pure: the outbox hands over two views of its pending events, the daemon sends whatever
``plan_batch`` picks. Live events (appended within the live window) get up to
``live_share`` of the batch, so a rental that happened a second ago reaches the cloud in
the next request even behind a week of backlog; the rest of the batch drains the backlog
oldest first, so the backlog never starves either. The server orders by ``seq``, so this
reordering is invisible to its consumers.

When a batch fails in a way its content may cause (a 5xx, a timeout, a reset), the daemon
narrows it (``halves``) to find the events that fail alone, and ``FailureStreak`` tells it
when failures in a row mean the cloud is down rather than an event is bad.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Candidate:
    """A pending event as the planner sees it."""

    seq: int
    size: int


@dataclass(frozen=True)
class BatchLimits:
    max_events: int
    max_bytes: int
    live_share: float = 0.5

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1 or not 0 < self.live_share <= 1:
            raise ValueError(f"invalid batch limits {self}")


def plan_batch(
    live: Sequence[Candidate], backlog: Sequence[Candidate], limits: BatchLimits
) -> list[int]:
    """The ``seq`` numbers of the next batch, ascending.

    ``live``: pending events inside the live window, oldest first. ``backlog``: the oldest
    pending events, oldest first (it may overlap ``live`` when the backlog is short). A
    batch always holds at least one event, even one larger than ``max_bytes``.
    """
    chosen: dict[int, int] = {}
    total = 0

    def fits(candidate: Candidate, max_events: int, max_bytes: float) -> bool:
        if not chosen:
            return True
        return len(chosen) < max_events and total + candidate.size <= max_bytes

    def take(candidates: Sequence[Candidate], max_events: int, max_bytes: float) -> None:
        nonlocal total
        for candidate in candidates:
            if candidate.seq in chosen:
                continue
            if not fits(candidate, max_events, max_bytes):
                break
            chosen[candidate.seq] = candidate.size
            total += candidate.size

    live_events = max(1, int(limits.max_events * limits.live_share))
    take(live, live_events, limits.max_bytes * limits.live_share)
    take(backlog, limits.max_events, limits.max_bytes)
    take(live, limits.max_events, limits.max_bytes)  # room left: more live events
    return sorted(chosen)


def halves(batch: Sequence[T]) -> list[Sequence[T]]:
    """A batch of two or more split in two, in order (the first half the smaller)."""
    if len(batch) < 2:
        raise ValueError("a batch of one cannot be split")
    middle = len(batch) // 2
    return [batch[:middle], batch[middle:]]


Next = Literal["go on", "probe", "stop"]


@dataclass
class FailureStreak:
    """Requests that failed in a row during one pass, and what the daemon does next.

    A failure may be the content's fault (one bad event) or the cloud's (an outage). Only a
    success after it tells them apart, so the daemon goes on narrowing while requests keep
    succeeding now and then. After ``probe_after`` failures in a row it sends a probe (an
    event the cloud already has: the answer "duplicate" changes nothing); without a probe
    to send it tries up to ``stop_after`` requests. A failed probe, or ``stop_after``
    failures, means the cloud is down: the pass stops and no event is blamed.
    """

    probe_after: int = 2
    stop_after: int = 3
    failed: int = 0

    def success(self) -> None:
        self.failed = 0

    def failure(self, can_probe: bool) -> Next:
        self.failed += 1
        if self.failed >= self.probe_after and can_probe:
            return "probe"
        if self.failed >= self.stop_after:
            return "stop"
        return "go on"
