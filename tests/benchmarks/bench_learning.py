"""Templates that learn: the next visits with learning off and on, in the same run.

Riders: every ``dev/`` person with at least three usable photos except the last
``HELD_OUT`` of them, enrolled from their first photo, in a roster filled up to ``ROSTER`` (400, the largest calibrated size)
people with one photo each of ``lfw-dev`` people (so the policy works at a realistic
operating point, not at 13 people). Each further photo of a rider is a visit, in order:
round k is every rider's k-th visit. Strangers: the held-out ``dev/`` people (every photo)
and ``STRANGERS`` other ``lfw-dev`` people; all of them walk up after every round, against
the roster as it stands then.

A visit is decided by the shipped policy (automatically right, wrong person, claim, or
unknown); a claim is checked by the shipped claim step with the rider typing their code.
With learning on, a visit decided ``very_confident`` or verified by the claim step is
proposed (``edge.runtime.learning``) and goes through the cloud's rules
(``cloud_sync.server.learning.learned_record``: lookalike, drift from the enrolment
templates, at most ``MAX_LEARNED``); the kiosk's gallery is then rebuilt as the kiosk
builds it (templates fused per rider). Strangers also try the claim step as an attacker
who knows the code of the rider they are nearest to (the worst case): how many get
through, and how many of those the cloud would learn from.

Three probe modes: ``photos`` (each visit is one photo's encoding), ``frames`` (each
visit is 3 simulated camera frames of the photo, fused, as the live pipeline does;
``edge.vision.frames``) and ``kiosk`` (each visit is the photo as a kiosk camera gives it:
640 px wide, face 50-80 px, dim, noisy, JPEG; ``edge.vision.degrade``; a visit the gate
refuses counts as ``no_face``). Enrolment is always the first photo as it is; strangers
probe with their photos as they are.

Run: ``.venv/bin/python -m tests.benchmarks.bench_learning`` (or ``scripts/bench learning``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cloud_sync.claim_code import hash_claim
from cloud_sync.roster_wire import RiderRecord, Template
from cloud_sync.server import learning as cloud_learning
from edge.config import VisionSection
from edge.runtime.learning import very_confident
from edge.vision import setup
from edge.vision.claim import check_claim
from edge.vision.degrade import degrade_photo
from edge.vision.evaluation import Sample, collect, encode_samples, read_sample
from edge.vision.frames import encode_frames
from edge.vision.matcher import Gallery, rider_gallery
from edge.vision.policy import CLAIM_REQUIRED, MATCH, CohortPolicy
from models.analysis import analyse
from tests.benchmarks.common import SHARED_FACES, quick, report

HELD_OUT = 4  # dev people kept out of the roster: strangers who look like the riders' photos
ROSTER = 400
STRANGERS = 150
CODE = "4821"


@dataclass
class Tally:
    visits: Counter[str] = field(default_factory=Counter)
    by_round: dict[int, Counter[str]] = field(default_factory=dict)
    strangers: Counter[str] = field(default_factory=Counter)
    proposals: Counter[str] = field(default_factory=Counter)

    def add(self, round_no: int, what: str) -> None:
        self.visits[what] += 1
        self.by_round.setdefault(round_no, Counter())[what] += 1


def _first_by_label(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.label is not None and sample.encoding is not None:
            found.setdefault(sample.label, []).append(sample)
    return found


def _gallery(records: dict[str, RiderRecord], model: str) -> Gallery:
    people, vectors = [], []
    for person, record in records.items():
        for template in record.templates:
            if template.model == model:
                people.append(person)
                vectors.append(template.vector)
    return rider_gallery(people, vectors, [p for p, r in records.items() if r.lookalike])


def run_arm(
    learn: bool,
    riders: dict[str, list[Sample]],
    filler: dict[str, np.ndarray],
    strangers: list[Sample],
    policy: CohortPolicy,
    verifier: Any,
    model: str,
) -> Tally:
    records: dict[str, RiderRecord] = {
        person: RiderRecord(person, (Template(model, np.asarray(photos[0].enrolled_as)),))
        for person, photos in riders.items()
    }
    for person, vector in filler.items():
        records[person] = RiderRecord(person, (Template(model, vector),))
    claim_hash = hash_claim(CODE, log2_n=10)
    claims: dict[str, str | None] = dict.fromkeys(records, claim_hash)
    gallery = _gallery(records, model)
    tally = Tally()
    rounds = max(len(photos) for photos in riders.values()) - 1
    for round_no in range(1, rounds + 1):
        changed = False
        for person, photos in riders.items():
            if round_no >= len(photos):
                continue
            if photos[round_no].probe is None:  # refused by the gate (kiosk frames)
                tally.add(round_no, "no_face")
                continue
            probe = np.asarray(photos[round_no].probe)
            decision = policy.decide(gallery.search(probe))
            reason = None
            if decision.reason == MATCH:
                right = decision.person_id == person
                tally.add(round_no, "auto_right" if right else "wrong_person")
                if right and very_confident(
                    decision.distance, decision.margin, policy.max_distance, policy.min_margin
                ):
                    reason = "confident_match"
            elif decision.reason == CLAIM_REQUIRED:
                result = check_claim(gallery, probe, CODE, {person: claims[person]}, verifier)
                served = result.person_id == person
                tally.add(round_no, "claim_served" if served else "claim_refused")
                if served:
                    reason = "claim_verified"
            else:
                tally.add(round_no, "unknown")
            if learn and reason is not None:
                tally.proposals[reason] += 1
                try:
                    records[person] = cloud_learning.learned_record(records[person], probe, model)
                    tally.proposals["accepted"] += 1
                    changed = True
                except cloud_learning.Refused as refused:
                    tally.proposals[f"refused_{refused.why}"] += 1
        if changed:
            gallery = _gallery(records, model)
        for stranger in strangers:
            if stranger.probe is None:
                continue
            probe = np.asarray(stranger.probe)
            near = gallery.search(probe)
            decision = policy.decide(near)
            tally.strangers["tries"] += 1
            if decision.reason == MATCH:
                tally.strangers["auto_accepted"] += 1
                continue
            if decision.reason != CLAIM_REQUIRED or near.best is None:
                continue
            target = near.best.person_id  # the attacker knows this rider's code
            result = check_claim(gallery, probe, CODE, {target: claims[target]}, verifier)
            if result.person_id is None:
                continue
            tally.strangers["claim_accepted"] += 1
            if learn and target in riders:
                try:
                    cloud_learning.learned_record(records[target], probe, model)
                    tally.strangers["would_learn"] += 1
                except cloud_learning.Refused as refused:
                    tally.strangers[f"refused_{refused.why}"] += 1
    return tally


def summary(tally: Tally) -> dict[str, Any]:
    visits = sum(tally.visits.values())
    later = Counter[str]()
    for round_no, counts in tally.by_round.items():
        if round_no >= 2:
            later.update(counts)
    later_n = sum(later.values())
    tries = tally.strangers["tries"] or 1
    return {
        "visits": visits,
        **dict(tally.visits),
        "auto_rate": round(tally.visits["auto_right"] / visits, 4) if visits else None,
        "later_visits": later_n,
        "later_auto_rate": round(later["auto_right"] / later_n, 4) if later_n else None,
        "later_wrong_person": later["wrong_person"],
        "by_round": {str(k): dict(v) for k, v in sorted(tally.by_round.items())},
        "stranger_tries": tally.strangers["tries"],
        "strangers_auto_accepted": tally.strangers["auto_accepted"],
        "strangers_auto_rate": round(tally.strangers["auto_accepted"] / tries, 5),
        "strangers_claim_accepted": tally.strangers["claim_accepted"],
        "strangers_would_learn": tally.strangers["would_learn"],
        "strangers_refused": {k: v for k, v in tally.strangers.items() if k.startswith("refused_")},
        "proposals": dict(tally.proposals),
    }


def main() -> None:
    vision = VisionSection()
    engine = setup.engine(vision)
    policy = setup.policy(vision)
    assert isinstance(policy, CohortPolicy)
    verifier = setup.claim_policy(vision)
    quality = setup.quality_config(vision.quality)
    model = engine.model_version
    roster_size = 60 if quick() else ROSTER
    strangers_n = 20 if quick() else STRANGERS
    started = time.monotonic()

    dev = [s for s in collect(SHARED_FACES / "dev") if s.label is not None]
    dev_photos = encode_samples(engine, dev, quality)
    dev_frames = encode_frames(engine, dev, quality, count=3)
    people = _first_by_label(dev_photos)
    usable = sorted(p for p, photos in people.items() if len(photos) >= 3)
    enrolled, held = usable[:-HELD_OUT], set(usable[-HELD_OUT:]) | (set(people) - set(usable))

    lfw = collect(SHARED_FACES / "lfw-dev")
    lfw_people: dict[str, Sample] = {}
    for sample in lfw:  # one photo per person, in name order
        if sample.label is not None and sample.label not in lfw_people:
            lfw_people[sample.label] = sample
    names = sorted(lfw_people)
    need_filler = roster_size - len(enrolled)
    picked = encode_samples(
        engine, [lfw_people[n] for n in names[: need_filler + strangers_n]], quality
    )
    usable_lfw = [s for s in picked if s.encoding is not None]
    filler = {f"lfw:{s.label}": np.asarray(s.encoding) for s in usable_lfw[:need_filler]}
    lfw_strangers = usable_lfw[need_filler : need_filler + strangers_n]

    results: dict[str, Any] = {
        "roster": len(enrolled) + len(filler),
        "riders": len(enrolled),
        "held_out_dev_people": sorted(held),
        "rules": {
            "kiosk_confident": "distance <= max_distance - 0.12 and margin >= 3 x min_margin",
            "cloud_max_drift": cloud_learning.MAX_DRIFT,
            "cloud_max_learned": cloud_learning.MAX_LEARNED,
        },
    }
    dev_kiosk = []
    for sample in dev:  # each visit as a kiosk camera frame (edge.vision.degrade)
        image = read_sample(sample)
        found = (
            None
            if image is None
            else analyse(engine, degrade_photo(engine, image, sample.path), quality)
        )
        dev_kiosk.append(
            Sample(sample.path, sample.label, None if found is None else found.encoding)
        )
    rows = []
    for mode, encoded in (("photos", dev_photos), ("frames", dev_frames), ("kiosk", dev_kiosk)):
        by_label = _first_by_label(
            [
                p if mode == "photos" else replace(p, frames=(f.encoding, f.reason))
                for p, f in zip(dev_photos, encoded, strict=True)
            ]
        )
        riders = {p: by_label[p] for p in enrolled if p in by_label and len(by_label[p]) >= 2}
        strangers = [s for p in sorted(held) for s in by_label.get(p, [])] + lfw_strangers
        for learn in (False, True):
            arm = summary(run_arm(learn, riders, filler, strangers, policy, verifier, model))
            results[f"{mode}_{'on' if learn else 'off'}"] = arm
            rows.append((mode, "on" if learn else "off", arm))
    results["seconds"] = round(time.monotonic() - started, 1)
    table = [
        {
            "mode": mode,
            "learning": learn_text,
            "visits": arm["visits"],
            "auto_right": arm.get("auto_right", 0),
            "wrong_person": arm.get("wrong_person", 0),
            "claim_served": arm.get("claim_served", 0),
            "claim_refused": arm.get("claim_refused", 0),
            "unknown": arm.get("unknown", 0),
            "no_face": arm.get("no_face", 0),
            "auto_rate": arm["auto_rate"],
            "later_auto_rate": arm["later_auto_rate"],
            "stranger_tries": arm["stranger_tries"],
            "strangers_auto": arm["strangers_auto_accepted"],
            "strangers_claim": arm["strangers_claim_accepted"],
            "strangers_learnable": arm["strangers_would_learn"],
            "learned": arm["proposals"].get("accepted", 0),
        }
        for mode, learn_text, arm in rows
    ]
    report("learning", table, results)


if __name__ == "__main__":
    main()
