"""The fleet protocol behind ``kiosk faces eval --protocol fleet`` (issue 21, point 2).

How many visits a fleet of kiosks decides by face alone once each kiosk has its automatic
set, beside the whole-roster policy (docs/face-pipeline.md, "Fleet evaluation", has the
published figures and docs/fleet.md the sets themselves).

The data: the open-set split of a labelled tree (``evaluation.open_set_split``): the first
usable photo of each identity with two or more photos is that rider's enrolment, their
second photo is the visit probe, and every single-photo identity is a stranger. The
identities are halved (``evaluation.halves``); the operating points were fitted on one
half (the shipped points on half A of split seed 10, or ``--calibrate-half``) and only
the other half's visits and strangers are scored. A fleet of ``riders`` takes the reported
half's riders first and fills up from the fitting half: those are enrolled (the roster
and the sets hold them, they make history) but their own visits are not scored.

For each seed, a simulated history and the automatic sets the cloud's rule picks from it
(``edge.vision.fleet_sim``); then every scored rider visits once (home kiosk with
probability ``home_share``, another otherwise) and every stranger walks up at every kiosk.

A kiosk decides as ``Runtime._maybe_reload_roster`` makes it: past the policy's
calibrated size, with a set no larger than it, automatically among its set only (a match
stands only when no rider of the whole roster is nearer: ``live.nearest_in_roster``), and a
face it does not know goes to the claim step; otherwise over the whole roster (a face
too far from everyone refused). The claim step is the real ``check_claim`` over the whole
roster, the rider typing their own code (seeded 4-digit codes, so codes can collide;
hashed with scrypt at its smallest accepted cost, which changes the time, not the
answer). A stranger sent to the claim step is also tried as an attacker who knows the
code of the rider nearest to their face. Pure apart from the hashing; the report holds no
template and no code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cloud_sync.claim_code import hash_claim
from edge.vision.claim import VerifyPolicy, check_claim, verify_policy
from edge.vision.evaluation import Sample, halves, open_set_split
from edge.vision.fleet_sim import (
    HISTORY_DAYS,
    TRIPS,
    WINDOW_DAYS,
    Fleet,
    History,
    Simulation,
    automatic_sets,
    elsewhere,
    home_sets,
    simulate_history,
)
from edge.vision.fleet_tally import empty, pool, targets, with_rates
from edge.vision.live import nearest_in_roster
from edge.vision.matcher import Gallery, rider_gallery
from edge.vision.openset import fit_on
from edge.vision.policy import (
    CLAIM_REQUIRED,
    EMPTY_ROSTER,
    MATCH,
    UNKNOWN,
    Candidates,
    CohortPolicy,
    cohort_policy,
)

CLAIM_LOG2_N = 10  # the cheapest scrypt cost claim_matches accepts


class _Kiosks:
    """The fleet's galleries for one seed: the whole roster and each kiosk's set."""

    members: list[set[str]] | None

    def members_at(self, kiosk: int, with_set: bool) -> set[str] | None:
        """Who is in ``kiosk``'s set, when it decides with one."""
        return self.members[kiosk] if with_set and self.members is not None else None

    def __init__(
        self,
        enrolled: Mapping[str, Any],
        flagged: set[str],
        sets: list[list[str]] | None,
        fuse: bool,
    ) -> None:
        people = list(enrolled)
        self.whole = rider_gallery(people, [enrolled[p] for p in people], flagged, fuse)
        self.sets = (
            None
            if sets is None
            else [rider_gallery(s, [enrolled[p] for p in s], flagged, fuse) for s in sets]
        )
        self.members = None if sets is None else [set(s) for s in sets]


