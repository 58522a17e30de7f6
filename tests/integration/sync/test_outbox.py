"""The outbox on real SQLite files: atomic with the caller's state, durable numbering,
pending/sent/quarantined, the disk budget by class, live-first batches, old files."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cloud_sync import outbox_quarantine
from cloud_sync.batching import BatchLimits
from cloud_sync.closed_pull import closed_cursor, read_fetch_state
from cloud_sync.errors import EventError, OutboxError, OutboxFullError
from cloud_sync.outbox import Outbox
from cloud_sync.outbox_schema import MIGRATIONS, read_stats


def rent(outbox: Outbox, i: int) -> None:
    outbox.append(
        "rental.started",
        rental_id=f"r{i}",
        person_id="p",
        slot=1,
        powerbank_id=f"pb{i}",
        request_id="q",
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.sqlite", "kiosk-a")


def test_pragmas_and_the_first_api_still_work(outbox: Outbox) -> None:
    assert outbox.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert outbox.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    event = outbox.append("kiosk.started", version="1", mode="demo")
    assert event is not None and event.seq == 1
    assert [e.id for e in outbox.events()] == [event.id]
    assert outbox.count() == 1 and outbox.count("pending") == 1


def test_an_event_commits_with_the_callers_state_change_or_not_at_all(outbox: Outbox) -> None:
    outbox.db.execute("CREATE TABLE slots (slot INTEGER PRIMARY KEY, powerbank TEXT)")
    outbox.db.execute("INSERT INTO slots VALUES (1, 'pb1')")
    with pytest.raises(RuntimeError), outbox.transaction() as tx:
        tx.execute("UPDATE slots SET powerbank = NULL WHERE slot = 1")
        tx.append(
            "rental.started",
            rental_id="r1",
            person_id="p",
            slot=1,
            powerbank_id="pb1",
            request_id="q",
        )
        raise RuntimeError("the eject failed")
    assert outbox.count() == 0
    assert outbox.db.execute("SELECT powerbank FROM slots").fetchone()[0] == "pb1"
    with outbox.transaction() as tx:
        tx.execute("UPDATE slots SET powerbank = NULL WHERE slot = 1")
        event = tx.append(
            "rental.started",
            rental_id="r1",
            person_id="p",
            slot=1,
            powerbank_id="pb1",
            request_id="q",
        )
    assert event is not None and tx.events == [event]
    assert outbox.db.execute("SELECT powerbank FROM slots").fetchone()[0] is None
    reopened = Outbox(outbox.path, "kiosk-a")
    assert [e.id for e in reopened.events()] == [event.id]


def test_an_invalid_payload_stores_nothing(outbox: Outbox) -> None:
    with pytest.raises(EventError):
        outbox.append("rental.started", rental_id="r1")
    with pytest.raises(EventError):
        outbox.append("no.such.type")
    assert outbox.count() == 0
    assert outbox.append("kiosk.started", version="1", mode="demo").seq == 1  # type: ignore[union-attr]


def test_transactions_do_not_nest(outbox: Outbox) -> None:
    with pytest.raises(OutboxError), outbox.transaction(), outbox.transaction():
        pass


def test_seq_is_never_reused_even_after_pruning(outbox: Outbox) -> None:
    for i in range(5):
        rent(outbox, i)
    ids = [e.id for e in outbox.events()]
    outbox.mark_sent(ids)
    assert outbox.prune_sent(older_than_s=-1) == 5
    assert outbox.count() == 0
    rent(outbox, 5)
    assert [e.seq for e in outbox.events()] == [6]


def test_states_move_pending_sent_quarantined_and_back(outbox: Outbox) -> None:
    for i in range(4):
        rent(outbox, i)
    events = outbox.events()
    assert outbox.mark_sent([events[0].id, events[0].id]) == 1
    assert len(outbox.quarantine({events[1].seq: "422 bad slot"})) == 1
    stats = outbox.stats()
    assert (stats.pending["money"], stats.sent, stats.quarantined) == (2, 1, 1)
    assert outbox.quarantined() == [(2, events[1].id, "rental.started", "422 bad slot")]
    batch = outbox.next_batch(BatchLimits(10, 10**6), live_window_s=60)
    assert [p.seq for p in batch] == [3, 4], "quarantined and sent events are not resent"
    assert outbox.requeue() == 1
    assert [p.seq for p in outbox.next_batch(BatchLimits(10, 10**6), 60)] == [2, 3, 4]
    assert json.loads(batch[0].body)["seq"] == 3


def test_next_batch_sends_live_events_ahead_of_the_backlog(outbox: Outbox) -> None:
    for i in range(50):
        rent(outbox, i)
    outbox.connection.execute("UPDATE events SET created_at = created_at - 86400")  # a day old
    for i in range(50, 53):
        rent(outbox, i)
    batch = outbox.next_batch(BatchLimits(10, 10**6, live_share=0.5), live_window_s=60)
    assert [p.seq for p in batch] == [1, 2, 3, 4, 5, 6, 7, 51, 52, 53]


def test_status_remembers_the_last_success_and_error(outbox: Outbox) -> None:
    outbox.record_attempt("cannot connect")
    stats = outbox.stats()
    assert stats.last_error == "cannot connect" and stats.last_error_at
    outbox.record_attempt(None)
    stats = outbox.stats()
    assert stats.last_error is None and stats.last_success_at


# -- the disk budget -----------------------------------------------------------------------------


def small(tmp_path: Path, max_bytes: int = 8000) -> Outbox:
    return Outbox(tmp_path / "small.sqlite", "kiosk-a", max_bytes=max_bytes)


def test_telemetry_is_dropped_oldest_first_when_full(tmp_path: Path) -> None:
    outbox = small(tmp_path)
    for i in range(40):
        outbox.append("face.unrecognised", count=1, reason=f"far {i}")
    stats = outbox.stats()
    assert stats.bytes_used <= 8000
    kept = [e.payload.reason for e in outbox.events()]  # type: ignore[union-attr]
    assert kept[-1] == "far 39" and "far 0" not in kept
    assert stats.dropped["telemetry"] == 40 - len(kept)


def test_money_evicts_telemetry_and_ops_but_never_money(tmp_path: Path) -> None:
    outbox = small(tmp_path)
    for _ in range(5):
        outbox.append("face.unrecognised", count=1, reason="far")
        outbox.append("slot.fault", slot=1, code="jam")
    i = 0
    with pytest.raises(OutboxFullError, match="rentals stop"):
        while True:
            rent(outbox, i)
            i += 1
    types = {e.type for e in outbox.events()}
    assert types == {"rental.started"}
    assert outbox.count() == i, "every money event that was accepted is still there"
    stats = outbox.stats()
    assert stats.dropped == {"telemetry": 5, "ops": 5}
    # A low-value event now has no room and is dropped, not an error.
    assert outbox.append("face.unrecognised", count=1, reason="far") is None
    assert outbox.append("slot.fault", slot=1, code="jam") is None


def test_a_full_outbox_refuses_the_rental_and_keeps_the_slot(tmp_path: Path) -> None:
    outbox = small(tmp_path, max_bytes=1000)
    outbox.db.execute("CREATE TABLE slots (slot INTEGER PRIMARY KEY, powerbank TEXT)")
    outbox.db.execute("INSERT INTO slots VALUES (1, 'pb1')")
    rent(outbox, 0)
    rent(outbox, 1)
    with pytest.raises(OutboxFullError), outbox.transaction() as tx:
        tx.execute("UPDATE slots SET powerbank = NULL WHERE slot = 1")
        tx.append(
            "rental.started",
            rental_id="r9",
            person_id="p",
            slot=1,
            powerbank_id="pb1",
            request_id="q",
        )
    assert outbox.db.execute("SELECT powerbank FROM slots").fetchone()[0] == "pb1"


def test_sent_events_make_room_first(tmp_path: Path) -> None:
    outbox = small(tmp_path)
    for i in range(10):
        rent(outbox, i)
    outbox.mark_sent([e.id for e in outbox.events()])
    for i in range(10, 25):
        rent(outbox, i)
    assert outbox.count("pending") == 15
    assert outbox.stats().dropped == {"telemetry": 0, "ops": 0}


# -- files from the first outbox version ------------------------------------------------------------


def test_an_outbox_of_the_first_version_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,"
            " occurred_at TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending')"
        )
        db.execute("CREATE INDEX events_state ON events (state, seq)")
    body = (  # an event written the way the first version did
        '{"id":"01JAAAAAAAAAAAAAAAAAAAAAAA","kiosk_id":"kiosk-a","seq":1,"type":"kiosk.started",'
        '"occurred_at":"2026-01-01T00:00:00Z","schema":1,"payload":{"version":"0.1.0","mode":"demo"}}'
    )
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO events (seq, id, type, occurred_at, body) VALUES (1, ?, 'kiosk.started', ?, ?)",
            ["01JAAAAAAAAAAAAAAAAAAAAAAA", "2026-01-01T00:00:00+00:00", body],
        )
    outbox = Outbox(path, "kiosk-a")
    stats = outbox.stats()
    assert (stats.pending["ops"], stats.last_seq) == (1, 1)
    assert stats.oldest_pending_age_s is not None and stats.oldest_pending_age_s > 86400
    rent(outbox, 1)
    assert [e.seq for e in outbox.events()] == [1, 2]


def test_an_outbox_of_the_second_version_keeps_its_closed_rentals_cursor(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    with sqlite3.connect(path) as db:
        for _name, script in MIGRATIONS[:2]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 2")
        # the second version kept only the cursor, written on the first fetch
        db.execute("INSERT INTO meta (key, value) VALUES ('closed_rentals_cursor', 7)")
    outbox = Outbox(path, "kiosk-a")
    assert outbox.connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 5
    assert closed_cursor(outbox) == 7
    state = read_fetch_state(outbox)
    assert (state.cursor, state.fetched_at, state.closed, state.error) == (7, None, 0, None)
    fresh = read_fetch_state(Outbox(tmp_path / "new.sqlite", "kiosk-a"))
    assert (fresh.cursor, fresh.fetched_at, fresh.success_at) == (0, None, None)


def test_two_processes_worth_of_writers_share_the_file(tmp_path: Path) -> None:
    first = Outbox(tmp_path / "o.sqlite", "kiosk-a")
    second = Outbox(tmp_path / "o.sqlite", "kiosk-a")

    def write(outbox: Outbox) -> None:
        for i in range(100):
            rent(outbox, i)

    threads = [threading.Thread(target=write, args=(o,)) for o in (first, second)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 30
    assert [e.seq for e in first.events()] == list(range(1, 201))


def test_an_outbox_of_the_third_version_reads_and_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    with sqlite3.connect(path) as db:
        for _name, script in MIGRATIONS[:3]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 3")
    with sqlite3.connect(path) as db:  # read as `kiosk sync status` does, without upgrading
        assert read_stats(db, 10**6).failing == 0
        assert outbox_quarantine.failing(db, 10) == []
    outbox = Outbox(path, "kiosk-a")
    rent(outbox, 1)
    assert outbox.record_failure(1, "503 unavailable") == 1
    assert outbox.failing() == [(1, outbox.events()[0].id, "rental.started", 1, "503 unavailable")]
    assert outbox.next_batch(BatchLimits(10, 10**6), 60) == []  # sent alone, not in batches
    assert [p.seq for p in outbox.failing_pending(10)] == [1]


def test_an_outbox_another_process_keeps_busy_is_reported_busy_never_to_be_moved_aside(
    tmp_path: Path,
) -> None:
    """Advice to move a live outbox aside would strand its events: a writer that waited
    out another's lock is told the outbox is busy, and to try again."""
    Outbox(tmp_path / "outbox.sqlite", "kiosk-a").close()
    other = sqlite3.connect(tmp_path / "outbox.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OutboxError) as caught:
            Outbox(tmp_path / "outbox.sqlite", "kiosk-a", busy_timeout_s=0.2)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "the outbox is busy: another process held its write lock for 0.2 s" in str(caught.value)
    assert "try again" in str(caught.value) and "move it aside" not in str(caught.value)
