"""The kiosk's own limits on template proposals hold across a restart: they count what the
real outbox file holds, not what one process remembers."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cloud_sync.outbox import Outbox
from cloud_sync.roster_wire import Entitlements
from edge.runtime.learning import DAY_S, TemplateLearner, proposals_in
from edge.vault.values import Rider

KIOSK = "kiosk-7"
KEY = ("0123456789abcdef", os.urandom(32))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def rider(person_id: str) -> Rider:
    return Rider(person_id, 1, person_id, Entitlements(), None)


def learner(outbox: Outbox, clock: Clock) -> TemplateLearner:
    return TemplateLearner(
        KIOSK,
        "dlib_resnet_v1",
        lambda: KEY,
        outbox.append,
        per_day=2,
        min_gap_s=1800.0,
        clock=clock,
        earlier=proposals_in(outbox),
    )


def propose(learner: TemplateLearner, person_id: str) -> bool:
    encoding = np.full(128, 0.08, dtype=np.float64)
    return learner.propose(rider(person_id), (encoding,), "claim_verified", 0.3, None)


def test_a_restarted_kiosk_still_counts_the_day_s_proposals(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    path = tmp_path / "outbox.db"
    outbox = Outbox(path, KIOSK, clock=clock.utc)
    first = learner(outbox, clock)
    assert propose(first, "rider-1")
    clock.now += 600  # the same visit: one proposal only
    assert not propose(first, "rider-1")
    clock.now += 3600
    assert propose(first, "rider-1")
    outbox.close()

    # the kiosk restarts: a new process, the same file
    outbox = Outbox(path, KIOSK, clock=clock.utc)
    restarted = learner(outbox, clock)
    clock.now += 3600
    assert not propose(restarted, "rider-1")  # two in the last 24 hours already
    assert propose(restarted, "rider-2")  # another rider has their own count
    clock.now += 600
    assert not propose(restarted, "rider-2")  # and their own visit gap
    clock.now = 1_800_000_000.0 + DAY_S + 60  # the first proposal is a day old
    assert propose(restarted, "rider-1")
    kinds = [e.type for e in outbox.events()]
    outbox.close()
    assert kinds == ["template.proposed"] * 4


def test_a_restart_within_a_visit_does_not_propose_the_same_visit_twice(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    path = tmp_path / "outbox.db"
    outbox = Outbox(path, KIOSK, clock=clock.utc)
    assert propose(learner(outbox, clock), "rider-1")
    outbox.close()
    clock.now += 120
    outbox = Outbox(path, KIOSK, clock=clock.utc)
    assert not propose(learner(outbox, clock), "rider-1")
    outbox.close()


def test_the_restart_count_reads_only_proposals_through_their_index(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    outbox = Outbox(tmp_path / "outbox.db", KIOSK, clock=clock.utc)
    for number in range(200):  # a busy kiosk's other events
        outbox.append("kiosk.started", version=str(number), mode="rental")
    assert propose(learner(outbox, clock), "rider-1")
    found = outbox.recent_of("template.proposed", clock.now - DAY_S)
    plan = outbox.connection.execute(
        "EXPLAIN QUERY PLAN SELECT body FROM events WHERE type = ? ORDER BY seq",
        ["template.proposed"],
    ).fetchall()
    outbox.close()
    assert [e.type for e in found] == ["template.proposed"]
    assert any("events_type" in str(row) for row in plan), plan