def run_fleet(
    riders: Sequence[Sample],
    visits: Sequence[Sample],
    strangers: Sequence[Sample],
    scored: set[str],
    fleet: Fleet,
    sim: Simulation,
    policy: CohortPolicy,
    verifier: VerifyPolicy,
    seed: int,
    fuse: bool = True,
) -> dict[str, Any]:
    """One seed of one fleet: the counts with the sets and with the whole roster."""
    rng = np.random.default_rng(seed)
    enrolled = {s.label or "": s.enrolled_as for s in riders if s.enrolled_as is not None}
    names = sorted(enrolled)
    history = simulate_history(names, fleet.kiosks, sim, rng)
    if sim.oracle_sets:
        chosen = home_sets(history, fleet.kiosks, sim.auto_set_size)
    else:
        chosen = automatic_sets(history, fleet.kiosks, sim.auto_set_size)
    limit = policy.max_people
    use_sets = len(names) > limit and sim.auto_set_size <= limit and sim.auto_set_size > 0
    probe = _Kiosks(enrolled, set(), None, fuse)  # lookalikes flagged as enrolment flags them
    flagged = {p for p, _ in probe.whole.lookalikes(policy.lookalike_distance)}
    galleries = _Kiosks(enrolled, flagged, chosen if use_sets else None, fuse)
    codes = {p: f"{int(rng.integers(10_000)):04d}" for p in names}
    hashes: dict[str, str | None] = {
        p: hash_claim(code, log2_n=CLAIM_LOG2_N) for p, code in codes.items()
    }
    answered: dict[tuple[str, str], tuple[str | None, str]] = {}

    def claim(path: str, vector: Any, code: str) -> tuple[str | None, str]:
        key = (path, code)
        if key not in answered:
            made = check_claim(galleries.whole, vector, code, hashes, verifier)
            answered[key] = (made.person_id, made.reason)
        return answered[key]

    counts = {"sets": empty(), "whole_roster": empty()}
    # which strangers were taken for a rider, at any kiosk: the walk-ups repeat the same
    # people at every kiosk (and, for the whole roster, in every seed)
    taken: dict[str, set[str]] = {"sets": set(), "whole_roster": set()}
    for sample in visits:
        rider = sample.label or ""
        if rider not in scored or rider not in enrolled:
            continue
        home = history.homes[rider]
        kiosk = elsewhere(home, fleet.kiosks, sim.home_share, rng)
        at_home = kiosk == home
        for name, gallery, claim_unknown in _ways(galleries, kiosk):
            c = counts[name]
            c["visits"] += 1
            c["home_visits" if at_home else "away_visits"] += 1
            vector = sample.probe
            if vector is None:
                c["no_face"] += 1
                c["home_no_face"] += at_home
                c["refused"] += 1
                continue
            found = gallery.search(vector)
            decision = policy.decide(found)
            in_set = decision.reason == MATCH
            if claim_unknown and in_set:
                decision = nearest_in_roster(decision, galleries.whole, vector)
            if decision.reason == MATCH:
                if decision.person_id == rider:
                    c["automatic_right"] += 1
                    c["automatic_right_home"] += at_home
                else:
                    c["wrong_person"] += 1
                    c["home_wrong_person"] += at_home
                continue
            if at_home:
                _held(c, policy, found, rider, in_set, galleries.members_at(kiosk, claim_unknown))
            if not _claimable(decision.reason, claim_unknown):
                c["refused"] += 1
                continue
            c["sent_to_claim"] += 1
            person, _ = claim(str(sample.path), vector, codes[rider])
            if person == rider:
                c["served_after_claim"] += 1
            elif person is not None:
                c["wrong_person"] += 1
                c["wrong_person_after_claim"] += 1
    for sample in strangers:
        vector = sample.probe
        for kiosk in range(fleet.kiosks):
            for name, gallery, claim_unknown in _ways(galleries, kiosk):
                c = counts[name]
                c["strangers"] += 1
                if vector is None:
                    continue
                decision = policy.decide(gallery.search(vector))
                if claim_unknown and decision.reason == MATCH:
                    decision = nearest_in_roster(decision, galleries.whole, vector)
                if decision.accepted:
                    c["stranger_accepted"] += 1
                    taken[name].add(str(sample.path))
                elif _claimable(decision.reason, claim_unknown):
                    c["stranger_sent_to_claim"] += 1
                    nearest = galleries.whole.search(vector, k=1).best
                    if nearest is not None:  # an attacker who knows that rider's code
                        person, _ = claim(str(sample.path), vector, codes[nearest.person_id])
                        c["stranger_with_code_accepted"] += person is not None
    return {
        "seed": seed,
        "sets_used": use_sets,
        "set_sizes": [len(s) for s in chosen] if use_sets else None,
        "home_riders_in_own_set": _home_coverage(history, chosen) if use_sets else None,
        **{name: with_rates(c) for name, c in counts.items()},
        "taken": taken,  # read by fleet_report, not reported
    }


def _held(
    c: dict[str, Any],
    policy: CohortPolicy,
    found: Candidates,
    rider: str,
    overruled: bool,
    members: set[str] | None,
) -> None:
    """Count what held a home visit that was not decided automatically."""
    best = found.best
    if members is not None and rider not in members:
        c["home_not_in_set"] += 1
    elif best is None or best.person_id != rider:
        c["home_other_nearest"] += 1
    elif overruled:
        c["home_roster_check"] += 1
    else:
        for gate in policy.held_by(found):
            c[f"home_held_{gate}"] += 1


def _ways(galleries: _Kiosks, kiosk: int) -> list[tuple[str, Gallery, bool]]:
    """How kiosk ``kiosk`` decides: with its set (or the whole roster when sets are not in
    use), and the whole-roster policy beside it."""
    at_kiosk = (
        ("sets", galleries.whole, False)
        if galleries.sets is None
        else ("sets", galleries.sets[kiosk], True)
    )
    return [at_kiosk, ("whole_roster", galleries.whole, False)]


def _claimable(reason: str, claim_unknown: bool) -> bool:
    return reason == CLAIM_REQUIRED or (claim_unknown and reason in (UNKNOWN, EMPTY_ROSTER))


