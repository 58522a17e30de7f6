"""Multi-frame fusion and consensus, and the record every live decision leaves.

Pure code. ``fuse`` averages the encodings of the last few frames of one tracked face:
frame-to-frame noise in the alignment and the picture averages out, so a rider whose
single frames sit just above the threshold is recognised from the mean (``kiosk faces
eval --frames`` measures it). Only frames close to the newest one take part, so a track
that changed person never blends two faces.

``Consensus`` keeps the last ``n`` single-frame decisions (votes) for the face
in front of the camera and reaches a verdict when one person is accepted in at least ``k``
of them *and no other person is accepted in any of them*; when the last ``n - k + 1``
votes all accept nobody (k of n is out of reach in this window), the verdict is a refusal
with the most common reason. A single frame never decides alone (unless ``k = 1``).

``DecisionRecord`` is what a decision leaves behind for the outbox and the logs: the person
(or none), the distance, margin, threshold and model, how many frames were used, the
liveness outcome and how long it took. It never holds a template or an image.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.vision.policy import MATCH, Decision

CONFLICT = "conflicting matches"
# Two frames of one face closer than this are fused; same-person frame pairs sit far below
# it, and it is under the distance at which two riders count as lookalikes (0.45).
FUSE_SPREAD = 0.4


def fuse(
    encodings: Sequence[npt.NDArray[np.floating[Any]]], spread: float = FUSE_SPREAD
) -> npt.NDArray[np.float64]:
    """The mean of the newest encoding and the earlier ones within ``spread`` of it."""
    if not encodings:
        raise ValueError("fuse needs at least one encoding")
    frames = np.asarray(encodings, dtype=np.float64)
    close = np.linalg.norm(frames - frames[-1], axis=1) <= spread
    return np.asarray(frames[close].mean(axis=0), dtype=np.float64)


class ClaimWindow:
    """The encodings of one face gathered for the claim step, newest last, at most ``size``.

    The live pipeline seeds it with the vote's fusion window when it sends the face to the
    claim step and keeps adding that face's frames while the rider types the code; the
    claim check (another thread) fuses what is there when the code arrives, so the 1:1
    check sees more frames than the vote did. In memory only; ``repr`` shows the count.
    """

    def __init__(self, size: int, first: Iterable[npt.NDArray[np.floating[Any]]] = ()) -> None:
        if size < 1:
            raise ValueError(f"a claim window holds at least 1 frame, got {size}")
        self._frames: deque[npt.NDArray[np.floating[Any]]] = deque(first, maxlen=size)
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        with self._lock:
            return len(self._frames) == self._frames.maxlen

    def add(self, encoding: npt.NDArray[np.floating[Any]]) -> None:
        with self._lock:
            self._frames.append(encoding)

    def frames(self) -> tuple[npt.NDArray[np.floating[Any]], ...]:
        with self._lock:
            return tuple(self._frames)

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def __repr__(self) -> str:
        return f"ClaimWindow(frames={len(self)})"


@dataclass(frozen=True)
class Vote:
    person_id: str | None
    distance: float | None
    margin: float | None
    reason: str

    @classmethod
    def of(cls, decision: Decision) -> Vote:
        return cls(decision.person_id, decision.distance, decision.margin, decision.reason)


@dataclass(frozen=True)
class Verdict:
    """The consensus: a person (``reason == "match"``) or a refusal with its reason."""

    person_id: str | None
    reason: str
    distance: float | None  # the largest distance among the agreeing votes
    margin: float | None  # the smallest margin among the agreeing votes
    frames_used: int


class Consensus:
    """k-of-n agreement over the most recent single-frame decisions."""

    def __init__(self, k: int = 2, n: int = 3) -> None:
        if not 1 <= k <= n:
            raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
        self.k = k
        self.n = n
        self._votes: deque[Vote] = deque(maxlen=n)

    @property
    def votes(self) -> tuple[Vote, ...]:
        return tuple(self._votes)

    def reset(self) -> None:
        self._votes.clear()

    def add(self, vote: Vote) -> Verdict | None:
        """Add one frame's vote; the verdict when one is reached, else ``None``."""
        self._votes.append(vote)
        accepted = [v for v in self._votes if v.person_id is not None]
        people = {v.person_id for v in accepted}
        if len(people) > 1:
            return None  # two people accepted within the window: wait until it clears
        if len(accepted) >= self.k:
            distances = [v.distance for v in accepted if v.distance is not None]
            margins = [v.margin for v in accepted if v.margin is not None]
            return Verdict(
                accepted[0].person_id,
                MATCH,
                max(distances) if distances else None,
                min(margins) if margins else None,
                len(accepted),
            )
        # Refused once the last n - k + 1 votes all refused: k of n is out of reach now.
        streak = self.n - self.k + 1
        recent = list(self._votes)[-streak:]
        if len(recent) == streak and all(v.person_id is None for v in recent):
            reason = Counter(v.reason for v in recent).most_common(1)[0][0]
            distances = [v.distance for v in recent if v.distance is not None]
            return Verdict(None, reason, min(distances) if distances else None, None, streak)
        return None


@dataclass(frozen=True)
class DecisionRecord:
    """One live decision, as logged and sent on: no template, no image."""

    person_id: str | None
    reason: str
    distance: float | None
    margin: float | None
    threshold: float
    required_margin: float
    model_version: str
    frames_used: int
    frames_seen: int
    liveness: str  # "passed", "failed", "off"
    roster_people: int
    started_at: float
    decided_at: float

    @property
    def accepted(self) -> bool:
        return self.person_id is not None

    @property
    def latency_s(self) -> float:
        return self.decided_at - self.started_at

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("distance", "margin"):
            if data[key] is not None:
                data[key] = round(data[key], 4)
        data["latency_ms"] = round(self.latency_s * 1000, 1)
        del data["started_at"], data["decided_at"]
        return data
