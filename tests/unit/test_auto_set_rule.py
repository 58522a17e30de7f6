"""The rule that picks each kiosk's automatic set (``cloud_sync.auto_set_rule``): the cloud
runs it on its rentals and the fleet evaluation on a simulated history."""

from __future__ import annotations

from cloud_sync.auto_set_rule import REGULAR_VISITS, Seen, sets

DAY = "2026-12-0{}T10:00:00Z"


def seen(**kiosks: tuple[int, int]) -> dict[str, Seen]:
    """kiosk=(visits, day of the latest)."""
    return {kiosk: Seen(count, DAY.format(day)) for kiosk, (count, day) in kiosks.items()}


ALONE = {"a": set[str](), "b": set[str](), "c": set[str]()}


def test_a_rider_belongs_to_the_kiosk_they_use_most_not_to_one_they_passed_once() -> None:
    history = {
        "commuter": seen(a=(6, 3), b=(1, 5)),  # one trip's return at b
        "tied": seen(a=(2, 1), b=(2, 2)),  # both are usual
        "visitor": seen(c=(4, 4), a=(1, 6)),
    }
    chosen = sets(ALONE, {}, history, size=10)
    assert chosen == {"a": ["commuter", "tied"], "b": ["tied"], "c": ["visitor"]}


def test_homes_come_first_then_more_visits_then_the_latest_and_the_size_holds() -> None:
    history = {
        "often": seen(a=(8, 1)),
        "recent": seen(a=(2, 9)),
        "older": seen(a=(2, 4)),
        "regular": seen(b=(9, 2), a=(REGULAR_VISITS, 3)),  # usual at b, a regular of a
        "declared": seen(b=(5, 5)),
    }
    homes = {"a": ["declared"]}
    assert sets(ALONE, homes, history, size=3)["a"] == ["declared", "often", "recent"]
    assert sets(ALONE, homes, history, size=4)["a"] == ["declared", "often", "older", "recent"]
    assert sets(ALONE, homes, history, size=5)["a"] == sorted(history)  # the regular last
    assert sets(ALONE, homes, history, size=0)["a"] == []


def test_a_site_shares_its_usual_riders_after_the_kiosk_s_own() -> None:
    site = {"a": {"b"}, "b": {"a"}, "c": set[str]()}
    history = {"next-door": seen(b=(5, 1)), "own": seen(a=(1, 1)), "far": seen(c=(5, 1))}
    chosen = sets(site, {}, history, size=10)
    assert chosen["a"] == ["next-door", "own"] and chosen["c"] == ["far"]
    assert sets(site, {}, history, size=1)["a"] == ["own"]
