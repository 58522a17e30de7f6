"""The open-set protocol behind ``kiosk faces eval --protocol open-set``, and an encoding cache.

Protocol (docs/face-pipeline.md has the published figures): the first usable photo of
each identity with two or more photos is enrolled, their other photos are genuine probes,
every single-photo identity is an unknown probe. The identities can be split into seeded
halves A and B: ``--half B`` measures on B alone; ``--calibrate-half A`` first calibrates
the operating points on A (``edge.vision.calibrate``) and then measures on B. Each report
covers the whole gallery and seeded random sub-rosters of the requested sizes (people left
out of a sub-roster become unknown probes), plus the claim step's 1:1 figures on the whole
gallery. Pure apart from reading and writing the cache file; the report holds no template.
The text summaries that ``kiosk faces eval`` prints are made here too.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cloud_sync.errors import InputError
from edge.vision import calibrate, calibrate_verify
from edge.vision.claim import verify_policy
from edge.vision.evaluation import (
    Encode,
    Sample,
    Split,
    count,
    encode_samples,
    halves,
    open_set_split,
    restrict,
    run_probes,
    sub_roster,
)
from edge.vision.policy import Policy, ThresholdMarginPolicy, cohort_policy
from edge.vision.tallies import histograms
from models.encoder import FaceEncoder
from models.quality import SHARPNESS_SMOOTHING, QualityConfig

SUMMARY = (
    "genuine",
    "correct",
    "wrong_person",
    "missed",
    "claim_required",
    "verified_with_claim",
    "unknown",
    "unknown_accepted",
    "recognition_rate",
    "wrong_person_rate",
    "unknown_accept_rate",
    "recognised_with_claim_rate",
)


def pooled(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    total = {key: sum(p[key] for p in parts) for key in SUMMARY if not key.endswith("_rate")}

    def rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    total["recognition_rate"] = rate(total["correct"], total["genuine"])
    total["wrong_person_rate"] = rate(total["wrong_person"], total["genuine"])
    total["unknown_accept_rate"] = rate(total["unknown_accepted"], total["unknown"])
    total["recognised_with_claim_rate"] = rate(
        total["correct"] + total["verified_with_claim"], total["genuine"]
    )
    reasons: dict[str, int] = {}
    for part in parts:
        for reason, n in part["missed_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    total["missed_reasons"] = reasons
    return total


def roster_counts(
    split: Split,
    policy: Policy,
    verifier: Policy | None,
    sizes: Sequence[int],
    draws: int,
    seed: int,
    whole: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The counts for ``split``'s whole gallery (``whole``, when already counted) and for
    ``draws`` seeded sub-rosters of each size smaller than it."""
    enrolled = len({s.label for s in split.gallery})
    if whole is None:
        whole = count(run_probes(split, policy, verifier, with_distances=False))
    rosters: list[dict[str, Any]] = [
        {"people": enrolled, "draws": 1, "whole_gallery": True, **whole}
    ]
    for size in sizes:
        if size >= enrolled:
            rosters.append({"people": size, "skipped": f"the gallery holds {enrolled} people"})
            continue
        parts = [
            count(
                run_probes(
                    sub_roster(split, size, seed + n), policy, verifier, with_distances=False
                )
            )
            for n in range(draws)
        ]
        rosters.append({"people": size, "draws": draws, "whole_gallery": False, **pooled(parts)})
    return rosters


def fit_on(
    samples: Sequence[Sample], labels: set[str], seed: int, unknown_budget: float, where: str
) -> dict[str, Any]:
    """The operating points calibrated on the samples of these identities; a half too
    small to calibrate on is an ``InputError`` that starts with ``where``."""
    try:
        return calibrate.calibrate(
            restrict(samples, labels), seed=seed, unknown_budget=unknown_budget
        )
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None


