"""Templates that learn, end to end: real dev photos, the real face model, the kiosk's claim
step and outbox, the sync daemon, the real cloud API on SQLite and PostgreSQL.

A verified visit becomes a ``template.proposed`` event whose encoding is sealed (the bytes
of the outbox file never hold it); the cloud adds it to the rider's record within its
rules, and the kiosk's next pull carries it; a lookalike, a face too far from the
enrolment, a rider over the day's rate and malformed proposals are refused, each with a
recorded reason or a clear 4xx, never a 5xx and never a lost event.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ulid import ULID

from cloud_sync.claim_code import hash_claim
from cloud_sync.roster_wire import RiderRecord, Template
from cloud_sync.server import learning
from cloud_sync.server.roster import CloudRoster
from cloud_sync.template_seal import seal_template
from edge.runtime.claim_step import ClaimStep, claims_of, default_policy
from edge.runtime.learning import TemplateLearner
from edge.vision.claim import ClaimLockout
from edge.vision.consensus import ClaimWindow, fuse
from edge.vision.frames import camera_frames
from edge.vision.live import ClaimNeeded
from edge.vision.setup import gallery_of
from models.analysis import analyse
from models.encoder import FaceEngine
from models.images import read_image
from models.quality import QualityConfig
from tests.integration.sync.cloudkit import CONSENT, Cloud
from tests.integration.sync.test_roster_sync import RosterKiosk, make_roster_kiosk

CODE = "4821"


@pytest.fixture
def cloud(roster_cloud: Cloud) -> Cloud:
    """The roster-serving cloud of conftest, empty, on SQLite and PostgreSQL."""
    return roster_cloud


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


def encodings_of(engine: FaceEngine, photo: Path, frames: int = 1) -> tuple[np.ndarray, ...]:
    """A photo as the kiosk sees it: simulated camera frames through the quality gate."""
    image = read_image(photo)
    pictures = camera_frames(image, frames, seed=7) if frames > 1 else [image]
    found = [analyse(engine, picture, QualityConfig()).encoding for picture in pictures]
    kept = tuple(np.asarray(e, dtype=np.float64) for e in found if e is not None)
    assert kept, f"{photo} gave no encoding"
    return kept


def roster_of(cloud: Cloud) -> CloudRoster:
    roster = cloud.service().roster
    assert roster is not None
    return roster


def enrol(cloud: Cloud, person_id: str, vector: np.ndarray, **extra: Any) -> None:
    cloud.accept_consent_text()
    body = {
        "person_id": person_id,
        "display_name": f"Rider {person_id}",
        "templates": [{"model": roster_of(cloud).model, "vector": vector.tolist()}],
        "consent": CONSENT,
        "claim_hash": hash_claim(CODE, log2_n=10),
        **extra,
    }
    response = cloud.admin("POST", "/v1/admin/riders", json=body)
    assert response.status_code == 201, response.text


def pull(kiosk: RosterKiosk, cloud: Cloud) -> None:
    result = kiosk.daemon(cloud).pull_roster()
    assert result.error is None, result.error


def push(kiosk: RosterKiosk, cloud: Cloud) -> Any:
    result = kiosk.daemon(cloud).sync_once()
    assert result.error is None, result.error
    return result


def learner(kiosk: RosterKiosk, model: str, per_day: int = 10) -> TemplateLearner:
    return TemplateLearner(
        kiosk.kiosk_id,
        model,
        kiosk.store.cloud_data_key,
        kiosk.base.outbox.append,
        per_day=per_day,
        min_gap_s=0.0,
    )


def propose_raw(kiosk: RosterKiosk, person_id: str, vector: np.ndarray, **fields: Any) -> None:
    """A proposal sealed as a kiosk seals it, without the kiosk's own checks (a lookalike,
    a far face): what a tampered or buggy kiosk could send."""
    key = kiosk.store.cloud_data_key()
    assert key is not None
    payload = {
        "person_id": person_id,
        "model": "dlib_resnet_v1",
        "key_id": key[0],
        "sealed": seal_template(key[1], key[0], person_id, kiosk.kiosk_id, vector),
        "reason": "claim_verified",
        "distance": 0.3,
        **fields,
    }
    kiosk.base.outbox.append("template.proposed", **payload)


def kiosk_templates(kiosk: RosterKiosk, person_id: str) -> int:
    loaded = kiosk.store.load()
    return sum(1 for _, pairs in loaded.templates.items() for p, _ in pairs if p == person_id)


def decided(cloud: Cloud, person_id: str) -> list[tuple[str, str]]:
    return [
        (outcome, detail)
        for _, _, outcome, detail in learning.outcomes(roster_of(cloud), person_id)
    ]


def test_a_claim_verified_visit_reaches_the_cloud_sealed_and_the_next_pull_carries_it(
    cloud: Cloud, tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    person = dev_faces / "person_03"
    enrolled = encodings_of(engine, person / "01.jpg")[0]
    enrol(cloud, "rider-3", enrolled)
    kiosk = make_roster_kiosk(tmp_path, cloud)
    pull(kiosk, cloud)
    assert kiosk_templates(kiosk, "rider-3") == 1

    # the kiosk's claim step, on the roster as the kiosk loads it, with the visit's frames
    loaded = kiosk.store.load()
    gallery = gallery_of(loaded, engine.model_version)
    verified_at: list[Any] = []
    claims = ClaimStep(
        default_policy(),
        ClaimLockout(),
        lambda: (gallery, claims_of(loaded.riders)),
        verified_at.append,
        lambda: 0.0,
    )
    frames = encodings_of(engine, person / "02.jpg", frames=3)
    verified = claims.check(ClaimNeeded(1, ClaimWindow(8, frames), gallery.people), CODE)
    assert verified.person_id == "rider-3", verified.reason
    proposer = TemplateLearner(  # the kiosk's own limits: one per visit, two a day
        kiosk.kiosk_id, engine.model_version, kiosk.store.cloud_data_key, kiosk.base.outbox.append
    )
    rider = loaded.riders["rider-3"]
    assert proposer.propose(rider, verified.encodings, "claim_verified", verified.distance, None)
    assert not proposer.propose(rider, verified.encodings, "claim_verified", 0.3, None)

    [event] = [e for e in kiosk.base.outbox.events() if e.type == "template.proposed"]
    assert event.payload.model_dump()["reason"] == "claim_verified"
    fused = np.asarray(fuse(verified.encodings), dtype="<f4").tobytes()
    outbox_path = kiosk.base.outbox.path
    stored = b"".join(
        p.read_bytes() for p in outbox_path.parent.glob(outbox_path.name + "*") if p.is_file()
    )
    for needle in (fused, fused[:16], base64.b64encode(fused)[:24]):
        assert needle not in stored  # neither the raw floats nor their base64
    assert str(round(float(np.frombuffer(fused, "<f4")[0]), 6)).encode() not in stored

    pushed = push(kiosk, cloud)
    assert pushed.accepted >= 1 and pushed.quarantined == 0
    assert decided(cloud, "rider-3") == [("accepted", "learned=1")]
    audit = cloud.admin("GET", "/v1/admin/audit", params={"operator": f"kiosk:{kiosk.kiosk_id}"})
    assert audit.status_code == 200, audit.text
    [entry] = audit.json()
    assert (entry["action"], entry["target"]) == ("template.learned", "rider-3")
    assert entry["detail"]["reason"] == "claim_verified"  # and never a template
    pull(kiosk, cloud)
    assert kiosk_templates(kiosk, "rider-3") == 2
    # the learned template helps: the next photo is nearer the rider's fused template
    after = gallery_of(kiosk.store.load(), engine.model_version)
    probe = fuse(encodings_of(engine, person / "03.jpg", frames=3))
    before_d = gallery.search(probe).best
    after_d = after.search(probe).best
    assert before_d is not None and after_d is not None
    assert after_d.person_id == "rider-3" and after_d.distance < before_d.distance


def test_an_erased_rider_s_proposals_leave_the_kiosk_with_their_receipt(
    cloud: Cloud, tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    """A rider deleted in the cloud: at the kiosk's next pull, their learned-template
    proposals (one sent, one waiting) leave the outbox file and its WAL with the erasure
    receipt; the sealed encoding would open with the data key the kiosk keeps."""
    person = dev_faces / "person_03"
    enrol(cloud, "rider-3", encodings_of(engine, person / "01.jpg")[0])
    enrol(cloud, "rider-5", encodings_of(engine, dev_faces / "person_05" / "01.jpg")[0])
    kiosk = make_roster_kiosk(tmp_path, cloud)
    pull(kiosk, cloud)
    riders = kiosk.store.load().riders
    proposer = learner(kiosk, engine.model_version)
    visits = [encodings_of(engine, person / name, frames=3) for name in ("02.jpg", "03.jpg")]
    assert proposer.propose(riders["rider-3"], visits[0], "claim_verified", 0.3, None)
    push(kiosk, cloud)  # sent, and kept in the outbox until sync.keep_sent_s
    assert proposer.propose(riders["rider-3"], visits[1], "claim_verified", 0.3, None)
    other = encodings_of(engine, dev_faces / "person_05" / "02.jpg", frames=3)
    assert proposer.propose(riders["rider-5"], other, "claim_verified", 0.3, None)
    proposals = [e for e in kiosk.base.outbox.events() if e.type == "template.proposed"]
    sealed = {
        e.payload.model_dump()["person_id"]: e.payload.model_dump()["sealed"] for e in proposals
    }
    assert len(proposals) == 3

    assert cloud.admin("DELETE", "/v1/admin/riders/rider-3").status_code == 200
    pull(kiosk, cloud)

    events = kiosk.base.outbox.events()
    left = [e.payload.model_dump()["person_id"] for e in events if e.type == "template.proposed"]
    assert left == ["rider-5"]  # another rider's proposal stays
    assert any(e.type == "roster.erased" for e in events)
    outbox_path = kiosk.base.outbox.path
    stored = b"".join(
        p.read_bytes() for p in outbox_path.parent.glob(outbox_path.name + "*") if p.is_file()
    )
    for person_id, text in sealed.items():
        assert (text[:40].encode() in stored) == (person_id == "rider-5"), person_id
    # the kiosk's byte count still matches what it holds: the budget is not thrown off
    with sqlite3.connect(outbox_path) as db:
        used, total = db.execute(
            "SELECT (SELECT value FROM meta WHERE key = 'bytes_used'), SUM(size) FROM events"
        ).fetchone()
    assert used == total
    assert push(kiosk, cloud).quarantined == 0


def test_the_cloud_refuses_lookalikes_far_faces_and_the_day_s_excess_and_keeps_a_block(
    cloud: Cloud, tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    own = encodings_of(engine, dev_faces / "person_03" / "01.jpg")[0]
    other = encodings_of(engine, dev_faces / "person_05" / "01.jpg")[0]
    enrol(cloud, "rider-3", own)
    model = roster_of(cloud).model
    roster_of(cloud).add(  # flagged at enrolment (the admin API does not set the flag)
        "twin", RiderRecord("Twin", (Template(model, own.astype(np.float32)),), lookalike=True)
    )
    blocked = cloud.admin("PATCH", "/v1/admin/riders/rider-3", json={"may_rent": False})
    assert blocked.status_code == 200, blocked.text
    kiosk = make_roster_kiosk(tmp_path, cloud)
    pull(kiosk, cloud)

    rng = np.random.default_rng(3)
    near = [own + rng.normal(0, 0.01, 128) for _ in range(5)]
    propose_raw(kiosk, "twin", near[0])  # a lookalike
    propose_raw(kiosk, "rider-3", other)  # another person's face: too far from enrolment
    for vector in near[1:]:  # four close ones: three a day
        propose_raw(kiosk, "rider-3", vector)
    propose_raw(kiosk, "nobody", near[0])  # no such rider
    pushed = push(kiosk, cloud)
    assert pushed.quarantined == 0  # nothing lost: every event accepted
    assert pushed.accepted == len(kiosk.base.outbox.events()) == 8  # with roster.applied
    assert decided(cloud, "twin") == [("refused", "lookalike")]
    assert decided(cloud, "nobody") == [("refused", "unknown_rider")]
    assert sorted(decided(cloud, "rider-3")) == sorted(
        [
            ("refused", "too_far"),
            ("accepted", "learned=1"),
            ("accepted", "learned=2"),
            ("accepted", "learned=3"),
            ("refused", "over_rate"),
        ]
    )
    pull(kiosk, cloud)
    assert kiosk_templates(kiosk, "rider-3") == 4 and kiosk_templates(kiosk, "twin") == 1
    rider = kiosk.store.load().riders["rider-3"]
    assert rider.entitlements.may_rent is False  # the operator's block is still in force
    riders = cloud.admin("GET", "/v1/admin/riders")
    assert riders.status_code == 200, riders.text
    [listed] = [r for r in riders.json() if r["person_id"] == "rider-3"]
    assert listed["may_rent"] is False and listed["templates"] == {model: 4}


def test_learned_templates_are_bounded_and_the_oldest_goes_first(
    cloud: Cloud, tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    own = encodings_of(engine, dev_faces / "person_03" / "01.jpg")[0]
    enrol(cloud, "rider-3", own)
    kiosk = make_roster_kiosk(tmp_path, cloud)
    pull(kiosk, cloud)
    rng = np.random.default_rng(5)
    vectors = [own + rng.normal(0, 0.01, 128) for _ in range(learning.MAX_LEARNED + 2)]
    for vector in vectors:
        propose_raw(kiosk, "rider-3", vector)
    events = [e for e in kiosk.base.outbox.events() if e.type == "template.proposed"]
    roster = roster_of(cloud)
    start = datetime.now(UTC)
    for day, event in enumerate(events):  # one a day: never over the rate
        outcome = learning.consider(roster, event, now=start + timedelta(days=day))
        assert outcome is not None and outcome.outcome == "accepted", outcome
    assert learning.consider(roster, events[0]) is None  # decided once only
    with roster.db.transaction() as tx:
        version, row_key, sealed = tx.rows(
            "SELECT version, key_id, sealed FROM roster_riders WHERE person_id = 'rider-3'"
        )[0]
    record = RiderRecord.from_bytes(
        roster._open(roster.keys.data_key(row_key), "rider-3", version, row_key, sealed)
    )
    assert record.learned == learning.MAX_LEARNED
    assert np.allclose(record.enrolled[0].vector, own.astype(np.float32))
    kept = [t.vector for t in record.templates[1:]]
    expected = [v.astype(np.float32) for v in vectors[-learning.MAX_LEARNED :]]
    assert all(np.allclose(a, b) for a, b in zip(kept, expected, strict=True))


def test_malformed_proposals_get_a_clear_4xx_or_a_recorded_refusal(
    cloud: Cloud, tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    own = encodings_of(engine, dev_faces / "person_03" / "01.jpg")[0]
    enrol(cloud, "rider-3", own)
    kiosk = make_roster_kiosk(tmp_path, cloud)
    pull(kiosk, cloud)
    key = kiosk.store.cloud_data_key()
    assert key is not None
    # sealed for another rider: the associated data does not match, it does not open
    wrong = seal_template(key[1], key[0], "someone-else", kiosk.kiosk_id, own)
    propose_raw(kiosk, "rider-3", own, sealed=wrong)
    propose_raw(kiosk, "rider-3", own, key_id="0123456789abcdef")  # an old data key
    propose_raw(kiosk, "rider-3", own * 40)  # not an encoding's norm
    propose_raw(kiosk, "rider-3", own, reason="confident_match", distance=0.49, margin=0.05)
    pushed = push(kiosk, cloud)
    assert pushed.quarantined == 0
    assert pushed.accepted == len(kiosk.base.outbox.events()) == 5  # with roster.applied
    assert sorted(decided(cloud, "rider-3")) == sorted(
        [
            ("refused", "does_not_open"),
            ("refused", "stale_key"),
            ("refused", "not_an_encoding"),
            ("refused", "not_confident"),
        ]
    )

    def event(payload: dict[str, Any], seq: int) -> dict[str, Any]:
        return {
            "id": str(ULID()),
            "kiosk_id": kiosk.kiosk_id,
            "seq": seq,
            "type": "template.proposed",
            "occurred_at": datetime.now(UTC).isoformat(),
            "schema": 1,
            "payload": payload,
        }

    good = {
        "person_id": "rider-3",
        "model": "dlib_resnet_v1",
        "key_id": key[0],
        "sealed": seal_template(key[1], key[0], "rider-3", kiosk.kiosk_id, own),
        "reason": "claim_verified",
        "distance": 0.3,
    }
    bad_payloads = [
        {**good, "sealed": "not base64!"},
        {**good, "reason": "i_said_so"},
        {**good, "vector": own.tolist()},  # a template in clear is not a field
        {k: v for k, v in good.items() if k != "sealed"},
    ]
    for seq, payload in enumerate(bad_payloads, start=1000):
        body = json.dumps(
            {"kiosk_id": kiosk.kiosk_id, "batch_id": str(ULID()), "events": [event(payload, seq)]}
        ).encode()
        response = cloud.signed(kiosk.kiosk_id, kiosk.base.key, body)
        assert response.status_code == 422, response.text
        assert response.json()["rejected"][0]["reason"].startswith("payload.")
    assert len(decided(cloud, "rider-3")) == 4  # the refused bodies decided nothing
