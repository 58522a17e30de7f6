"""The encrypted roster store on real SQLite files: deltas, tampering, deletion, crashes."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from cloud_sync.errors import DeltaError, VersionGapError
from cloud_sync.outbox import Outbox
from cloud_sync.roster_owed import record_owed
from cloud_sync.roster_wire import ApplyResult, RosterAnswer, Upsert
from edge.vault.errors import KeyFileError, StoreError
from edge.vault.keys import device_keys
from edge.vault.store import RosterStore
from tests.vault_helpers import MODEL, Cloud, open_store, record, template


@pytest.fixture
def cloud(tmp_path: Path) -> Cloud:
    keys = device_keys(tmp_path / "keys", create=True)
    return Cloud("kiosk-1", keys)


def riders(count: int, start: int = 0, version: int = 1) -> list[Upsert]:
    return [
        Upsert(f"rider-{i}", version, record(f"Name{i}", i)) for i in range(start, start + count)
    ]


def disk_bytes(store_path: Path) -> bytes:
    data = store_path.read_bytes()
    wal = store_path.with_name(store_path.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def test_full_snapshot_then_delta(tmp_path: Path, cloud: Cloud) -> None:
    store = open_store(tmp_path, cloud)
    result = store.apply_delta(cloud.delta(0, 5, riders(3), full=True))
    assert (result.to_version, result.upserts) == (5, 3)
    loaded = store.load()
    assert loaded.version == 5
    assert sorted(loaded.riders) == ["rider-0", "rider-1", "rider-2"]
    assert loaded.riders["rider-1"].display_name == "Name1"
    assert (dict(loaded.templates[MODEL])["rider-2"] == template(2)).all()
    store.apply_delta(
        cloud.delta(5, 6, [Upsert("rider-9", 1, record("Nine", 9))], deletions=["rider-0"])
    )
    loaded = store.load()
    assert sorted(loaded.riders) == ["rider-1", "rider-2", "rider-9"]
    assert store.info().version == 6


def test_nothing_personal_is_on_disk_in_clear(tmp_path: Path, cloud: Cloud) -> None:
    store = open_store(tmp_path, cloud)
    store.apply_delta(cloud.delta(0, 1, riders(2), full=True))
    store.enrol("local-1", record("Zebedee Quimby", 77))
    raw = disk_bytes(store.path)
    for seed in (0, 1, 77):
        assert template(seed).tobytes()[:16] not in raw
    for name in (b"Name0", b"Name1", b"Zebedee"):
        assert name not in raw


def receipted(store: RosterStore, folder: Path) -> None:
    """What the sync pass does right after applying a delta: the erasure receipt the roster
    owes (the rider's id, kept in the roster until the outbox holds it) goes to the outbox."""
    outbox = Outbox(folder / "outbox.sqlite", "kiosk-a")
    try:
        assert record_owed(store, outbox) >= 1
        assert [
            e.payload.model_dump()["person_id"] for e in outbox.recent_of("roster.erased", 0)
        ] == ["rider-1"]
    finally:
        outbox.close()


def test_deleted_rider_leaves_no_bytes_in_database_or_wal(tmp_path: Path, cloud: Cloud) -> None:
    store = open_store(tmp_path, cloud)
    store.apply_delta(cloud.delta(0, 1, riders(3), full=True))
    with sqlite3.connect(store.path) as db:
        (sealed,) = db.execute("SELECT sealed FROM riders WHERE person_id = 'rider-1'").fetchone()
    assert sealed[20:52] in disk_bytes(store.path)
    store.apply_delta(cloud.delta(1, 2, deletions=["rider-1"]))
    receipted(store, tmp_path)
    raw = disk_bytes(store.path)
    assert sealed[20:52] not in raw
    assert sealed[-32:] not in raw
    assert b"rider-1" not in raw
    assert "rider-1" not in store.load().riders


def test_a_reader_in_another_process_does_not_keep_a_deleted_rider_on_disk(
    tmp_path: Path, cloud: Cloud
) -> None:
    store = open_store(tmp_path, cloud)
    store.apply_delta(cloud.delta(0, 1, riders(3), full=True))
    with sqlite3.connect(store.path) as db:
        (sealed,) = db.execute("SELECT sealed FROM riders WHERE person_id = 'rider-1'").fetchone()
    # the kiosk service reading the roster at the moment the delete lands: its snapshot
    # keeps the WAL from being copied back and truncated until it finishes
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sqlite3, sys, time
                db = sqlite3.connect({str(store.path)!r}, isolation_level=None)
                db.execute("BEGIN")
                db.execute("SELECT count(*) FROM riders").fetchone()
                print("reading", flush=True)
                time.sleep(0.6)
                db.execute("COMMIT")
                db.close()
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
    store.apply_delta(cloud.delta(1, 2, deletions=["rider-1"]))
    assert reader.wait(timeout=10) == 0
    receipted(store, tmp_path)
    raw = disk_bytes(store.path)
    assert sealed[20:52] not in raw and b"rider-1" not in raw
    wal = store.path.with_name(store.path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("target", ["ciphertext", "signature", "version"])
def test_tampered_delta_is_refused_and_the_roster_kept(
    tmp_path: Path, cloud: Cloud, target: str
) -> None:
    store = open_store(tmp_path, cloud)
    store.apply_delta(cloud.delta(0, 1, riders(2), full=True))
    envelope = json.loads(cloud.delta(1, 2, riders(1, start=5)))
    if target == "ciphertext":
        sealed = bytearray(base64.b64decode(envelope["delta"]["upserts"][0]["sealed"]))
        sealed[30] ^= 0x01
        envelope["delta"]["upserts"][0]["sealed"] = base64.b64encode(bytes(sealed)).decode()
    elif target == "signature":
        signature = bytearray(base64.b64decode(envelope["signature"]))
        signature[5] ^= 0x01
        envelope["signature"] = base64.b64encode(bytes(signature)).decode()
    else:
        envelope["delta"]["to_version"] = 3
    with pytest.raises(DeltaError, match="signature does not verify"):
        store.apply_delta(json.dumps(envelope).encode())
    assert store.version == 1
    assert sorted(store.load().riders) == ["rider-0", "rider-1"]


def test_truncated_delta(tmp_path: Path, cloud: Cloud) -> None:
    store = open_store(tmp_path, cloud)
    raw = cloud.delta(0, 1, riders(2), full=True)
    with pytest.raises(DeltaError, match="malformed or truncated"):
        store.apply_delta(raw[: len(raw) // 2])
    assert store.version == 0


def test_delta_for_another_kiosk(tmp_path: Path, cloud: Cloud) -> None:
    other_keys = device_keys(tmp_path / "other", create=True)
    stranger = Cloud("kiosk-1", other_keys, roster_key=cloud.roster_key)
    store = open_store(tmp_path, cloud)
    with pytest.raises(DeltaError, match="for another kiosk"):
        store.apply_delta(stranger.delta(0, 1, riders(1), full=True))
    with pytest.raises(DeltaError, match="for another kiosk"):
        store.apply_delta(cloud.delta(0, 1, riders(1), full=True, kiosk_id="kiosk-2"))
    assert store.version == 0


def test_replayed_and_gapped_deltas(tmp_path: Path, cloud: Cloud) -> None:
    store = open_store(tmp_path, cloud)
    first = cloud.delta(0, 1, riders(1), full=True)
    store.apply_delta(first)
    with pytest.raises(DeltaError, match="not newer"):
        store.apply_delta(first)
    with pytest.raises(VersionGapError, match="full snapshot is needed"):
        store.apply_delta(cloud.delta(3, 4, riders(1, start=3)))
    store.apply_delta(cloud.delta(0, 9, riders(1, start=7), full=True))
    assert sorted(store.load().riders) == ["rider-7"]


def test_an_up_to_date_statement_counts_only_for_its_own_request(
    tmp_path: Path, cloud: Cloud
) -> None:
    store = open_store(tmp_path, cloud)
    store.apply_delta(cloud.delta(0, 2, riders(1), full=True))
    mine, other = "a" * 32, "b" * 32
    answer = RosterAnswer(cloud.current(2, mine), mine, 200)
    assert store.apply_answer(answer) == ApplyResult(2, 2, 0, 0)
    with pytest.raises(DeltaError, match="no request to be checked against"):
        store.apply_delta(cloud.current(2, mine))  # from a file: nothing shows it is fresh
    refusals = {
        "answers another request": RosterAnswer(cloud.current(2, other), mine, 200),
        "names version 1 but this kiosk holds 2": RosterAnswer(cloud.current(1, mine), mine, 200),
        "for another kiosk": RosterAnswer(cloud.current(2, mine, kiosk_id="kiosk-2"), mine, 200),
        "empty \\(HTTP 204\\)": RosterAnswer(b"", mine, 204),
    }
    for reason, refused in refusals.items():
        with pytest.raises(DeltaError, match=reason):
            store.apply_answer(refused)
    assert store.version == 2 and sorted(store.load().riders) == ["rider-0"]


def test_a_delta_from_the_cloud_must_answer_the_request_it_came_for(
    tmp_path: Path, cloud: Cloud
) -> None:
    store = open_store(tmp_path, cloud)
    mine = "c" * 32
    for raw, reason in (
        (cloud.delta(0, 1, riders(1), full=True, nonce="d" * 32), "another nonce"),
        (cloud.delta(0, 1, riders(1), full=True), "carries no nonce"),
    ):
        with pytest.raises(DeltaError, match=reason):
            store.apply_answer(RosterAnswer(raw, mine, 200))
    assert store.version == 0
    bound = cloud.delta(0, 1, riders(1), full=True, nonce=mine)
    assert store.apply_answer(RosterAnswer(bound, mine, 200)).to_version == 1


def test_unknown_model_is_refused(tmp_path: Path, cloud: Cloud) -> None:
    store = open_store(tmp_path, cloud)
    with pytest.raises(DeltaError, match="encoder model"):
        store.apply_delta(cloud.delta(0, 1, riders(1), full=True, model="arcface_v9"))


def test_no_pinned_cloud_key(tmp_path: Path, cloud: Cloud) -> None:
    store = open_store(tmp_path)
    with pytest.raises(DeltaError, match="no cloud roster key"):
        store.apply_delta(cloud.delta(0, 1, riders(1), full=True))


def test_key_files_with_loose_permissions_are_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    device_keys(keys, create=True)
    for path in keys.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
    (keys / "kiosk-x25519.pem").chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        device_keys(keys)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="missing"):
        device_keys(tmp_path / "nokeys")


def test_wrong_kiosk_keys_cannot_read_a_stolen_roster(tmp_path: Path, cloud: Cloud) -> None:
    store = open_store(tmp_path, cloud)
    store.apply_delta(cloud.delta(0, 1, riders(2), full=True))
    store.close()
    thief = RosterStore(store.path, device_keys(tmp_path / "thief", create=True), "kiosk-1", MODEL)
    with pytest.raises(StoreError, match="cannot open data key"):
        thief.load()


def test_corrupt_database_file(tmp_path: Path) -> None:
    path = tmp_path / "roster.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    with pytest.raises(StoreError, match="roster database"):
        RosterStore(path, device_keys(tmp_path / "keys", create=True), "kiosk-1", MODEL)


def test_local_key_rotation_forgets_the_old_key(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.enrol("a", record("A", 1))
    store.enrol("b", record("B", 2))
    old = store.info().data_key_id
    new = store.rotate_key()
    assert new != old
    with sqlite3.connect(store.path) as db:
        held = [key for (key,) in db.execute("SELECT key_id FROM data_keys")]
    assert held == [new]
    assert sorted(store.load().riders) == ["a", "b"]


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys, signal
    from pathlib import Path
    from edge.vault.store import RosterStore
    from edge.vault.keys import device_keys
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives import serialization

    folder = Path(sys.argv[1])
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(sys.argv[2]))
    store = RosterStore(folder / "roster.sqlite", device_keys(folder / "keys"), "kiosk-1", "dlib_resnet_v1", public)

    class DiesMidway:
        # The real connection, killed by SIGKILL after writing half of the rows.
        def __init__(self, db):
            self.db = db
        def __getattr__(self, name):
            return getattr(self.db, name)
        def executemany(self, sql, rows):
            rows = list(rows)
            self.db.executemany(sql, rows[: len(rows) // 2])
            os.kill(os.getpid(), signal.SIGKILL)

    store._db = DiesMidway(store._db)
    store.apply_delta((folder / "delta.json").read_bytes())
    """
)


def test_sigkill_while_applying_leaves_the_old_roster_whole(tmp_path: Path, cloud: Cloud) -> None:
    store = open_store(tmp_path, cloud)
    store.apply_delta(cloud.delta(0, 1, riders(50), full=True))
    store.close()
    (tmp_path / "delta.json").write_bytes(
        cloud.delta(1, 2, riders(200, start=100), deletions=["rider-3"])
    )
    public_hex = cloud.roster_key.public_key().public_bytes_raw().hex()
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), public_hex],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert crashed.returncode == -9, crashed.stderr
    reopened = open_store(tmp_path, cloud)
    loaded = reopened.load()
    assert loaded.version == 1
    assert len(loaded.riders) == 50 and "rider-3" in loaded.riders
    reopened.apply_delta((tmp_path / "delta.json").read_bytes())
    assert len(reopened.load().riders) == 249


def test_threads_sharing_the_store_never_break_a_write_or_read_a_version_that_was_not(
    tmp_path: Path, cloud: Cloud
) -> None:
    # `kiosk run`: the flow's thread applies and purges while the MQTT and status threads
    # read the version and the counts, all on the store's one connection
    store = open_store(tmp_path, cloud)
    store.apply_delta(cloud.delta(0, 1, riders(2), full=True))
    errors: list[BaseException] = []
    seen: list[int] = []
    done = threading.Event()

    def write(offset: int) -> None:
        try:
            for n in range(15):
                store.enrol(f"local-{offset}-{n}", record(f"Local{n}", 100 + n))
                store.delete(f"local-{offset}-{n}")
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            while not done.is_set():
                seen.append(store.version)
                store.info()
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=60)
    done.set()
    for thread in readers:
        thread.join(timeout=10)
    assert errors == []
    assert seen == sorted(seen), "a reader saw a version go back"
    assert sorted(store.load().riders) == ["rider-0", "rider-1"]