def open_set_report(
    samples: Sequence[Sample],
    points: dict[str, Any],
    *,
    settings_policy: str,
    policy_name: str | None,
    threshold: float,
    margin: float,
    half: str | None,
    calibrate_half: str | None,
    split_seed: int,
    sizes: Sequence[int],
    draws: int,
    seed: int,
    unknown_budget: float = calibrate.UNKNOWN_BUDGET,
) -> dict[str, Any]:
    """Run the open-set protocol; the report as plain data (see the module docstring)."""
    split_halves = halves(samples, split_seed)
    calibration = None
    if calibrate_half is not None:
        points = fit_on(
            samples,
            split_halves[calibrate_half],
            seed,
            unknown_budget,
            f"--calibrate-half {calibrate_half}",
        )
        calibration = {"half": calibrate_half, "people": len(split_halves[calibrate_half])}
        half = half or ("B" if calibrate_half == "A" else "A")
    measured = list(samples) if half is None else restrict(samples, split_halves[half])
    name = policy_name or settings_policy
    policy: Policy = (
        ThresholdMarginPolicy(threshold, margin) if name == "threshold" else cohort_policy(points)
    )
    verifier = verify_policy(points)
    split = open_set_split(measured)
    results = run_probes(split, policy, verifier)
    rosters = roster_counts(split, policy, verifier, sizes, draws, seed, count(results))
    return {
        "protocol": {
            "protocol": "open-set",
            "half": half,
            "split_seed": split_seed,
            "calibrated_on": calibration,
            "sizes": list(sizes),
            "draws": draws,
            "seed": seed,
            "policy": type(policy).__name__,
            "threshold": policy.threshold,
            "margin": policy.margin,
        },
        "rosters": rosters,
        "claim": calibrate_verify.verify_counts(split, verifier),
        "points": points,
        "histograms": histograms(results),
        "probes": [asdict(r) for r in results],
    }


# -- text summaries (printed by kiosk faces eval) ------------------------------------------


def eval_summary(report: dict[str, Any], with_sweep: bool) -> list[str]:
    """The text summary of a folders-protocol report."""
    lines: list[str] = []
    c = report["counts"]
    p = report["protocol"]
    lines.append(
        f"{p['policy']} (distance under {p['threshold']}, margin {p['margin']}), "
        f"{p['rounds']} round(s), {p['photos_encoded']} photos encoded in {p['encode_seconds']} s"
    )
    lines.append(
        f"genuine probes {c['genuine']}: correct {c['correct']}, wrong person {c['wrong_person']}, "
        f"missed {c['missed']} {c['missed_reasons'] or ''}".rstrip()
    )
    lines.append(
        f"unknown probes {c['unknown']}: rejected {c['unknown_rejected']}, "
        f"accepted {c['unknown_accepted']}"
    )
    if c["unlabelled"]:
        lines.append(
            f"unlabelled probes {c['unlabelled']}: accepted {c['unlabelled_accepted']} (not scored)"
        )
    lines.append(
        f"recognition rate {c['recognition_rate']}, wrong-person rate {c['wrong_person_rate']}, "
        f"unknown accept rate {c['unknown_accept_rate']}; with a claim: "
        f"{c['recognised_with_claim_rate']}"
    )
    if with_sweep:
        lines.append("threshold margin correct wrong missed unknown_accepted")
        for row in report["sweep"]:
            lines.append(
                f"{row['threshold']:.2f}      {row['margin']:.2f}   {row['correct']:>7} "
                f"{row['wrong_person']:>5} {row['missed']:>6} {row['unknown_accepted']:>16}"
            )
    return lines


def live_summary(live: dict[str, Any]) -> list[str]:
    """The text summary of the live path's figures (``kiosk faces eval``, folders)."""
    c = live["counts"]
    width, height = live["camera"]
    return [
        f"live path ({width}x{height} camera frame, faces found as kiosk run finds them at "
        f"{live['detect_width']} px): genuine {c['genuine']}: correct {c['correct']}, "
        f"wrong person {c['wrong_person']}, missed {c['missed']} {c['missed_reasons'] or ''}".rstrip(),
        f"live path unknown probes {c['unknown']}: rejected {c['unknown_rejected']}, "
        f"accepted {c['unknown_accepted']}",
    ]


def open_set_summary(report: dict[str, Any]) -> list[str]:
    """The text summary of an open-set report."""
    lines: list[str] = []
    p = report["protocol"]
    where = "all identities" if p["half"] is None else f"half {p['half']}"
    if p["calibrated_on"]:
        where += f", calibrated on half {p['calibrated_on']['half']}"
    lines.append(
        f"open set, {where} (split seed {p['split_seed']}): {p['policy']}, "
        f"{p['photos_encoded']} photos encoded in {p['encode_seconds']} s"
    )
    return lines + _roster_table(report["rosters"], report["claim"])


def open_set_live_summary(live: dict[str, Any]) -> list[str]:
    """The open-set figures of the live path, under the offline ones."""
    width, height = live["camera"]
    return [
        f"live path ({width}x{height} camera frame, faces found as kiosk run finds them at "
        f"{live['detect_width']} px), the same points:",
        *_roster_table(live["rosters"], live["claim"]),
    ]