def _home_coverage(history: History, chosen: list[list[str]]) -> float:
    members = [set(c) for c in chosen]
    inside = sum(r in members[k] for r, k in history.homes.items())
    return round(inside / len(history.homes), 4) if history.homes else 0.0


def fleet_report(
    samples: Sequence[Sample],
    reported: set[str],
    fitting: set[str],
    fleets: Sequence[Fleet],
    sim: Simulation,
    policy: CohortPolicy,
    verifier: VerifyPolicy,
    seeds: Sequence[int],
    fuse: bool = True,
) -> list[dict[str, Any]]:
    """Every fleet over every seed: per seed and pooled, with the targets."""
    split = open_set_split(samples)
    gallery = {s.label: s for s in split.gallery}
    visits = [s for s in split.genuine if s.label in reported]
    firsts = list({s.label: s for s in reversed(visits)}.values())  # one visit per rider
    strangers = [s for s in split.unknown if s.label in reported]
    own = sorted(label for label in gallery if label in reported)
    others = sorted(label for label in gallery if label in fitting)
    done: list[dict[str, Any]] = []
    for fleet in fleets:
        wanted = len(own) + len(others) if fleet.riders is None else fleet.riders
        if wanted > len(own) + len(others):
            done.append(
                {
                    "fleet": fleet.name,
                    "skipped": f"the tree holds {len(own) + len(others)} riders "
                    f"({len(own)} in the reported half)",
                }
            )
            continue
        runs = []
        for seed in seeds:
            rng = np.random.default_rng([seed, 1])
            if wanted <= len(own):
                chosen = sorted(rng.choice(own, wanted, replace=False).tolist())
                fill: list[str] = []
            else:
                chosen = own
                fill = sorted(rng.choice(others, wanted - len(own), replace=False).tolist())
            riders = [gallery[label] for label in chosen + fill]
            runs.append(
                run_fleet(
                    riders, firsts, strangers, set(chosen), fleet, sim, policy, verifier, seed, fuse
                )
            )
        pooled = {name: pool([r[name] for r in runs]) for name in ("sets", "whole_roster")}
        for name, c in pooled.items():
            c["strangers_taken"] = len(set().union(*(r["taken"][name] for r in runs)))
            c["stranger_people"] = len(strangers)
        for r in runs:
            del r["taken"]
        done.append(
            {
                "fleet": fleet.name,
                "riders": wanted,
                "kiosks": fleet.kiosks,
                "scored_riders": min(wanted, len(own)),
                "enrolled_from_fitting_half": max(0, wanted - len(own)),
                "strangers": len(strangers),
                "sets_used": runs[0]["sets_used"],
                "seeds": runs,
                "pooled": pooled,
                "targets": {name: targets(c) for name, c in pooled.items()},
            }
        )
    return done


def evaluate(
    samples: Sequence[Sample],
    points: dict[str, Any],
    *,
    half: str | None,
    calibrate_half: str | None,
    split_seed: int,
    fleets: Sequence[Fleet],
    sim: Simulation,
    seeds: Sequence[int],
    unknown_budget: float,
    fuse: bool = True,
) -> dict[str, Any]:
    """The whole protocol (see the module docstring): the identities halved with
    ``split_seed``; the points fitted on ``calibrate_half`` (else ``points``, fitted on the
    half not reported); ``half`` (default: the other half, else B) scored."""
    split_halves = halves(samples, split_seed)
    if calibrate_half is not None:
        points = fit_on(
            samples,
            split_halves[calibrate_half],
            seeds[0],
            unknown_budget,
            f"--calibrate-half {calibrate_half}",
        )
        half = half or ("B" if calibrate_half == "A" else "A")
    half = half or "B"
    fitted = "A" if half == "B" else "B"
    policy = cohort_policy(points)
    report = fleet_report(
        samples,
        split_halves[half],
        split_halves[fitted],
        fleets,
        sim,
        policy,
        verify_policy(points),
        seeds,
        fuse,
    )
    return {
        "protocol": {
            "protocol": "fleet",
            "half": half,
            "fitted_on": fitted,
            "calibrated_here": calibrate_half is not None,
            "split_seed": split_seed,
            "seeds": list(seeds),
            "home_share": sim.home_share,
            "declared_homes": sim.declared_homes,
            "auto_set_size": sim.auto_set_size,
            "sets": "home riders only (--oracle-sets)" if sim.oracle_sets else "the cloud's rule",
            "automatic_limit": policy.max_people,
            "history_days": HISTORY_DAYS,
            "window_days": WINDOW_DAYS,
            "mean_trips": TRIPS,
            "claim": "check_claim over the whole roster, the rider typing their own code "
            "(seeded 4-digit codes, scrypt at ln=10)",
        },
        "fleets": report,
        "points": points,
    }
