"""The claim step: a short code the rider chose, and the 1:1 or 1:few check it makes possible.

When the automatic 1:N decision says ``claim required``, the rider types a short claim (4
to 6 digits: a code they chose in the app, or the last digits of their phone). The roster
never holds the code, only ``hash_claim(code)``: scrypt with a per-rider random salt, its
parameters written into the string so they can be raised later, sealed inside the
encrypted rider record (``RiderRecord.claim_hash``).

Checking a claim (``check_claim``) turns the search into a verification:

1. the riders near the face (the ``SHORTLIST`` nearest people under the verification
   policy's ``max_distance``) are the only candidates: a rider far from the face could
   never pass the strict threshold, and the salted hashes of the others are not worth
   computing (one scrypt per rider, about 45 ms on the development machine);
2. of those, the riders whose hash matches the typed code are the holders;
3. ``VerifyPolicy`` accepts the nearest holder when their cohort-normalised distance is
   under the threshold for that many holders (stricter for 1:few than 1:1, so that a
   claim shared by several lookalikes does not multiply the false accepts) and no other
   holder passes too.

``ClaimLockout`` is the rule "three wrong tries lock that claim (or that face track) at
this kiosk for a while", and carries the limits a brute-forcer cannot walk around by
stepping out of view or restarting the kiosk (``TryLimit``): wrong tries per candidate
rider (``candidates``: every rider the face could be, so every rider a right code could
open) and per kiosk, counted by the runtime in the state folder. Pure classes, the time
passed in. Pure code apart from the KDF; no code, hash or template is ever logged or
printed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud_sync.claim_code import (
    ClaimHashError,
    claim_matches,
    normalise_claim,
)
from edge.vision.matcher import Gallery, Vector
from edge.vision.policy import (
    AMBIGUOUS,
    EMPTY_ROSTER,
    MATCH,
    Candidates,
    Decision,
    Normaliser,
    normaliser,
)

NO_MATCH = "no match"  # the face is not close enough to the claimed rider
NOT_ENROLLED = "not enrolled"  # no such rider (``kiosk faces verify``)
CLAIM_NOT_RECOGNISED = "claim not recognised"  # no rider near this face holds this code
NO_CLAIM_SET = "no claim set"  # the rider nearest the face has not set a claim up
CLAIM_LOCKED = "claim locked"  # too many wrong tries at this kiosk
CLAIM_SHARED = "claim shared"  # more riders near this face hold this code than allowed

SHORTLIST = 8


# -- the 1:1 / 1:few decision -------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyPoint:
    """With up to ``holders`` riders holding the claim near the face: the threshold."""

    holders: int
    threshold: float


@dataclass(frozen=True)
class VerifyPolicy:
    """The strict verification of a face against the few riders it claims to be."""

    points: tuple[VerifyPoint, ...]
    normaliser: Normaliser
    max_distance: float

    def __post_init__(self) -> None:
        counts = [p.holders for p in self.points]
        if not counts or counts != sorted(set(counts)) or counts[0] != 1:
            raise ValueError(f"verify points must start at 1 holder and rise, got {counts}")
        if not 0.0 < self.max_distance < 2.0:
            raise ValueError(f"max_distance must be in (0, 2), got {self.max_distance}")

    @property
    def threshold(self) -> float:
        return self.max_distance

    @property
    def margin(self) -> float:
        return 0.0

    def score(self, candidates: Candidates, index: int = 0) -> float | None:
        candidate = candidates.nearest[index]
        return self.normaliser.distance(
            candidate.distance, candidate.cohort, candidates.roster_people
        )

    def decide(self, candidates: Candidates) -> Decision:
        """Accept the nearest of ``candidates`` (the holders only) when certain; else refuse."""
        best = candidates.best
        if best is None:
            return Decision(
                None, None, None, EMPTY_ROSTER if not candidates.roster_people else NOT_ENROLLED
            )
        gap = candidates.margin
        point = next((p for p in self.points if len(candidates.nearest) <= p.holders), None)
        if point is None:
            return Decision(None, best.distance, gap, CLAIM_SHARED)
        scores = [self.score(candidates, i) for i in range(len(candidates.nearest))]
        passing = [
            s is not None and s < point.threshold and c.distance < self.max_distance
            for s, c in zip(scores, candidates.nearest, strict=True)
        ]
        if not passing[0]:
            return Decision(None, best.distance, gap, NO_MATCH, scores[0])
        if any(passing[1:]):
            return Decision(None, best.distance, gap, AMBIGUOUS, scores[0])
        return Decision(best.person_id, best.distance, gap, MATCH, scores[0])


def verify_policy(points: dict[str, Any]) -> VerifyPolicy:
    """The policy described by the ``verify`` section of an operating-points file."""
    section = points["verify"]
    return VerifyPolicy(
        tuple(VerifyPoint(int(p["holders"]), float(p["threshold"])) for p in section["points"]),
        normaliser(section),
        float(section["max_distance"]),
    )


# -- checking a typed claim ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimResult:
    """What a typed claim gave: the rider (or ``None``), why, and how many riders held it."""

    person_id: str | None
    reason: str
    distance: float | None
    holders: int

    @property
    def accepted(self) -> bool:
        return self.person_id is not None

    @property
    def wrong_try(self) -> bool:
        """Counts towards the lockout: a code or a face that did not verify."""
        return self.reason in (CLAIM_NOT_RECOGNISED, NO_MATCH, AMBIGUOUS, CLAIM_SHARED)


def candidates(
    gallery: Gallery, probe: Vector, policy: VerifyPolicy, shortlist: int = SHORTLIST
) -> list[str]:
    """The riders ``probe`` could be, nearest first: the ``shortlist`` nearest people under
    the policy's ``max_distance``. Only they can hold a code that opens this face."""
    return _close(gallery.search(probe, k=shortlist), policy)


