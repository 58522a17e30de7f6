"""How far to trust a calibration: ``kiosk faces eval --protocol open-set --cross-validate N``.

One calibrated half and one measured half (``--calibrate-half A``) is one draw of the
identities: a few hundred probes, where one stranger more or less moves the rate by half a
point. Cross-validation repeats it: for ``folds`` split seeds from ``split_seed`` on, the
identities are halved, the operating points are calibrated on each half in turn and
measured on the other, and the counts are pooled over every fold at each roster size.
A plain threshold-and-margin rule (``baseline``, which needs no calibration) is counted on
the same measured halves and rosters, so the two can be compared fold for fold.

The whole measured half counts only in the folds where it is no larger than the roster the
points were calibrated for; otherwise the policy asks every face for a claim, by design,
and the fold is listed as ``beyond`` instead. Pure; the report holds no template and no
photo path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge.vision import calibrate, calibrate_verify
from edge.vision.claim import verify_policy
from edge.vision.evaluation import HALVES, Sample, halves, open_set_split, restrict
from edge.vision.openset import fit_on, pooled, roster_counts
from edge.vision.policy import ThresholdMarginPolicy, cohort_policy

CLAIM_COUNTS = ("genuine_attempts", "genuine_accepted", "impostor_attempts", "false_accepts")


def fold(
    samples: Sequence[Sample],
    split_seed: int,
    calibrate_half: str,
    sizes: Sequence[int],
    draws: int,
    seed: int,
    unknown_budget: float,
    baseline: ThresholdMarginPolicy,
) -> dict[str, Any]:
    """Calibrate on one half of this split seed's identities and count on the other."""
    split_halves = halves(samples, split_seed)
    measured_half = next(h for h in HALVES if h != calibrate_half)
    where = f"split seed {split_seed}, half {calibrate_half}"
    points = fit_on(samples, split_halves[calibrate_half], seed, unknown_budget, where)
    policy = cohort_policy(points)
    verifier = verify_policy(points)
    split = open_set_split(restrict(samples, split_halves[measured_half]))
    rosters = roster_counts(split, policy, verifier, sizes, draws, seed)
    plain = roster_counts(split, baseline, None, sizes, draws, seed)
    beyond = policy.point(rosters[0]["people"]) is None  # no operating point that large
    for rows in (rosters, plain):
        rows[0]["beyond"] = beyond
    return {
        "split_seed": split_seed,
        "calibrated_on": calibrate_half,
        "measured": measured_half,
        "calibrated_people": policy.max_people,
        "rosters": [_trimmed(r) for r in rosters],
        "baseline": [_trimmed(r) for r in plain],
        "claim": calibrate_verify.verify_counts(split, verifier),
    }


def _trimmed(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "draws"}


