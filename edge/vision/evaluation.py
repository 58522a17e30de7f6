"""The accuracy harness: enrol from labelled photos, probe with others, count the outcomes.

A folder tree is one sub-folder per identity (the folder name is the label); sub-folders
whose name starts with ``_`` hold unlabelled pictures (groups, no face), which are probed
and reported apart but never scored. Two protocols:

- **one tree, open set** (``open_set_split``): for each identity with more than
  ``per_person`` usable photos, the first ``per_person`` (in name order) are enrolled and
  the others are genuine probes; identities with fewer photos, and a seeded random
  ``holdout`` fraction of the others, are not enrolled and all their photos are unknown
  probes (people the kiosk must refuse). ``rounds`` repeats the draw with seeds
  ``seed, seed+1, ...`` and adds up the counts.
- **open-set protocol** (``open_set_split`` with one photo per person and no holdout, the
  protocol of docs/face-pipeline.md): gallery = the first usable photo of each identity
  with two or more photos, genuine probes = their other photos, unknown probes = every
  single-photo identity. ``halves`` splits the identities in two (seeded) so that a
  policy is calibrated on one half and measured on the other; ``sub_roster`` draws a
  seeded random roster of ``size`` people from a split, everyone else's photos becoming
  unknown probes (``edge.vision.openset`` runs the protocol).
- **two trees** (``two_tree_split``): every usable photo of the first tree is enrolled;
  photos in the second tree are genuine probes when their label is enrolled and unknown
  probes otherwise.

Every photo is encoded once (through the kiosk's single-frame path, quality gate
included). When ``vision.enrol_jitters`` is above 1, the photos that can be enrolled are
encoded a second time as the kiosk enrols them (``with_templates``), and galleries are
built from those templates while probes keep the single-frame encoding (or, with
``--frames``, the fused simulated frames: ``with_frames``).
The splits, the policy and the threshold/margin sweep then work on the encodings in
memory. Nothing is written but the report, which holds no template.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cloud_sync.errors import InputError
from edge.vision.matcher import Gallery, rider_gallery
from edge.vision.policy import (
    CLAIM_REQUIRED,
    MATCH,
    UNREADABLE,
    Candidates,
    Policy,
)
from models.analysis import analyse
from models.encoder import Encoding, FaceEncoder
from models.errors import ImageError
from models.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, Image, read_image, shown_name
from models.quality import QualityConfig


@dataclass(frozen=True)
class Sample:
    """One photo, its identity (``None`` when unlabelled) and, once encoded, its encoding."""

    path: Path
    label: str | None
    encoding: Encoding | None = field(default=None, repr=False)
    reason: str | None = None
    faces: int | None = None
    # the enrolment template of this photo (made as the kiosk enrols), when it may be enrolled
    template: Encoding | None = field(default=None, repr=False)
    # with simulated camera frames (``edge.vision.frames``): the fused encoding of the
    # frames made from this photo and the reason when none passed, used when it probes
    frames: tuple[Encoding | None, str | None] | None = field(default=None, repr=False)

    @property
    def probe(self) -> Encoding | None:
        """What this photo probes with: its fused frames, else its encoding."""
        return self.encoding if self.frames is None else self.frames[0]

    @property
    def probe_reason(self) -> str | None:
        return self.reason if self.frames is None else self.frames[1]

    @property
    def enrolled_as(self) -> Encoding | None:
        """What a gallery holds for this photo: its enrolment template, else its encoding."""
        return self.template if self.template is not None else self.encoding


def enrolment_candidates(samples: Sequence[Sample], per_person: int | None) -> list[Sample]:
    """The photos a split may enrol: the first ``per_person`` usable photos of each
    identity (``None``: every usable labelled photo, as ``two_tree_split`` enrols)."""
    taken: Counter[str] = Counter()
    chosen = []
    for sample in samples:
        if sample.label is None or sample.encoding is None:
            continue
        if per_person is None or taken[sample.label] < per_person:
            taken[sample.label] += 1
            chosen.append(sample)
    return chosen


def with_frames(samples: Sequence[Sample], fused: Sequence[Sample]) -> list[Sample]:
    """``samples`` probing with the fused frames in ``fused`` (the same photos, each
    encoded by ``edge.vision.frames.encode_frames``)."""
    made = {f.path: (f.encoding, f.reason) for f in fused}
    return [replace(s, frames=made[s.path]) if s.path in made else s for s in samples]


def with_templates(samples: Sequence[Sample], templates: Sequence[Sample]) -> list[Sample]:
    """``samples`` with the enrolment template of each photo in ``templates`` (the same
    photos encoded by the enrolment engine) attached."""
    made = {t.path: t.encoding for t in templates if t.encoding is not None}
    return [
        replace(s, template=made[s.path]) if s.path in made and s.encoding is not None else s
        for s in samples
    ]


def collect(folder: Path) -> list[Sample]:
    """Every photo of a labelled tree, in name order."""
    if not folder.is_dir():
        raise InputError(
            f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder"
        )
    samples = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = None if sub.name.startswith("_") else sub.name
        for path in sorted(sub.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path, label))
    if not samples:
        raise InputError(f"{folder}: holds no photos in per-identity sub-folders")
    return samples


def encode_samples(
    engine: FaceEncoder,
    samples: Iterable[Sample],
    quality: QualityConfig,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[int], None] | None = None,
) -> list[Sample]:
    """Each sample through the single-frame path: its encoding, or the reason there is none."""
    done = []
    for number, sample in enumerate(samples, start=1):
        image = read_sample(sample, max_pixels)
        if image is None:
            done.append(Sample(sample.path, sample.label, None, UNREADABLE, None))
        else:
            found = analyse(engine, image, quality)
            done.append(
                Sample(sample.path, sample.label, found.encoding, found.reason, found.faces)
            )
        if progress is not None:
            progress(number)
    return done


def read_sample(sample: Sample, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image | None:
    """The sample's picture, or None when it cannot be read (the sample is then
    ``UNREADABLE``)."""
    try:
        return read_image(sample.path, max_pixels)
    except ImageError:
        return None


# How a list of samples is encoded: ``encode_samples``, or ``frames.encode_frames``.
Encode = Callable[[FaceEncoder, Sequence[Sample], QualityConfig, int], list[Sample]]


@dataclass(frozen=True)
class Split:
    gallery: list[Sample]
    genuine: list[Sample]
    unknown: list[Sample]
    unlabelled: list[Sample]


def _by_label(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.label is not None:
            groups.setdefault(sample.label, []).append(sample)
    return groups


def open_set_split(
    samples: Sequence[Sample], per_person: int = 1, holdout: float = 0.0, seed: int = 0
) -> Split:
    """Enrol the first ``per_person`` usable photos of each identity; see the module docstring."""
    groups = _by_label(samples)
    eligible = sorted(
        label
        for label, items in groups.items()
        if sum(s.encoding is not None for s in items) >= per_person and len(items) > per_person
    )
    held_out = set(random.Random(seed).sample(eligible, round(holdout * len(eligible))))
    split = Split([], [], [], [s for s in samples if s.label is None])
    for label, items in sorted(groups.items()):
        if label not in eligible or label in held_out:
            split.unknown.extend(items)
            continue
        enrolled = [s for s in items if s.encoding is not None][:per_person]
        split.gallery.extend(enrolled)
        split.genuine.extend(s for s in items if s not in enrolled)
    return split


HALVES = ("A", "B")


def halves(samples: Sequence[Sample], seed: int) -> dict[str, set[str]]:
    """The identities split into halves ``A`` and ``B`` by a seeded shuffle."""
    labels = sorted({s.label for s in samples if s.label is not None})
    random.Random(seed).shuffle(labels)
    cut = (len(labels) + 1) // 2
    return {"A": set(labels[:cut]), "B": set(labels[cut:])}


def restrict(samples: Sequence[Sample], labels: set[str]) -> list[Sample]:
    """The samples of these identities (unlabelled samples are dropped)."""
    return [s for s in samples if s.label is not None and s.label in labels]


def sub_roster(split: Split, size: int, seed: int) -> Split:
    """``size`` people of ``split``'s gallery (seeded); everybody else becomes unknown."""
    enrolled = sorted({s.label or "" for s in split.gallery})
    if size >= len(enrolled):
        return split
    chosen = set(random.Random(seed).sample(enrolled, size))
    left_out = [s for s in split.gallery + split.genuine if s.label not in chosen]
    return Split(
        [s for s in split.gallery if s.label in chosen],
        [s for s in split.genuine if s.label in chosen],
        split.unknown + left_out,
        split.unlabelled,
    )