def _close(near: Candidates, policy: VerifyPolicy) -> list[str]:
    return [c.person_id for c in near.nearest if c.distance < policy.max_distance]


def check_claim(
    gallery: Gallery,
    probe: Vector,
    code: str,
    claims: Mapping[str, str | None],
    policy: VerifyPolicy,
    shortlist: int = SHORTLIST,
    locked: frozenset[str] = frozenset(),
) -> ClaimResult:
    """Verify ``probe`` against the riders near it who hold ``code`` (``claims``: their hashes).

    ``ClaimFormatError`` when ``code`` is not 4-6 digits. A stored hash that cannot be read
    counts as no claim set for that rider. The riders in ``locked`` are never holders (their
    hashes are not computed): a locked rider's right code opens nothing.
    """
    code = normalise_claim(code)
    near = gallery.search(probe, k=shortlist)
    if near.best is None:
        return ClaimResult(None, EMPTY_ROSTER, None, 0)
    close = _close(near, policy)
    if not close:
        return ClaimResult(None, NO_MATCH, near.best.distance, 0)
    holders = []
    for person in close:
        if person in locked:
            continue
        stored = claims.get(person)
        try:
            if stored and claim_matches(code, stored):
                holders.append(person)
        except ClaimHashError:
            continue
    if not holders:
        reason = CLAIM_NOT_RECOGNISED if claims.get(close[0]) else NO_CLAIM_SET
        return ClaimResult(None, reason, near.best.distance, 0)
    decision = policy.decide(gallery.verify(probe, holders))
    return ClaimResult(decision.person_id, decision.reason, decision.distance, len(holders))


# -- the lockout ------------------------------------------------------------------------------

_LOCK_KEY = os.urandom(32)


def lock_key(code: str) -> str:
    """A key for ``ClaimLockout`` standing for a typed claim (the code is not kept in clear)."""
    digest = hashlib.blake2b(normalise_claim(code).encode("ascii"), key=_LOCK_KEY, digest_size=16)
    return "claim:" + digest.hexdigest()