def _pool(done: Sequence[dict[str, Any]], key: str, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """The ``key`` rows (``rosters`` or ``baseline``) of every fold, pooled by size; the whole
    half only over the folds whose points cover it."""
    rows: list[dict[str, Any]] = []
    whole = [f[key][0] for f in done if not f[key][0]["beyond"]]
    if whole:
        rows.append({"people": "whole half", "folds": len(whole), **pooled(whole)})
    for size in sizes:
        parts = [r for f in done for r in f[key][1:] if r["people"] == size and "skipped" not in r]
        if parts:
            rows.append({"people": size, "folds": len(parts), **pooled(parts)})
    return rows


def cross_validate(
    samples: Sequence[Sample],
    *,
    split_seed: int,
    folds: int,
    sizes: Sequence[int],
    draws: int,
    seed: int,
    unknown_budget: float = calibrate.UNKNOWN_BUDGET,
    baseline: ThresholdMarginPolicy | None = None,
) -> dict[str, Any]:
    """Every fold, and the counts pooled over them (see the module docstring)."""
    plain = baseline or ThresholdMarginPolicy()
    done = [
        fold(samples, split_seed + n, half, sizes, draws, seed, unknown_budget, plain)
        for n in range(folds)
        for half in HALVES
    ]
    claim = {key: sum(f["claim"][key] for f in done) for key in CLAIM_COUNTS}
    claim["genuine_accept_rate"] = _rate(claim["genuine_accepted"], claim["genuine_attempts"])
    claim["false_accept_rate"] = _rate(claim["false_accepts"], claim["impostor_attempts"], 6)
    return {
        "protocol": {
            "protocol": "open-set cross-validation",
            "split_seeds": [split_seed + n for n in range(folds)],
            "sizes": list(sizes),
            "draws": draws,
            "seed": seed,
            "unknown_budget": unknown_budget,
            "baseline": {"threshold": plain.threshold, "margin": plain.margin},
        },
        "folds": done,
        "pooled": _pool(done, "rosters", sizes),
        "pooled_baseline": _pool(done, "baseline", sizes),
        "claim": claim,
    }


def _rate(part: int, whole: int, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


def summary(report: dict[str, Any]) -> list[str]:
    """The text that ``kiosk faces eval --cross-validate`` prints."""
    p = report["protocol"]
    seeds = p["split_seeds"]
    lines = [
        f"open set, cross-validated: {len(report['folds'])} folds (split seeds {seeds[0]}-"
        f"{seeds[-1]}, each half calibrated in turn, measured on the other), "
        f"{p['photos_encoded']} photos encoded in {p['encode_seconds']} s",
        "seed cal people calibrated  correct/genuine wrong  accepted/unknown",
    ]
    for f in report["folds"]:
        whole = f["rosters"][0]
        counts = (
            "beyond the calibrated size: every face asks for a claim"
            if whole["beyond"]
            else f"{whole['correct']:>4}/{whole['genuine']:<4}  {whole['wrong_person']:>5}  "
            f"{whole['unknown_accepted']:>4}/{whole['unknown']}"
        )
        lines.append(
            f"{f['split_seed']:>4}   {f['calibrated_on']} {whole['people']:>6} "
            f"{f['calibrated_people']:>10}  {counts}"
        )
    return lines + _pooled_tables(report, p["baseline"])


def pooled_only(report: dict[str, Any]) -> dict[str, Any]:
    """A cross-validation report's pooled counts, without the folds (the live path's part
    of ``kiosk faces eval --cross-validate``)."""
    return {key: report[key] for key in ("pooled", "pooled_baseline", "claim")}


def live_summary(live: dict[str, Any]) -> list[str]:
    """The pooled figures of the live path, under the offline ones."""
    width, height = live["camera"]
    return [
        f"live path ({width}x{height} camera frame, faces found as kiosk run finds them at "
        f"{live['detect_width']} px), cross-validated the same way:",
        *_pooled_tables(live, None),
    ]


def _pooled_tables(report: dict[str, Any], baseline: dict[str, Any] | None) -> list[str]:
    lines = []
    named = f" (threshold {baseline['threshold']}, margin {baseline['margin']})" if baseline else ""
    for title, key in (
        ("pooled, calibrated points:", "pooled"),
        (f"pooled, baseline{named}:", "pooled_baseline"),
    ):
        lines.append(title)
        lines.append(
            "    people  folds genuine correct wrong unknown accepted  recog  wrong   fpir"
        )
        for r in report[key]:
            lines.append(
                f"{r['people']!s:>10} {r['folds']:>6} {r['genuine']:>7} {r['correct']:>7} "
                f"{r['wrong_person']:>5} {r['unknown']:>7} {r['unknown_accepted']:>8}  "
                f"{r['recognition_rate'] or 0:.3f} {r['wrong_person_rate'] or 0:.4f} "
                f"{r['unknown_accept_rate'] or 0:.4f}"
            )
    c = report["claim"]
    lines.append(
        f"claim step (1:1, pooled): genuine accepted {c['genuine_accepted']} of "
        f"{c['genuine_attempts']} ({c['genuine_accept_rate']}), false accepts "
        f"{c['false_accepts']} of {c['impostor_attempts']} ({c['false_accept_rate']})"
    )
    return lines
