"""The claim step's runtime side: the held face, the check off the flow's thread, the lockout.

The vision thread hands over a ``ClaimNeeded`` (the face's encodings, in memory only; the
vision thread keeps adding the face's frames to it while the rider types)
as ``NeedsClaim``; ``ClaimStep.ask`` holds it and tells the flow how many tries the face
has left (``flow.ClaimAsked``). When the flow asks to verify a typed code
(``flow.VerifyClaim``), ``ClaimStep.verify`` runs ``check_claim`` on its own short-lived
thread (up to 8 scrypt checks of ~40 ms each) and posts ``ClaimVerified``; the runtime
turns it into ``flow.ClaimChecked`` with the rider's eligibility. Wrong tries count against
the typed code (``lock_key``) and the face's track (in memory, ``ClaimLockout``), and
against every rider the face could be (``candidates``) and the kiosk (``ClaimTries``, on
disk, so neither a new track nor a restart starts them again). A locked code, track,
nearest rider or kiosk refuses the next try without computing a hash; a locked rider
further from the face is left out of the check. The held encodings are dropped as soon as
the flow leaves the claim step. Neither the code nor the encodings are ever logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from cloud_sync.claim_code import ClaimFormatError
from edge import flow as f
from edge.runtime.claim_tries import FILENAME, KIOSK, ClaimTries, ClaimTriesError, rider
from edge.vault.values import Rider
from edge.vision.claim import (
    CLAIM_LOCKED,
    ClaimLockout,
    VerifyPolicy,
    candidates,
    check_claim,
    lock_key,
)
from edge.vision.consensus import fuse
from edge.vision.live import ClaimNeeded
from edge.vision.matcher import Gallery, Vector

log = structlog.get_logger("edge.claim")

NO_FACE_HELD = "claim expired"  # the face left before the code was checked


@dataclass(frozen=True)
class NeedsClaim:
    """The vision thread's ``claim required`` decision, with the face held for the check."""

    at: float
    claim: ClaimNeeded


@dataclass(frozen=True)
class ClaimVerified:
    """The check's outcome, posted from the check's thread to the flow's queue."""

    at: float
    person_id: str | None
    reason: str
    tries_left: int
    distance: float | None = None
    #: the verified face's encodings (in memory only), for a learned template
    encodings: tuple[Vector, ...] = field(default=(), repr=False)


def _track_key(claim: ClaimNeeded) -> str:
    return f"track:{claim.track}"


def open_tries(state_dir: Path | None, lockout: ClaimLockout) -> ClaimTries:
    """The wrong tries kept for ``lockout``'s rider and kiosk limits: ``claims.sqlite`` in
    ``state_dir``, or in memory when ``None``."""
    keep_s = max(lockout.rider.window_s, lockout.kiosk.window_s)
    return ClaimTries(":memory:" if state_dir is None else state_dir / FILENAME, keep_s)


@dataclass(frozen=True)
class _Standing:
    """Where the face's candidate riders and the kiosk stand against their limits."""

    candidates: list[str]
    locked: bool  # the kiosk or the nearest candidate
    others_locked: frozenset[str]  # candidates further away, left out of the check
    left: int


