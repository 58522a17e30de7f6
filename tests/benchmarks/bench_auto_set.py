"""Automatic sets and learned templates at fleet scale: what they cost a decision.

Run: ``scripts/bench auto_set`` (``KIOSK_BENCH_QUICK=1`` for 10,000 riders). Needs
``../shared/faces/dev`` (its photos, encoded once, seed the synthetic riders as in
``bench_policy``).

Per decision, 50 probes, a roster of 100,000 riders (one enrolment template each), the
galleries built as the kiosk builds them (``edge.vision.matcher.rider_gallery``, fused):

- whole roster (today's kiosk): the search over every rider and the shipped policy,
  which past its calibrated size sends the face to the claim step;
- automatic set: the search over the kiosk's 300-rider set and the shipped policy,
  deciding automatically (``Runtime._maybe_reload_roster``), and for a match the check
  that no rider of the whole roster is nearer (``live.nearest_in_roster``);
- learned templates: the whole roster again, with 4 learned templates for one rider in
  ten, fused into their mean (what a kiosk holds once riders learned).

Also the work of a roster reload: building each gallery. The figure the issue names is
the time the set and the learned templates add to a decision (negative: they save time).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge.vision.live import nearest_in_roster
from edge.vision.matcher import Gallery, rider_gallery
from edge.vision.policy import Decision, cohort_policy, load_operating_points
from tests.benchmarks.bench_policy import PROBES, seeds, timed
from tests.benchmarks.common import quick, report, summary_ms

SET_SIZE = 300
LEARNED_SHARE = 0.1
LEARNED_PER_RIDER = 4


def main() -> None:
    rng = np.random.default_rng(0)
    seed_templates = seeds()
    riders = 10_000 if quick() else 100_000
    picks = rng.integers(0, len(seed_templates), riders)
    matrix = (seed_templates[picks] + rng.normal(0, 0.08, (riders, 128))).astype(np.float32)
    people = [f"r{i}" for i in range(riders)]
    policy = cohort_policy(load_operating_points())
    probes = (
        matrix[rng.integers(0, SET_SIZE, PROBES)] + rng.normal(0, 0.03, (PROBES, 128))
    ).astype(np.float32)  # riders of the set, seen again

    builds: dict[str, float] = {}

    def build(name: str, ids: list[str], vectors: np.ndarray) -> Any:
        started = time.perf_counter()
        gallery = rider_gallery(ids, list(vectors))
        builds[name] = time.perf_counter() - started
        return gallery

    whole = build("whole", people, matrix)
    chosen = build("auto_set", people[:SET_SIZE], matrix[:SET_SIZE])
    learners = rng.choice(riders, int(riders * LEARNED_SHARE), replace=False)
    extra = np.repeat(matrix[learners], LEARNED_PER_RIDER, axis=0) + rng.normal(
        0, 0.03, (len(learners) * LEARNED_PER_RIDER, 128)
    ).astype(np.float32)
    learned = build(
        "learned",
        people + [people[i] for i in np.repeat(learners, LEARNED_PER_RIDER)],
        np.concatenate([matrix, extra.astype(np.float32)]),
    )
    rows = []
    runs: dict[str, list[float]] = {"whole": [], "auto_set": [], "learned": []}
    outcomes: dict[str, list[str]] = {"whole": [], "auto_set": [], "learned": []}
    for probe in probes:
        for name, gallery in (("whole", whole), ("auto_set", chosen), ("learned", learned)):

            def decide(p: np.ndarray = probe, g: Gallery = gallery, n: str = name) -> Decision:
                decision = policy.decide(g.search(p))
                if n == "auto_set" and decision.reason == "match":  # as the kiosk decides
                    decision = nearest_in_roster(decision, whole, p)
                return decision

            outcomes[name].append(timed(decide, runs[name]).reason)
    base = summary_ms(runs["whole"])
    for name in ("whole", "auto_set", "learned"):
        found = summary_ms(runs[name])
        rows.append(
            {
                "gallery": name,
                "people": {"whole": riders, "auto_set": SET_SIZE, "learned": riders}[name],
                "decision_p50_ms": found["p50_ms"],
                "decision_p95_ms": found["p95_ms"],
                "added_p50_ms": round(found["p50_ms"] - base["p50_ms"], 3),
                "automatic": sum(r == "match" for r in outcomes[name]),
                "build_s": round(builds[name], 3),
            }
        )
    report(
        "auto_set",
        rows,
        {"riders": riders, "probes": PROBES, "set_size": SET_SIZE, "limit": policy.max_people},
    )


if __name__ == "__main__":
    main()
