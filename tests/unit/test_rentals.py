"""Eligibility (``edge.rentals.refusal``) in rental and boarding mode, with plain values."""

from __future__ import annotations

from datetime import date

import pytest

from cloud_sync.roster_wire import Entitlements
from edge.rentals import refusal

TODAY = date(2026, 3, 14)


def test_a_rider_in_good_standing_may_rent() -> None:
    assert refusal(Entitlements(), 0, TODAY) is None


@pytest.mark.parametrize(("limit", "open_rentals", "why"), [(1, 1, "open_rental"), (2, 1, None)])
def test_the_open_rental_limit(limit: int, open_rentals: int, why: str | None) -> None:
    assert refusal(Entitlements(max_open_rentals=limit), open_rentals, TODAY) == why


def test_a_blocked_rider_may_not_rent() -> None:
    assert refusal(Entitlements(may_rent=False), 0, TODAY) == "blocked"


@pytest.mark.parametrize(
    ("valid_until", "why"),
    [(date(2026, 3, 13), "expired"), (TODAY, None), (date(2027, 1, 1), None)],
)
def test_a_membership_expires_after_its_last_day(valid_until: date, why: str | None) -> None:
    assert refusal(Entitlements(valid_until=valid_until), 0, TODAY) == why
    assert refusal(Entitlements(valid_until=valid_until), 0, TODAY, mode="boarding") == why


def test_blocked_is_said_before_expired_and_open_rentals() -> None:
    rider = Entitlements(may_rent=False, valid_until=date(2020, 1, 1))
    assert refusal(rider, 5, TODAY) == "blocked"


def test_boarding_ignores_open_rentals_and_the_rental_block() -> None:
    rider = Entitlements(may_rent=False, max_open_rentals=1)
    assert refusal(rider, 3, TODAY) == "blocked"
    assert refusal(rider, 3, TODAY, mode="boarding") is None


def test_boarding_honours_boarding_allowed() -> None:
    rider = Entitlements(boarding_allowed=False)
    assert refusal(rider, 0, TODAY, mode="boarding") == "not_allowed"
    assert refusal(rider, 0, TODAY) is None  # renting is another matter