class ClaimStep:
    """Holds one face for the claim step and checks typed codes against it."""

    def __init__(
        self,
        policy: VerifyPolicy,
        lockout: ClaimLockout,
        roster: Callable[[], tuple[Gallery, Mapping[str, str | None]]],
        post: Callable[[ClaimVerified], None],
        clock: Callable[[], float],
        tries: ClaimTries | None = None,
    ) -> None:
        self.policy = policy
        self.lockout = lockout
        self.tries = tries if tries is not None else open_tries(None, lockout)
        self._roster = roster
        self._post = post
        self._clock = clock
        self._lock = threading.Lock()
        self._held: ClaimNeeded | None = None

    @property
    def holding(self) -> bool:
        return self._held is not None

    @property
    def held_frames(self) -> int:
        """How many frames of the held face the check would fuse now (a count only)."""
        with self._lock:
            return 0 if self._held is None else len(self._held.frames())

    def ask(self, needs: NeedsClaim) -> f.ClaimAsked:
        """Hold the face; the flow's input asking the rider for the claim."""
        with self._lock:
            self._held = needs.claim
            tries = self.lockout.tries_left(_track_key(needs.claim), self._clock())
        gallery, _ = self._roster()
        try:
            standing = self._standing(candidates(gallery, fuse(needs.claim.frames()), self.policy))
        except ClaimTriesError as exc:  # no count, no check: the claim step stays shut
            log.error("claim.tries_unreadable", error=str(exc))
            return f.ClaimAsked(needs.at, 0)
        return f.ClaimAsked(needs.at, min(tries, standing.left))

    def forget(self) -> None:
        """Drop the held face (the flow left the claim step)."""
        with self._lock:
            self._held = None

    def verify(self, code: str) -> None:
        """Check ``code`` against the held face on a thread of its own; posts the outcome."""
        with self._lock:
            held = self._held
        threading.Thread(target=self._check, args=(held, code), name="claim", daemon=True).start()

    def check(self, held: ClaimNeeded | None, code: str) -> ClaimVerified:
        """The check itself (blocking): locks first, then ``check_claim``, then the lockout."""
        now = self._clock()
        if held is None:
            return ClaimVerified(now, None, NO_FACE_HELD, 0)
        track = _track_key(held)
        try:
            code_key = lock_key(code)
        except ClaimFormatError:
            return ClaimVerified(now, None, "claim not recognised", self._left(track, None, now))
        with self._lock:
            if self.lockout.is_locked(track, now) or self.lockout.is_locked(code_key, now):
                return ClaimVerified(now, None, CLAIM_LOCKED, 0)
        gallery, claims = self._roster()
        frames = held.frames()
        probe = fuse(frames)
        standing = self._standing(candidates(gallery, probe, self.policy))
        if standing.locked:
            log.info("claim.checked", accepted=False, reason=CLAIM_LOCKED, tries_left=0)
            return ClaimVerified(now, None, CLAIM_LOCKED, 0)
        counted = [rider(c) for c in standing.candidates if c not in standing.others_locked]
        rows = self.tries.add([*counted, KIOSK], self.tries.now())  # before the check
        result = check_claim(
            gallery, probe, code, claims, self.policy, locked=standing.others_locked
        )
        if not result.wrong_try:
            self.tries.take_back(rows)
        now = self._clock()
        with self._lock:
            if result.accepted:
                self.lockout.succeeded(track, now)
                self.lockout.succeeded(code_key, now)
            elif result.wrong_try:
                locked = self.lockout.failed(track, now)
                locked = self.lockout.failed(code_key, now) or locked
                if locked:
                    return ClaimVerified(now, None, CLAIM_LOCKED, 0)
            left = self._left(track, code_key, now)
        if result.wrong_try:
            after = self._standing(standing.candidates)
            if after.locked:
                return ClaimVerified(now, None, CLAIM_LOCKED, 0)
            left = min(left, after.left)
        log.info(
            "claim.checked",
            accepted=result.accepted,
            reason=result.reason,
            holders=result.holders,
            frames=len(frames),
            distance=None if result.distance is None else round(result.distance, 4),
            tries_left=left,
        )
        if not result.accepted:
            return ClaimVerified(now, None, result.reason, left)
        return ClaimVerified(now, result.person_id, result.reason, left, result.distance, frames)

    def _standing(self, riders: list[str]) -> _Standing:
        """The kept wrong tries of ``riders`` (nearest first) and of the kiosk, judged."""
        times = self.tries.times([*(rider(c) for c in riders), KIOSK])
        now = self.tries.now()
        limit = self.lockout.rider
        kiosk_left = self.lockout.kiosk.left(times[KIOSK], now)
        locked = {c for c in riders if limit.locked_until(times[rider(c)], now) is not None}
        nearest = riders[0] if riders else None
        left = (
            kiosk_left
            if nearest is None
            else min(kiosk_left, limit.left(times[rider(nearest)], now))
        )
        return _Standing(riders, kiosk_left == 0 or nearest in locked, frozenset(locked), left)

    def _left(self, track: str, code_key: str | None, now: float) -> int:
        left = self.lockout.tries_left(track, now)
        return left if code_key is None else min(left, self.lockout.tries_left(code_key, now))

    def _check(self, held: ClaimNeeded | None, code: str) -> None:
        try:
            outcome = self.check(held, code)
        except Exception as exc:  # the flow must hear back, whatever happened
            log.error("claim.failed", error=type(exc).__name__)
            outcome = ClaimVerified(self._clock(), None, "claim failed", 0)
        self._post(outcome)


def claims_of(riders: Mapping[str, Rider]) -> dict[str, str | None]:
    """The riders' claim hashes by person id."""
    return {person: rider.claim_hash for person, rider in riders.items()}


def checked(
    verified: ClaimVerified,
    eligible: Callable[[float, str], f.Recognised | f.NotRecognised],
) -> f.ClaimChecked:
    """The flow's ``ClaimChecked``: an accepted claim with the rider's eligibility and slot
    worked out as for a face recognised on its own (``eligible``)."""
    at, person = verified.at, verified.person_id
    if person is None:
        return f.ClaimChecked(at, None, verified.reason, verified.tries_left)
    known = eligible(at, person)
    if isinstance(known, f.NotRecognised):  # deleted from the roster meanwhile
        return f.ClaimChecked(at, None, known.reason, verified.tries_left)
    return f.ClaimChecked(
        at,
        person,
        verified.reason,
        verified.tries_left,
        known.first_name,
        known.refusal,
        known.slot,
    )


def default_policy() -> VerifyPolicy:
    """The shipped operating points' verification policy (``vision.*`` defaults)."""
    from edge.config import VisionSection
    from edge.vision.setup import claim_policy

    return claim_policy(VisionSection())
