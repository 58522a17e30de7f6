"""Eligibility (``edge.cabinet.rentals.refusal``) in rental and boarding mode, with plain values;
closing the rentals the cloud confirms closed (``Ledger.close_confirmed``)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from cloud_sync.outbox import Outbox
from cloud_sync.roster_wire import Entitlements
from edge.cabinet.rentals import Ledger, refusal

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


def _ledger(tmp_path: Path) -> tuple[Ledger, Outbox]:
    outbox = Outbox(tmp_path / "outbox.sqlite", "kiosk-a")
    return Ledger(outbox), outbox


def test_close_confirmed_closes_only_open_rentals_and_records_nothing(tmp_path: Path) -> None:
    ledger, outbox = _ledger(tmp_path)
    for n, rental in enumerate(("r-open", "r-open-2", "r-ejecting", "r-failed", "r-closed")):
        ledger.begin(rental, "p1", n + 1, f"pb-{n}")
    ledger.started("r-open", "pb-0")
    ledger.started("r-open-2", "pb-1")
    ledger.failed("r-failed", "jammed")
    ledger.started("r-closed", "pb-4")
    ledger.returned(5, "pb-4", 80)
    events = outbox.count()
    assert ledger.open_count("p1") == 3  # two open and one still ejecting

    closed = ledger.close_confirmed(["r-open", "r-ejecting", "r-failed", "r-closed", "r-unknown"])

    assert closed == 1
    states = dict(outbox.connection.execute("SELECT rental_id, state FROM rentals").fetchall())
    assert states == {
        "r-open": "closed",
        "r-open-2": "open",
        "r-ejecting": "ejecting",
        "r-failed": "failed",
        "r-closed": "closed",
    }
    assert ledger.open_count("p1") == 2
    assert outbox.count() == events, "the cloud already knows: no event is recorded"
    assert ledger.close_confirmed(["r-open"]) == 0  # sent again: nothing changes
    assert ledger.close_confirmed([]) == 0


def test_close_confirmed_takes_more_ids_than_one_statement_binds(tmp_path: Path) -> None:
    ledger, _ = _ledger(tmp_path)
    ledger.begin("r-1", "p1", 1, "pb-1")
    ledger.started("r-1", "pb-1")
    ids = [f"r-x{i}" for i in range(1200)] + ["r-1"]
    assert ledger.close_confirmed(ids) == 1
    assert ledger.open_count("p1") == 0
