"""The rule that picks a kiosk's automatic set, shared by the cloud (``cloud_sync.server.
auto_sets``, on its database) and the fleet evaluation (``edge.vision.fleet_eval``, on a
simulated history), so that the evaluation measures the sets the cloud builds.

The set of kiosk K, at most ``size`` riders, in this order:

1. riders whose home kiosk is K (set by an operator or the riders' app), latest first;
2. riders whose usual kiosk K is: of the rentals they started or returned in the window,
   K saw the most (a tie makes each tied kiosk usual);
3. regulars of K: riders who started or returned at least ``REGULAR_VISITS`` rentals at K
   in the window, though another kiosk is their usual one;
4. riders whose usual kiosk is another kiosk of K's site.

Within 2-4, riders with more visits at K come first, then the most recent. A rider seen
once at K on a trip from elsewhere is not in K's set: a set holds the riders K will see
again, and a smaller set lets the face policy decide more of them automatically (its
operating point depends on the set's size). Pure code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

REGULAR_VISITS = 3  # rentals started or returned at a kiosk that make a rider its regular


@dataclass(frozen=True)
class Seen:
    """One rider at one kiosk within the window: rentals started or returned there, and
    the latest of them (UTC text, which sorts as time)."""

    visits: int
    latest: str


def usual(seen: Mapping[str, Seen]) -> set[str]:
    """The kiosks where a rider started or returned the most rentals (ties: all of them)."""
    top = max((s.visits for s in seen.values()), default=0)
    return {kiosk for kiosk, s in seen.items() if s.visits == top and top > 0}


def sets(
    kiosks: Mapping[str, set[str]],
    homes: Mapping[str, Sequence[str]],
    seen: Mapping[str, Mapping[str, Seen]],
    size: int,
) -> dict[str, list[str]]:
    """The set of each kiosk (module docstring), each in person id order.

    ``kiosks``: each kiosk with the other kiosks of its site; ``homes``: per kiosk, the
    riders who declared it home, latest first; ``seen``: per rider, per kiosk, their
    rentals there in the window. One pass over the riders, whatever the number of kiosks.
    """
    ranked: dict[str, list[tuple[int, int, str, str]]] = {k: [] for k in kiosks}
    mates: dict[str, list[str]] = {}
    for kiosk, others in kiosks.items():
        for other in others:
            mates.setdefault(other, []).append(kiosk)
    for person, places in seen.items():
        where = usual(places)
        steps: dict[str, int] = {}
        for kiosk, there in places.items():
            if kiosk in where:
                steps[kiosk] = 2
            elif there.visits >= REGULAR_VISITS:
                steps[kiosk] = 3
        for kiosk in where:
            for mate in mates.get(kiosk, ()):
                steps.setdefault(mate, 4)
        for kiosk, step in steps.items():
            if kiosk in ranked:
                at = places.get(kiosk)
                count, latest = (at.visits, at.latest) if at is not None else (0, "")
                ranked[kiosk].append((step, -count, latest, person))
    chosen: dict[str, list[str]] = {}
    for kiosk, rows in ranked.items():
        rows.sort(key=lambda r: r[3])
        rows.sort(key=lambda r: r[2], reverse=True)  # the latest first (UTC text sorts as time)
        rows.sort(key=lambda r: (r[0], r[1]))  # then by step, more visits first
        members = dict.fromkeys([*homes.get(kiosk, ()), *(r[3] for r in rows)])
        chosen[kiosk] = sorted(list(members)[:size])
    return chosen
