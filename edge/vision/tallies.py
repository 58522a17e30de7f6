"""What the accuracy harness adds up beyond the counts: a threshold/margin sweep replayed
from each probe's two nearest people, and histograms of the distances (both go into the
``--json`` report of ``kiosk faces eval``). Pure code on ``ProbeResult`` lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.vision.evaluation import ProbeResult, count
from edge.vision.policy import Candidate, Candidates, ThresholdMarginPolicy


def sweep(
    results: Sequence[ProbeResult], thresholds: Sequence[float], margins: Sequence[float]
) -> list[dict[str, Any]]:
    """The counts for every threshold and margin, from the probes' two nearest people."""
    rows = []
    for threshold in thresholds:
        for margin in margins:
            policy = ThresholdMarginPolicy(threshold, margin)
            replayed = []
            for r in results:
                if not r.nearest:
                    replayed.append(r)
                    continue
                candidates = Candidates(
                    tuple(Candidate(pid, dist, -1) for pid, dist in r.nearest), 0, 0
                )
                decision = policy.decide(candidates)
                replayed.append(
                    ProbeResult(
                        r.image,
                        r.kind,
                        r.truth,
                        decision.person_id,
                        decision.distance,
                        decision.margin,
                        decision.reason,
                    )
                )
            counts = count(replayed)
            rows.append(
                {
                    "threshold": threshold,
                    "margin": margin,
                    **{
                        k: counts[k]
                        for k in ("correct", "wrong_person", "missed", "unknown_accepted")
                    },
                    "recognition_rate": counts["recognition_rate"],
                    "unknown_accept_rate": counts["unknown_accept_rate"],
                }
            )
    return rows


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=np.asarray(edges))
    return [int(c) for c in counts]


HISTOGRAM_EDGES = tuple(round(0.05 * i, 2) for i in range(0, 25))


def histograms(results: Sequence[ProbeResult]) -> dict[str, list[Any]]:
    """Genuine probe-to-own-template and probe-to-nearest-other distances, binned."""
    return {
        "edges": list(HISTOGRAM_EDGES),
        "genuine_own": histogram(
            [r.own_distance for r in results if r.kind == "genuine" and r.own_distance is not None],
            HISTOGRAM_EDGES,
        ),
        "nearest_other": histogram(
            [
                r.other_distance
                for r in results
                if r.kind != "unlabelled" and r.other_distance is not None
            ],
            HISTOGRAM_EDGES,
        ),
    }
