"""The claim step: salted hashes, the 1:1 / 1:few decision, checking a typed claim, lockout."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cloud_sync.claim_code import (
    ClaimFormatError,
    ClaimHashError,
    claim_matches,
    hash_claim,
    normalise_claim,
)
from edge.vision.claim import (
    CLAIM_NOT_RECOGNISED,
    CLAIM_SHARED,
    KIOSK_LIMIT,
    NO_CLAIM_SET,
    NO_MATCH,
    NOT_ENROLLED,
    RIDER_LIMIT,
    ClaimLockout,
    TryLimit,
    VerifyPoint,
    VerifyPolicy,
    check_claim,
    lock_key,
    verify_policy,
)
from edge.vision.matcher import Gallery
from edge.vision.policy import AMBIGUOUS, EMPTY_ROSTER, MATCH, Normaliser, load_operating_points

FAST = 10  # scrypt cost for tests (the kiosk uses 14)


def test_a_claim_is_stored_only_as_a_salted_hash() -> None:
    stored = hash_claim("4821", log2_n=FAST)
    assert "4821" not in stored and stored.startswith("scrypt$ln=10,r=8,p=1$")
    assert claim_matches("4821", stored)
    assert claim_matches(" 48 21 ", stored)  # spaces as typed are ignored
    assert not claim_matches("4822", stored)
    assert hash_claim("4821", log2_n=FAST) != stored  # a fresh salt every time


def test_the_default_cost_is_the_documented_one() -> None:
    started = time.perf_counter()
    stored = hash_claim("123456")
    assert stored.startswith("scrypt$ln=14,r=8,p=1$")
    assert claim_matches("123456", stored)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("typed", ["", "123", "1234567", "12a4", "12-34", "١٢٣٤"])
def test_a_claim_is_four_to_six_digits(typed: str) -> None:
    with pytest.raises(ClaimFormatError, match="4 to 6 digits"):
        normalise_claim(typed)


@pytest.mark.parametrize(
    "stored",
    [
        "plain",
        "md5$ln=10,r=8,p=1$c2FsdHNhbHQ$" + "A" * 43,
        "scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ$" + "A" * 43,  # a gigabyte per check: refused
        "scrypt$ln=10,r=8,p=1$c2FsdA$" + "A" * 43,  # 4-byte salt
        "scrypt$ln=10,r=8$c2FsdHNhbHQ$" + "A" * 43,
    ],
)
def test_a_stored_hash_that_cannot_be_read_is_refused(stored: str) -> None:
    with pytest.raises(ClaimHashError):
        claim_matches("1234", stored)


def face(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(0, 0.09, 128)
    return vector.astype(np.float32)


def near(vector: np.ndarray, distance: float, seed: int = 99) -> np.ndarray:
    step = np.random.default_rng(seed).normal(0, 1, 128)
    return (vector + distance * step / np.linalg.norm(step)).astype(np.float32)


POLICY = VerifyPolicy(
    (VerifyPoint(1, 0.55), VerifyPoint(2, 0.53), VerifyPoint(4, 0.51)),
    Normaliser(0.0, 0.63, 400),
    0.6,
)


def test_verification_against_one_rider() -> None:
    ann = face(1)
    gallery = Gallery([("ann", ann), ("bob", face(2))])
    assert POLICY.decide(gallery.verify(near(ann, 0.40), ["ann"])).reason == MATCH
    refused = POLICY.decide(gallery.verify(near(ann, 0.56), ["ann"]))
    assert (refused.person_id, refused.reason) == (None, NO_MATCH)
    assert POLICY.decide(gallery.verify(ann, ["carol"])).reason == NOT_ENROLLED
    assert POLICY.decide(Gallery([]).verify(ann, ["ann"])).reason == EMPTY_ROSTER


def test_more_holders_need_a_closer_face_and_two_passing_is_ambiguous() -> None:
    ann = face(1)
    gallery = Gallery([("ann", ann), ("twin", near(ann, 0.3, 5)), ("bob", face(2))])
    probe = near(ann, 0.54, 7)
    assert POLICY.decide(gallery.verify(probe, ["ann"])).reason == MATCH  # 1:1 at 0.55
    two = gallery.verify(probe, ["ann", "bob"])
    assert POLICY.decide(two).reason == NO_MATCH  # 1:2 needs under 0.53
    twins = gallery.verify(near(ann, 0.1, 8), ["ann", "twin"])
    assert max(c.distance for c in twins.nearest) < 0.51
    assert POLICY.decide(twins).reason == AMBIGUOUS  # both pass: never a guess
    many = Gallery([(f"r{i}", near(ann, 0.2, i)) for i in range(6)])
    assert POLICY.decide(many.verify(ann, [f"r{i}" for i in range(6)])).reason == CLAIM_SHARED


def test_check_claim_narrows_the_search_to_riders_near_the_face() -> None:
    ann, bob = face(1), face(2)
    gallery = Gallery([("ann", ann), ("bob", bob), ("cy", face(3))])
    claims = {
        "ann": hash_claim("1111", log2_n=FAST),
        "bob": hash_claim("1111", log2_n=FAST),  # a shared claim, far from ann's face
        "cy": None,
    }
    probe = near(ann, 0.35)
    got = check_claim(gallery, probe, "1111", claims, POLICY)
    assert (got.person_id, got.reason, got.holders) == ("ann", MATCH, 1)
    wrong = check_claim(gallery, probe, "2222", claims, POLICY)
    assert (wrong.person_id, wrong.reason, wrong.wrong_try) == (None, CLAIM_NOT_RECOGNISED, True)
    # bob's own code does not make ann's face bob's
    assert check_claim(gallery, probe, "1111", {"bob": claims["bob"]}, POLICY).reason == (
        NO_CLAIM_SET
    )
    unset = check_claim(gallery, near(face(3), 0.3), "1111", claims, POLICY)
    assert (unset.reason, unset.wrong_try) == (NO_CLAIM_SET, False)
    stranger = check_claim(gallery, face(50), "1111", claims, POLICY)
    assert (stranger.person_id, stranger.reason) == (None, NO_MATCH)
    assert check_claim(Gallery([]), probe, "1111", claims, POLICY).reason == EMPTY_ROSTER
    with pytest.raises(ClaimFormatError):
        check_claim(gallery, probe, "11", claims, POLICY)


def test_a_damaged_hash_counts_as_no_claim_for_that_rider() -> None:
    ann = face(1)
    gallery = Gallery([("ann", ann), ("bob", face(2))])
    got = check_claim(gallery, near(ann, 0.3), "1111", {"ann": "scrypt$nonsense"}, POLICY)
    assert (got.person_id, got.reason) == (None, CLAIM_NOT_RECOGNISED)


def test_the_shipped_verify_points_are_strict() -> None:
    policy = verify_policy(load_operating_points())
    thresholds = [p.threshold for p in policy.points]
    assert policy.points[0].holders == 1 and thresholds == sorted(thresholds, reverse=True)
    assert 0.45 < thresholds[0] < 0.6 and policy.max_distance < 0.65


def test_three_wrong_tries_lock_a_claim_for_a_while() -> None:
    lockout = ClaimLockout(max_tries=3, lock_s=300.0, window_s=600.0)
    key = lock_key("4821")
    assert lockout.tries_left(key, 0.0) == 3
    assert not lockout.failed(key, 10.0)
    assert not lockout.failed(key, 20.0)
    assert lockout.tries_left(key, 21.0) == 1
    assert lockout.failed(key, 30.0)  # the third wrong try locks
    assert lockout.is_locked(key, 31.0) and lockout.locked_until(key, 31.0) == 330.0
    assert lockout.failed(key, 100.0)  # still locked; the lock is not extended
    lockout.succeeded(key, 200.0)  # a success cannot lift a running lock
    assert lockout.is_locked(key, 329.9)
    assert not lockout.is_locked(key, 330.0) and lockout.tries_left(key, 330.0) == 3
    other = lock_key("1111")
    assert other != key and "1111" not in other and not lockout.is_locked(other, 31.0)


def test_old_wrong_tries_are_forgotten_and_a_success_clears_them() -> None:
    lockout = ClaimLockout(max_tries=3, lock_s=60.0, window_s=100.0)
    lockout.failed("track:7", 0.0)
    lockout.failed("track:7", 50.0)
    assert not lockout.failed("track:7", 120.0)  # the first one is outside the window
    lockout.succeeded("track:7", 121.0)
    assert lockout.tries_left("track:7", 122.0) == 3
    with pytest.raises(ValueError):
        ClaimLockout(max_tries=0)


def test_a_try_limit_counts_any_window_and_ends_with_it() -> None:
    limit = TryLimit(3, 100.0)
    assert limit.left([], 0.0) == 3 and limit.locked_until([], 0.0) is None
    times = [10.0, 40.0, 70.0]
    assert limit.left(times, 70.0) == 0
    assert limit.locked_until(times, 70.0) == 110.0  # the oldest of the three, a window on
    assert limit.locked_until(times, 109.9) == 110.0
    assert limit.locked_until(times, 110.0) is None and limit.left(times, 110.0) == 1
    with pytest.raises(ValueError):
        TryLimit(0, 100.0)


def test_the_shipped_limits_leave_room_for_typos_and_are_settings() -> None:
    from pydantic import ValidationError

    from edge.config import VisionSection
    from edge.vision.setup import claim_lockout

    lockout = claim_lockout(VisionSection())
    assert (lockout.rider, lockout.kiosk) == (RIDER_LIMIT, KIOSK_LIMIT)
    assert lockout.max_tries < RIDER_LIMIT.tries < KIOSK_LIMIT.tries
    with pytest.raises(ValidationError, match="claim_rider_tries"):
        VisionSection(claim_tries=5, claim_rider_tries=4)
