"""A seq the cloud already holds for another event is never a silent quarantine: the kiosk
learns the cloud's highest seq from its answer and renumbers what the cloud has not
stored, keeping the events' ids (an outbox restored from an old copy, or made again under
the same kiosk id, after a card was replaced). Real outbox files, real cloud under uvicorn.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ulid import ULID

from cloud_sync.outbox import Outbox
from cloud_sync.outbox_seq import parse_conflict
from cloud_sync.signing import kiosk_key
from tests.helpers import run_cli
from tests.integration.sync.cloudkit import Cloud, Kiosk, make_kiosk
from tests.integration.sync.test_sync_cli import cli_kiosk, kiosk_env

pytestmark = pytest.mark.service


def test_a_new_outbox_under_a_known_kiosk_renumbers_its_rentals_past_the_cloud(
    tmp_path: Path, cloud: Cloud
) -> None:
    (tmp_path / "old").mkdir()
    old = make_kiosk(tmp_path / "old", "kiosk-s")
    cloud.register(old.kiosk_id, old.key)
    old.rent(3)
    assert old.daemon(cloud.url).sync_once().accepted == 3
    old.outbox.close()

    (tmp_path / "new").mkdir()
    fresh = Kiosk(old.kiosk_id, old.key, Outbox(tmp_path / "new" / "outbox.sqlite", "kiosk-s"))
    fresh.rent(2, start=100)
    before = {event.id: event.seq for event in fresh.outbox.events()}
    assert sorted(before.values()) == [1, 2]  # numbers the cloud already holds
    result = fresh.daemon(cloud.url).sync_once()
    assert (result.error, result.quarantined, result.renumbered) == (None, 0, 2)
    assert fresh.outbox.count("quarantined") == 0 and fresh.outbox.count("pending") == 0
    after = {event.id: event.seq for event in fresh.outbox.events()}
    assert after == dict(zip(before, [4, 5], strict=True))  # the same ids, new numbers
    stored = {e["id"]: e["seq"] for e in cloud.events("kiosk-s")}
    assert len(stored) == 5 and all(stored[i] == seq for i, seq in after.items())
    fresh.rent(1, start=200)  # the counter moved past the cloud's numbers for good
    assert [event.seq for event in fresh.outbox.events("pending")] == [6]
    fresh.outbox.close()


def test_the_clouds_conflict_answer_names_its_highest_seq(tmp_path: Path, cloud: Cloud) -> None:
    kiosk = make_kiosk(tmp_path, "kiosk-t")
    cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(4)
    assert kiosk.daemon(cloud.url).sync_once().accepted == 4
    [event] = kiosk.outbox.events(limit=1)
    other = json.loads(event.to_json())
    other["id"] = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    body = json.dumps({"kiosk_id": "kiosk-t", "batch_id": str(ULID()), "events": [other]}).encode()
    answer = cloud.signed("kiosk-t", kiosk.key, body)
    assert answer.status_code == 422, answer.text
    [rejected] = answer.json()["rejected"]
    conflict = parse_conflict(rejected["reason"])
    assert conflict is not None and (conflict.seq, conflict.stored_max) == (1, 4)
    kiosk.outbox.close()


def test_kiosk_sync_now_says_it_renumbered_and_exits_0(tmp_path: Path, cloud: Cloud) -> None:
    """A technician's view: the rentals go through, and the command says why their
    numbers changed; nothing shows as quarantined in ``kiosk sync status``."""
    state = tmp_path / "kiosk"
    cli_kiosk(state, cloud)
    old = Outbox(tmp_path / "old.sqlite", "kiosk-cli")
    Kiosk("kiosk-cli", kiosk_key(state), old).rent(2)
    assert Kiosk("kiosk-cli", kiosk_key(state), old).daemon(cloud.url).sync_once().accepted == 2
    old.close()
    fresh = Outbox(state / "outbox.sqlite", "kiosk-cli")
    Kiosk("kiosk-cli", kiosk_key(state), fresh).rent(1, start=50)
    fresh.close()
    sent = run_cli("sync", "now", env=kiosk_env(state, cloud.url))
    assert sent.returncode == 0, sent.stderr
    assert "renumbered 1 events past the cloud's highest seq" in sent.stdout
    assert "0 quarantined, 0 still pending" in sent.stdout
    status = run_cli("sync", "status", env=kiosk_env(state, cloud.url))
    assert status.returncode == 0, status.stderr
    assert re.search(r"^quarantined\s+0$", status.stdout, re.MULTILINE), status.stdout
    assert [e["seq"] for e in cloud.events("kiosk-cli")] == [1, 2, 3]
