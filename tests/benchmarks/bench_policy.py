"""Decision policy benchmark: what the roster-size aware policy and the claim step add.

Run: ``scripts/bench policy`` (``KIOSK_BENCH_QUICK=1`` for 1k and 5k only). Needs
``../shared/faces/dev`` (its photos, encoded once, seed the synthetic rosters).

1. **Per decision**, 50 probes, rosters of 1k / 5k / 10k / 100k templates (1 to 5 per rider,
   dlib-like vectors around the dev encodings, as in ``bench_face_pipeline``):
   - plain: ``Gallery.search`` (two nearest people) + ``ThresholdMarginPolicy``;
   - cohort: the same search on a gallery carrying cohorts and neighbours, + the shipped
     ``CohortPolicy`` with its table stretched to the roster (so the whole score is
     computed; the shipped table sends rosters over 400 people to the claim step);
   - claim: ``check_claim``'s face part (the 8 nearest people, then ``Gallery.verify``
     of the nearest with its cohort computed on demand), without the KDF, and one
     scrypt check of a typed code at the shipped cost, apart.
   Cohorts are precomputed only up to ``COHORT_LIMIT`` templates (the build is
   quadratic); above it the benchmark fills them with a typical value: the decision's
   cost does not depend on the values.
2. **Gallery build** (the work a roster swap does) with and without cohorts.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cloud_sync.claim_code import claim_matches, hash_claim
from edge.vision.claim import verify_policy
from edge.vision.matcher import COHORT_LIMIT, Gallery
from edge.vision.policy import (
    OperatingPoint,
    ThresholdMarginPolicy,
    cohort_policy,
    load_operating_points,
)
from models.encoder import FaceEngine
from models.images import read_image
from tests.benchmarks.common import SHARED_FACES, quick, report, summary_ms

DEV = SHARED_FACES / "dev"
PROBES = 50


def seeds() -> np.ndarray:
    engine = FaceEngine()
    found = []
    for folder in sorted(p for p in DEV.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for path in sorted(folder.iterdir()):
            if path.suffix in (".jpg", ".png"):
                observed = engine.observe(read_image(path))
                if observed is not None:
                    found.append(observed.encoding)
    return np.stack(found)


def roster(
    seed_templates: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[list[str], Any]:
    picks = rng.integers(0, len(seed_templates), size)
    matrix = (seed_templates[picks] + rng.normal(0, 0.08, (size, 128))).astype(np.float32)
    owners = [f"r{i}" for i in np.repeat(np.arange(size), rng.integers(1, 6, size))[:size]]
    return owners, matrix


def timed(fn: Callable[[], Any], runs: list[float]) -> Any:
    started = time.perf_counter()
    result = fn()
    runs.append(time.perf_counter() - started)
    return result


def bench_decisions(seed_templates: np.ndarray) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    points = load_operating_points()
    shipped = cohort_policy(points)
    verifier = verify_policy(points)
    plain_policy = ThresholdMarginPolicy()
    rows = []
    for size in (1_000, 5_000) if quick() else (1_000, 5_000, 10_000, 100_000):
        owners, matrix = roster(seed_templates, size, rng)
        plain = Gallery.from_matrix(owners, matrix, cohort_limit=0)
        started = time.perf_counter()
        cohorts = Gallery.from_matrix(owners, matrix)
        build_s = time.perf_counter() - started
        if not cohorts.has_cohort:  # too large to precompute: typical values (see docstring)
            cohorts._cohort = np.full(len(cohorts), 0.63)
            cohorts._neighbour = np.full(cohorts.people, 0.6)
        stretched = dataclasses.replace(
            shipped, points=(*shipped.points, OperatingPoint(10**7, shipped.points[-1].threshold))
        )
        probes = (
            seed_templates[rng.integers(0, len(seed_templates), PROBES)]
            + rng.normal(0, 0.05, (PROBES, 128))
        ).astype(np.float32)
        base: list[float] = []
        ours: list[float] = []
        claim: list[float] = []
        same = 0
        for probe in probes:
            a = timed(lambda p=probe, g=plain: plain_policy.decide(g.search(p)), base)
            b = timed(lambda p=probe, g=cohorts, s=stretched: s.decide(g.search(p)), ours)
            same += a.distance == b.distance

            def claim_face(p: np.ndarray = probe, g: Gallery = plain) -> Any:
                near = g.search(p, k=8)
                close = [c.person_id for c in near.nearest if c.distance < verifier.max_distance]
                return verifier.decide(g.verify(p, close[:1] or [near.nearest[0].person_id]))

            timed(claim_face, claim)
        x, y, z = summary_ms(base), summary_ms(ours), summary_ms(claim)
        rows.append(
            {
                "templates": size,
                "plain_p50_ms": x["p50_ms"],
                "plain_p95_ms": x["p95_ms"],
                "cohort_p50_ms": y["p50_ms"],
                "cohort_p95_ms": y["p95_ms"],
                "added_p50_ms": round(y["p50_ms"] - x["p50_ms"], 3),
                "added_p95_ms": round(y["p95_ms"] - x["p95_ms"], 3),
                "claim_face_p50_ms": z["p50_ms"],
                "claim_face_p95_ms": z["p95_ms"],
                "same_nearest": f"{same}/{PROBES}",
                "build_with_cohorts_s": round(build_s, 2) if size <= COHORT_LIMIT else None,
            }
        )
    return rows


def bench_kdf() -> dict[str, Any]:
    stored = hash_claim("4821")
    runs: list[float] = []
    for _ in range(5 if quick() else 20):
        timed(lambda: claim_matches("4821", stored), runs)
    return summary_ms(runs)


def main() -> None:
    rows = bench_decisions(seeds())
    kdf = bench_kdf()
    report(
        "policy_decisions",
        rows,
        {
            "probes": PROBES,
            "cohort_limit_templates": COHORT_LIMIT,
            "scrypt_check_p50_ms": kdf["p50_ms"],
            "scrypt_check_p95_ms": kdf["p95_ms"],
        },
    )


if __name__ == "__main__":
    main()
