"""The fleet evaluation's simulated world: the fleets, each rider's home kiosk and trips,
and the automatic sets the cloud would choose from that history (``kiosk faces eval
--protocol fleet``; ``edge.vision.fleet_eval`` scores visits against it).

Per seed: each rider has a home kiosk (uniform); a share of riders declared it
(``declared_homes``: operator or app); over ``HISTORY_DAYS`` each rider made a Poisson
number of trips (mean ``TRIPS``), each started and returned at the home kiosk with
probability ``home_share`` and at another kiosk otherwise. Each kiosk's set is then picked
by ``cloud_sync.auto_set_rule``, the rule the cloud runs, over the rentals of the last
``WINDOW_DAYS``. Pure code apart from the random generator it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cloud_sync.auto_set_rule import Seen, sets

HISTORY_DAYS = 120.0
WINDOW_DAYS = 120.0  # the cloud's auto_set_days default
TRIPS = 4.0  # mean trips per rider over HISTORY_DAYS


@dataclass(frozen=True)
class Fleet:
    """``riders`` enrolled (``None``: every rider of both halves) over ``kiosks`` kiosks."""

    riders: int | None
    kiosks: int

    @property
    def name(self) -> str:
        return f"{'all' if self.riders is None else self.riders}:{self.kiosks}"


def parse_fleets(text: str) -> tuple[Fleet, ...]:
    """``800:4,all:8`` -> fleets; ``ValueError`` on anything else."""
    fleets = []
    for part in (p.strip() for p in text.split(",")):
        riders, sep, kiosks = part.partition(":")
        if not sep or not kiosks.isdigit() or not (riders == "all" or riders.isdigit()):
            raise ValueError(f"{part!r}: give RIDERS:KIOSKS, such as 800:4 or all:8")
        fleet = Fleet(None if riders == "all" else int(riders), int(kiosks))
        if fleet.kiosks < 1 or (fleet.riders is not None and fleet.riders < 2):
            raise ValueError(f"{part!r}: at least 1 kiosk and 2 riders")
        fleets.append(fleet)
    return tuple(fleets)


@dataclass(frozen=True)
class Simulation:
    home_share: float
    declared_homes: float
    auto_set_size: int
    #: each kiosk's set is exactly the riders whose home it is (``home_sets``), not the
    #: cloud's choice: the most any rule that picks sets from history could give
    oracle_sets: bool = False


@dataclass(frozen=True)
class History:
    homes: dict[str, int]
    declared: dict[str, float]  # rider -> when the home was declared (days)
    seen: dict[str, dict[str, Seen]]  # rider -> kiosk name -> rentals there in the window


def kiosk_name(number: int) -> str:
    return f"kiosk-{number}"


def elsewhere(home: int, kiosks: int, share: float, rng: np.random.Generator) -> int:
    """The kiosk of one trip: home with probability ``share``, another one otherwise."""
    if kiosks == 1 or rng.random() < share:
        return home
    other = int(rng.integers(kiosks - 1))
    return other if other < home else other + 1


def simulate_history(
    riders: Sequence[str], kiosks: int, sim: Simulation, rng: np.random.Generator
) -> History:
    homes = {r: int(rng.integers(kiosks)) for r in riders}
    declared = {
        r: float(rng.uniform(0, HISTORY_DAYS)) for r in riders if rng.random() < sim.declared_homes
    }
    seen: dict[str, dict[str, Seen]] = {}
    since = HISTORY_DAYS - WINDOW_DAYS
    for rider in riders:
        places: dict[str, tuple[int, float]] = {}
        for _ in range(int(rng.poisson(TRIPS))):
            start = float(rng.uniform(0, HISTORY_DAYS))
            back = min(HISTORY_DAYS, start + float(rng.uniform(0, 1)))
            for kiosk, at in (
                (elsewhere(homes[rider], kiosks, sim.home_share, rng), start),
                (elsewhere(homes[rider], kiosks, sim.home_share, rng), back),
            ):
                if at >= since:
                    count, latest = places.get(kiosk_name(kiosk), (0, -1.0))
                    places[kiosk_name(kiosk)] = (count + 1, max(latest, at))
        if places:  # the latest as text that sorts as time, as the cloud's timestamps do
            seen[rider] = {k: Seen(n, f"{at:012.6f}") for k, (n, at) in places.items()}
    return History(homes, declared, seen)


def automatic_sets(history: History, kiosks: int, size: int) -> list[list[str]]:
    """The cloud's choice for each kiosk (``cloud_sync.auto_set_rule``, the rule the cloud
    runs; one kiosk per site): declared homes, latest declared first, then the riders whose
    usual kiosk it is, then its regulars."""
    homes: dict[str, list[str]] = {}
    for rider in sorted(history.declared, key=lambda r: (-history.declared[r], r)):
        homes.setdefault(kiosk_name(history.homes[rider]), []).append(rider)
    alone = {kiosk_name(k): set[str]() for k in range(kiosks)}
    chosen = sets(alone, homes, history.seen, size)
    return [chosen[kiosk_name(k)] for k in range(kiosks)]


def home_sets(history: History, kiosks: int, size: int) -> list[list[str]]:
    """Each kiosk's set as no history can tell it: exactly its home riders (at most
    ``size``), the ceiling against which ``automatic_sets`` is measured."""
    chosen: list[list[str]] = [[] for _ in range(kiosks)]
    for rider in sorted(history.homes):
        chosen[history.homes[rider]].append(rider)
    return [riders[:size] for riders in chosen]