def _roster_table(rosters: Sequence[dict[str, Any]], claim: dict[str, Any]) -> list[str]:
    lines = ["people draws genuine correct wrong claim_req unknown accepted  recog  fpir  +claim"]
    for r in rosters:
        if "skipped" in r:
            lines.append(f"{r['people']:>6}  skipped: {r['skipped']}")
            continue
        lines.append(
            f"{r['people']:>6} {r['draws']:>5} {r['genuine']:>7} {r['correct']:>7} "
            f"{r['wrong_person']:>5} {r['claim_required']:>9} {r['unknown']:>7} "
            f"{r['unknown_accepted']:>8}  {r['recognition_rate'] or 0:.3f} "
            f"{r['unknown_accept_rate'] or 0:.3f}  {r['recognised_with_claim_rate'] or 0:.3f}"
        )
    lines.append(
        f"claim step (1:1, whole gallery): genuine accepted {claim['genuine_accepted']} of "
        f"{claim['genuine_attempts']} encoded ({claim['genuine_accept_rate']}; of all "
        f"{claim['genuine_probes']} genuine probes {claim['genuine_accept_rate_of_probes']}), "
        "false accepts "
        f"{claim['false_accepts']} of {claim['impostor_attempts']} impostor attempts "
        f"({claim['false_accept_rate']})"
    )
    serve = claim["to_serve"]
    if serve["threshold"] is None:
        lines.append(
            f"  to serve {serve['share']:.0%} of all: more probes than were encoded would "
            "have to pass"
        )
    else:
        lines.append(
            f"  to serve {serve['share']:.0%} of all, the 1:1 threshold would be "
            f"{serve['threshold']}: {serve['false_accepts']} false accepts "
            f"({serve['false_accept_rate']}; about {300 * serve['false_accept_rate']:.2f} in "
            "300 impostor tries)"
        )
    return lines


# -- the encoding cache ---------------------------------------------------------------------


def _cache_key(path: Path, variant: str = "") -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{variant}:{key}" if variant else key


def encode_cached(
    engine: FaceEncoder,
    samples: Sequence[Sample],
    quality: QualityConfig,
    max_pixels: int,
    cache: Path,
    model: str,
    variant: str = "",
    encode: Encode = encode_samples,
) -> list[Sample]:
    """``encode_samples`` through a cache file of encodings (keyed by path, size, mtime, the
    quality gate's settings and ``variant``: how the encoder was set, such as ``jitter10``
    for enrolment templates, or how the photos were encoded, such as ``frames3`` with
    ``encode=encode_frames``).

    The cache holds templates of the photos: keep it outside the repository (``/tmp``).
    """
    # the gate decides which photos are encoded at all: a cache made under another gate
    # (or another sharpness measure) must not answer for this one
    gate = f"{quality!r}|smoothing={SHARPNESS_SMOOTHING}"
    variant = f"{variant}|{zlib.crc32(gate.encode()):08x}"
    known: dict[str, tuple[Any, str, int]] = {}
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["model"]) == model:
                for key, vector, reason, faces in zip(
                    data["keys"], data["encodings"], data["reasons"], data["faces"], strict=True
                ):
                    known[str(key)] = (vector, str(reason), int(faces))
    missing = [s for s in samples if _cache_key(s.path, variant) not in known]
    fresh = iter(encode(engine, missing, quality, max_pixels))
    done: list[Sample] = []
    for sample in samples:
        hit = known.get(_cache_key(sample.path, variant))
        if hit is None:
            done.append(next(fresh))
            continue
        vector, reason, faces = hit
        encoded = None if np.isnan(vector).any() else np.asarray(vector, dtype=np.float64)
        done.append(
            Sample(sample.path, sample.label, encoded, reason or None, None if faces < 0 else faces)
        )
    if missing:
        entries = dict(known)
        for sample in done:
            vector = np.full(128, np.nan) if sample.encoding is None else sample.encoding
            faces = -1 if sample.faces is None else sample.faces
            entries[_cache_key(sample.path, variant)] = (vector, sample.reason or "", faces)
        with cache.open("wb") as handle:
            np.savez(
                handle,
                model=np.array(model),
                keys=np.array(list(entries)),
                encodings=np.stack([np.asarray(v[0], dtype=np.float64) for v in entries.values()]),
                reasons=np.array([v[1] for v in entries.values()]),
                faces=np.array([v[2] for v in entries.values()]),
            )
    return done
