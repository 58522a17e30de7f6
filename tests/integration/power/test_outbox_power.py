"""Power cuts under the outbox and the sync daemon: no acknowledged money event is lost,
nothing leaves the kiosk before it is on its disk, and no sequence number the cloud holds
is given to another event (so the cloud never refuses a rental after a cut).

Real parts: the outbox (SQLite, WAL) on LazyFS, written and synced by processes that the
cut SIGKILLs; the cloud API under uvicorn on its own disk.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.outbox import Outbox
from cloud_sync.signing import kiosk_key
from tests.integration.power.kit import Part, earlier_boot, outbox_rows
from tests.integration.power.lazyfs import PowerFolder
from tests.integration.sync.cloudkit import Cloud, Kiosk, gated_cloud

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]

KIOSK = "kiosk-p"


class HoldAfterStore:
    """ASGI middleware: once the cloud stored a batch, its answer waits until ``release``
    (the power goes while the daemon waits for it, before it can ``mark_sent``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state
        self.stored = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("events:batch"):
            await self.app(scope, receive, send)
            return

        async def held_send(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                self.stored.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.01)
            await send(message)

        await self.app(scope, receive, held_send)


@pytest.fixture
def holding_cloud(tmp_path: Path) -> Iterator[tuple[Cloud, HoldAfterStore]]:
    with gated_cloud(tmp_path / "cloud.sqlite", HoldAfterStore) as (running, holder):
        try:
            yield running, holder
        finally:
            holder.release.set()


def test_a_telemetry_event_sent_then_cut_keeps_its_seq_and_the_next_rental_is_taken(
    power: PowerFolder, holding_cloud: tuple[Cloud, HoldAfterStore], tmp_path: Path
) -> None:
    """The issue's cut: telemetry (committed at NORMAL) is sent, the cloud stores it, the
    power goes before ``mark_sent``. The next rental must not reuse its seq."""
    cloud, hold = holding_cloud
    cloud.register(KIOSK, kiosk_key(tmp_path))
    path = power.path / "outbox.sqlite"
    writer = Part("append", str(path), KIOSK, "face.recognised", "1")
    syncer: Part | None = None
    try:
        writer.wait_for("done")
        syncer = Part("sync", str(path), KIOSK, cloud.url, str(tmp_path))
        assert hold.stored.wait(30), syncer.errors()
    finally:
        writer.kill()
        if syncer is not None:
            syncer.kill()
    power.cut()
    power.mount()
    hold.release.set()
    [(seq, sent_id, _)] = writer.acknowledged()
    [stored] = cloud.events(KIOSK)
    assert (stored["seq"], stored["id"]) == (seq, sent_id)

    outbox = Outbox(path, KIOSK)
    try:
        assert [row[:2] for row in outbox_rows(path)] == [(seq, sent_id)]  # durable when sent
        rental = outbox.append("rental.started", rental_id="r-after-cut", person_id="p1",
                               slot=2, powerbank_id="pb-2", request_id="q-after")  # fmt: skip
        assert rental is not None and rental.seq > seq  # a restart may skip reserved ones
        result = Kiosk(KIOSK, kiosk_key(tmp_path), outbox).daemon(cloud.url).sync_once()
        assert (result.error, result.quarantined, outbox.count("quarantined")) == (None, 0, 0)
    finally:
        outbox.close()
    assert [(e["seq"], e["id"]) for e in cloud.events(KIOSK)] == [
        (seq, sent_id),
        (rental.seq, rental.id),
    ]


def test_random_cuts_under_a_writer_and_the_daemon_lose_no_acknowledged_rental(
    power: PowerFolder, cloud: Cloud, tmp_path: Path
) -> None:
    """Five cuts at random moments while rentals and face telemetry are written and the
    daemon syncs: every acknowledged rental is kept and reaches the cloud, no seq the
    cloud holds is given to another event, nothing is quarantined, no file is corrupt."""
    rng = random.Random(23)
    cloud.register(KIOSK, kiosk_key(tmp_path))
    path = power.path / "outbox.sqlite"
    acknowledged: dict[str, int] = {}  # money event id -> seq
    for _ in range(5):
        writer = Part("writer", str(path), KIOSK)
        syncer = Part("sync", str(path), KIOSK, cloud.url, str(tmp_path))
        try:
            writer.wait_acknowledged(4)
            threading.Event().wait(rng.uniform(0.1, 1.0))
        finally:
            syncer.kill()
            writer.kill()
        for seq, event_id, kind in writer.acknowledged():
            if kind == "rental.started":
                acknowledged[event_id] = seq
        power.cut()
        power.mount()
        rows = outbox_rows(path)
        kept = {event_id: seq for seq, event_id, _, _ in rows}
        assert {i: kept.get(i) for i in acknowledged} == acknowledged  # none lost, none moved
        assert all(state != "quarantined" for *_, state in rows)
        stored = {e["seq"]: e["id"] for e in cloud.events(KIOSK)}
        assert all(stored.get(seq, event_id) == event_id for seq, event_id, _, _ in rows)
    outbox = Outbox(path, KIOSK)
    try:
        result = Kiosk(KIOSK, kiosk_key(tmp_path), outbox).daemon(cloud.url).sync_once()
        assert (result.error, outbox.count("pending"), outbox.count("quarantined")) == (None, 0, 0)
        rows = outbox_rows(path)
    finally:
        outbox.close()
    stored = {e["id"]: e["seq"] for e in cloud.events(KIOSK)}
    assert {i: stored.get(i) for i in acknowledged} == acknowledged
    assert stored == {event_id: seq for seq, event_id, _, _ in rows}
    assert power.cuts == 6


def test_a_number_a_cut_took_back_is_never_given_again(power: PowerFolder) -> None:
    """Telemetry is committed without an fsync, so a cut may lose the last few: the
    numbers they had were acknowledged to their writer and are never handed out again."""
    path = power.path / "outbox.sqlite"
    Outbox(path, KIOSK).close()
    earlier_boot(power, power.path)
    writer = Part("append", str(path), KIOSK, "face.recognised", "150")
    try:
        writer.wait_for("done")
    finally:
        writer.kill()
    handed_out = max(seq for seq, _, _ in writer.acknowledged())
    assert handed_out == 150
    power.cut()
    power.mount()
    kept = [seq for seq, *_ in outbox_rows(path)]
    assert max(kept, default=0) < handed_out, "the cut took no telemetry back: nothing shown"
    after = Part("append", str(path), KIOSK, "rental.started", "1")
    try:
        after.wait_for("done")
    finally:
        after.kill()
    [(seq, _, _)] = after.acknowledged()
    assert seq > handed_out, f"seq {seq} was handed out before the cut"