def two_tree_split(enrol: Sequence[Sample], probe: Sequence[Sample]) -> Split:
    """Enrol every usable photo of ``enrol``; probe with ``probe``."""
    gallery = [s for s in enrol if s.encoding is not None and s.label is not None]
    known = {s.label for s in gallery}
    return Split(
        gallery,
        [s for s in probe if s.label is not None and s.label in known],
        [s for s in probe if s.label is not None and s.label not in known],
        [s for s in probe if s.label is None],
    )


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome (no template): what the policy said and the two nearest people.

    ``claim`` is, for a genuine probe the policy sent to the claim step, what verifying it
    against its own rider gave (``match`` or a refusal reason), as if the rider typed
    their claim.
    """

    image: str
    kind: str  # "genuine", "unknown" or "unlabelled"
    truth: str | None
    person_id: str | None
    distance: float | None
    margin: float | None
    reason: str
    nearest: tuple[tuple[str, float], ...] = ()
    own_distance: float | None = None  # genuine: to the true identity's nearest template
    other_distance: float | None = None  # to the nearest person who is not the truth
    score: float | None = None
    claim: str | None = None


def split_gallery(split: Split, fuse: bool = True) -> Gallery:
    """The gallery of ``split``'s enrolled photos as the kiosk builds it: cohorts computed,
    and with ``fuse`` (``vision.fuse_templates``) one mean template per rider."""
    enrolled = [(s.label or "", s.enrolled_as) for s in split.gallery]
    people = [person for person, vector in enrolled if vector is not None]
    return rider_gallery(people, [vector for _, vector in enrolled if vector is not None], (), fuse)


def run_probes(
    split: Split,
    policy: Policy,
    verifier: Policy | None = None,
    with_distances: bool = True,
    fuse: bool = True,
) -> list[ProbeResult]:
    """Decide every probe of ``split`` against a gallery of its enrolled photos
    (``split_gallery``).

    With ``verifier``, a genuine probe sent to the claim step is also verified 1:1 against
    its own rider (``ProbeResult.claim``).
    """
    gallery = split_gallery(split, fuse)
    owners = np.array(gallery.person_ids, dtype=object)
    results = []
    for kind, probes in (
        ("genuine", split.genuine),
        ("unknown", split.unknown),
        ("unlabelled", split.unlabelled),
    ):
        for sample in probes:
            probe = sample.probe
            if probe is None:
                results.append(
                    ProbeResult(
                        shown_name(sample.path),
                        kind,
                        sample.label,
                        None,
                        None,
                        None,
                        sample.probe_reason or "no face",
                    )
                )
                continue
            candidates: Candidates = gallery.search(probe)
            decision = policy.decide(candidates)
            own = other = None
            if with_distances and len(gallery) and sample.label is not None:
                distances = gallery.distances(probe)
                mine = owners == sample.label
                own = float(distances[mine].min()) if mine.any() else None
                other = float(distances[~mine].min()) if (~mine).any() else None
            claim = None
            if verifier is not None and kind == "genuine" and decision.reason == CLAIM_REQUIRED:
                own_rider = gallery.verify(probe, [sample.label or ""])
                claim = verifier.decide(own_rider).reason
            results.append(
                ProbeResult(
                    shown_name(sample.path),
                    kind,
                    sample.label,
                    decision.person_id,
                    decision.distance,
                    decision.margin,
                    decision.reason,
                    tuple((c.person_id, c.distance) for c in candidates.nearest),
                    own,
                    other,
                    decision.score,
                    claim,
                )
            )
    return results


def count(results: Sequence[ProbeResult]) -> dict[str, Any]:
    """Correct, wrong-person, missed, unknown-accepted, and the rates."""
    genuine = [r for r in results if r.kind == "genuine"]
    unknown = [r for r in results if r.kind == "unknown"]
    unlabelled = [r for r in results if r.kind == "unlabelled"]
    correct = sum(r.person_id is not None and r.person_id == r.truth for r in genuine)
    wrong = sum(r.person_id is not None and r.person_id != r.truth for r in genuine)
    accepted_unknown = sum(r.person_id is not None for r in unknown)
    claimed = sum(r.claim == MATCH for r in genuine)

    def rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "genuine": len(genuine),
        "correct": correct,
        "wrong_person": wrong,
        "missed": len(genuine) - correct - wrong,
        "unknown": len(unknown),
        "unknown_accepted": accepted_unknown,
        "unknown_rejected": len(unknown) - accepted_unknown,
        "unlabelled": len(unlabelled),
        "unlabelled_accepted": sum(r.person_id is not None for r in unlabelled),
        "recognition_rate": rate(correct, len(genuine)),
        "wrong_person_rate": rate(wrong, len(genuine)),
        "unknown_accept_rate": rate(accepted_unknown, len(unknown)),
        "missed_reasons": dict(Counter(r.reason for r in genuine if r.person_id is None)),
        "claim_required": sum(r.reason == CLAIM_REQUIRED for r in genuine),
        "verified_with_claim": claimed,
        "recognised_with_claim_rate": rate(correct + claimed, len(genuine)),
    }
