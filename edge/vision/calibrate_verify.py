"""Calibrating and measuring the claim step's 1:1 check (``VerifyPolicy``) on labelled
encodings: the ``verify`` section of an operating-points file (``edge.vision.calibrate``
writes the whole file), the claim figures of ``kiosk faces eval``, and what a looser
threshold would cost.

Against a split's whole gallery: every genuine probe against its own rider (a genuine
attempt) and every encoded photo against every other enrolled rider (an impostor
attempt). For each cohort weight, the threshold holding false accepts within
``far_budget`` is found, and for ``m`` riders holding the same claim near the face, within
``far_budget / m``; the weight accepting the most genuine attempts wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.vision.claim import VerifyPolicy
from edge.vision.evaluation import Sample, Split, open_set_split
from edge.vision.matcher import Gallery
from edge.vision.policy import Normaliser

COHORT_PEOPLE = 400
VERIFY_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
HOLDERS = (1, 2, 4)

Floats = npt.NDArray[np.float64]


def split_gallery(split: Split) -> Gallery:
    """The gallery a split enrols (each photo's enrolment template)."""
    return Gallery(
        [(s.label or "", s.enrolled_as) for s in split.gallery if s.enrolled_as is not None]
    )


def loosest(impostor_scores: Floats, allowed: int) -> float:
    """The loosest threshold under which at most ``allowed`` impostor scores fall."""
    ordered = np.sort(impostor_scores)
    return float(ordered[allowed]) if allowed < len(ordered) else np.inf


@dataclass(frozen=True)
class Attempts:
    """1:1 attempts against a gallery: raw distance, the claimed template's cohort, truth."""

    genuine: npt.NDArray[np.bool_]
    distance: Floats
    cohort: Floats
    people: int
    genuine_total: int


def verify_attempts(split: Split) -> Attempts:
    """Every genuine probe against its own rider, every photo against every other rider."""
    gallery = split_gallery(split)
    templates = gallery.matrix.astype(np.float64)
    owners = np.array(gallery.person_ids, dtype=object)
    cohorts = np.array(
        [np.nan if c is None else c for c in (gallery.cohort_of(i) for i in range(len(gallery)))]
    )
    people = sorted(set(gallery.person_ids))
    kinds = [("genuine", split.genuine), ("unknown", split.unknown), ("gallery", split.gallery)]
    rows = [(kind, s) for kind, group in kinds for s in group if s.probe is not None]
    if not rows or not people:
        raise ValueError("verification calibration needs enrolled people and probes")
    probes = np.stack([np.asarray(s.probe, dtype=np.float64) for _, s in rows])
    squared = (
        np.einsum("ij,ij->i", probes, probes)[:, None]
        + np.einsum("ij,ij->i", templates, templates)[None, :]
        - 2.0 * (probes @ templates.T)
    )
    distances = np.sqrt(np.maximum(squared, 0.0))
    kind = np.array([k for k, _ in rows])
    labels = np.array([s.label for _, s in rows], dtype=object)
    genuine: list[Any] = []
    distance: list[Any] = []
    cohort: list[Any] = []
    for person in people:
        mine = np.flatnonzero(owners == person)
        pick = mine[np.argmin(distances[:, mine], axis=1)]
        own = labels == person
        attempt = ~own | (kind == "genuine")  # a gallery photo against itself is no attempt
        genuine.append(own[attempt])
        distance.append(distances[np.arange(len(rows)), pick][attempt])
        cohort.append(cohorts[pick][attempt])
    return Attempts(
        np.concatenate(genuine).astype(bool),
        np.concatenate(distance),
        np.concatenate(cohort),
        gallery.people,
        len(split.genuine),
    )


def verify_scores(attempts: Attempts, weight: float, centre: float) -> Floats:
    normaliser = Normaliser(weight, centre, COHORT_PEOPLE)
    trust = normaliser.trust(attempts.people)
    cohort = np.where(np.isnan(attempts.cohort), centre, attempts.cohort)
    result: Floats = attempts.distance - weight * trust * (cohort - centre)
    return result


def calibrate_verify(
    samples: Sequence[Sample], centre: float, far_budget: float = 0.00075
) -> dict[str, Any]:
    """The ``verify`` section of an operating-points file, and what it measured."""
    split = open_set_split(samples)
    attempts = verify_attempts(split)
    impostors = int((~attempts.genuine).sum())
    best: tuple[int, float, list[float]] | None = None
    for weight in VERIFY_WEIGHTS:
        score = verify_scores(attempts, weight, centre)
        impostor = score[~attempts.genuine]
        thresholds = [loosest(impostor, int(far_budget / m * impostors)) for m in HOLDERS]
        accepted = int((score[attempts.genuine] < thresholds[0]).sum())
        if best is None or accepted > best[0]:
            best = (accepted, weight, thresholds)
    assert best is not None
    accepted, weight, thresholds = best
    score = verify_scores(attempts, weight, centre)
    false_accepts = int((score[~attempts.genuine] < thresholds[0]).sum())
    return {
        "cohort_weight": weight,
        "cohort_centre": centre,
        "cohort_people": COHORT_PEOPLE,
        "max_distance": round(thresholds[0] + 0.05, 2),
        "points": [
            {"holders": m, "threshold": round(t - 5e-5, 4)}
            for m, t in zip(HOLDERS, thresholds, strict=True)
        ],
        "calibration": {
            "far_budget": far_budget,
            "genuine_attempts": int(attempts.genuine.sum()),
            "genuine_probes": attempts.genuine_total,
            "genuine_accepted": accepted,
            "impostor_attempts": impostors,
            "false_accepts": false_accepts,
        },
    }


def verify_counts(split: Split, policy: VerifyPolicy) -> dict[str, Any]:
    """The claim step's 1:1 figures on ``split``: genuine accepts and impostor false accepts."""
    attempts = verify_attempts(split)
    normaliser = policy.normaliser
    trust = normaliser.trust(attempts.people)
    if trust > 0.0 and normaliser.weight > 0.0:
        normalised = attempts.distance - normaliser.weight * trust * (
            attempts.cohort - normaliser.centre
        )
    else:
        normalised = attempts.distance
    accepted = (normalised < policy.points[0].threshold) & (attempts.distance < policy.max_distance)
    genuine = int(attempts.genuine.sum())
    impostors = int((~attempts.genuine).sum())
    genuine_accepted = int((accepted & attempts.genuine).sum())
    false_accepts = int((accepted & ~attempts.genuine).sum())

    def rate(part: int, whole: int) -> float | None:
        return round(part / whole, 6) if whole else None

    return {
        "genuine_probes": attempts.genuine_total,
        "genuine_attempts": genuine,
        "genuine_accepted": genuine_accepted,
        "genuine_accept_rate": rate(genuine_accepted, genuine),
        "genuine_accept_rate_of_probes": rate(genuine_accepted, attempts.genuine_total),
        "impostor_attempts": impostors,
        "false_accepts": false_accepts,
        "false_accept_rate": rate(false_accepts, impostors),
        "to_serve": to_serve(attempts, normalised),
    }


SERVE_GOAL = 0.95  # issue 21, point 5: of all riders, the claim step serves this share


def to_serve(attempts: Attempts, normalised: Floats, share: float = SERVE_GOAL) -> dict[str, Any]:
    """What a 1:1 threshold loose enough to accept ``share`` of *all* genuine probes
    (unencoded ones count as refused) would cost in false accepts on the same attempts, on
    the normalised score alone; ``threshold`` is None when fewer probes were encoded."""
    needed = math.ceil(share * attempts.genuine_total)
    ordered = np.sort(normalised[attempts.genuine])
    impostor = normalised[~attempts.genuine]
    if needed > len(ordered) or needed == 0 or not len(impostor):
        return {"share": share, "threshold": None, "false_accepts": None, "false_accept_rate": None}
    threshold = float(np.nextafter(ordered[needed - 1], np.inf))
    false_accepts = int((impostor < threshold).sum())
    return {
        "share": share,
        "threshold": round(threshold, 4),
        "false_accepts": false_accepts,
        "false_accept_rate": round(false_accepts / len(impostor), 6),
    }