@dataclass(frozen=True)
class TryLimit:
    """At most ``tries`` wrong tries within any ``window_s``: once they are reached, the
    subject (a rider, the kiosk) is locked until the oldest of them is ``window_s`` old.

    Pure: it reads the times of the wrong tries (wall-clock seconds) it is given.
    """

    tries: int
    window_s: float

    def __post_init__(self) -> None:
        if self.tries < 1 or self.window_s <= 0:
            raise ValueError("a try limit needs at least 1 try and a positive window")

    def counted(self, times: Sequence[float], now: float) -> list[float]:
        """The tries inside the window ending at ``now``, oldest first."""
        return sorted(t for t in times if now - self.window_s < t)

    def left(self, times: Sequence[float], now: float) -> int:
        return max(0, self.tries - len(self.counted(times, now)))

    def locked_until(self, times: Sequence[float], now: float) -> float | None:
        """When the lock ends, or ``None`` when not locked."""
        counted = self.counted(times, now)
        if len(counted) < self.tries:
            return None
        return counted[-self.tries] + self.window_s


#: per rider: a typo or two at each of a few visits a day never meets it; a guesser of a
#: 4-digit code gets 6 of 10,000 a day (half the codes in about 2 years and 3 months)
RIDER_LIMIT = TryLimit(6, 86_400.0)
#: per kiosk: far more wrong codes than a busy kiosk's riders type in an hour
KIOSK_LIMIT = TryLimit(30, 3_600.0)


@dataclass
class _Tries:
    failures: list[float] = field(default_factory=list)
    locked_until: float | None = None


class ClaimLockout:
    """``max_tries`` wrong tries within ``window_s`` lock a key for ``lock_s``.

    A key is whatever the caller locks: a typed claim (``lock_key``), a face track id, or
    both, each locked on its own. Pure: every method takes ``now`` (monotonic seconds).
    These keys change with each visit and code, and live in memory; ``rider`` and ``kiosk``
    are the limits that do not (per candidate rider, per kiosk), applied by the caller to
    the wrong tries it keeps on disk (``edge.runtime.claim_tries``).
    """

    def __init__(
        self,
        max_tries: int = 3,
        lock_s: float = 300.0,
        window_s: float = 600.0,
        rider: TryLimit = RIDER_LIMIT,
        kiosk: TryLimit = KIOSK_LIMIT,
    ) -> None:
        if max_tries < 1 or lock_s <= 0 or window_s <= 0:
            raise ValueError("max_tries must be at least 1; lock_s and window_s positive")
        self.rider = rider
        self.kiosk = kiosk
        self.max_tries = max_tries
        self.lock_s = lock_s
        self.window_s = window_s
        self._keys: dict[str, _Tries] = {}

    def locked_until(self, key: str, now: float) -> float | None:
        """When the lock on ``key`` ends, or ``None`` when it is not locked."""
        tries = self._keys.get(key)
        if tries is None or tries.locked_until is None:
            return None
        if now >= tries.locked_until:
            del self._keys[key]
            return None
        return tries.locked_until

    def is_locked(self, key: str, now: float) -> bool:
        return self.locked_until(key, now) is not None

    def tries_left(self, key: str, now: float) -> int:
        if self.is_locked(key, now):
            return 0
        tries = self._keys.get(key)
        recent = [t for t in tries.failures if now - t < self.window_s] if tries else []
        return self.max_tries - len(recent)

    def failed(self, key: str, now: float) -> bool:
        """Record a wrong try; ``True`` when it locks ``key`` (or it was locked already)."""
        if self.is_locked(key, now):
            return True
        self._prune(now)
        tries = self._keys.setdefault(key, _Tries())
        tries.failures = [t for t in tries.failures if now - t < self.window_s] + [now]
        if len(tries.failures) >= self.max_tries:
            tries.locked_until = now + self.lock_s
            tries.failures = []
            return True
        return False

    def succeeded(self, key: str, now: float) -> None:
        """A verified claim clears the wrong tries (not a lock that is running)."""
        if not self.is_locked(key, now):
            self._keys.pop(key, None)

    def _prune(self, now: float) -> None:
        for key in [
            k
            for k, t in self._keys.items()
            if (t.locked_until is None or now >= t.locked_until)
            and all(now - f >= self.window_s for f in t.failures)
        ]:
            del self._keys[key]
