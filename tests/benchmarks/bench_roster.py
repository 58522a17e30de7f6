"""Encrypted roster: time and peak memory to load, decrypt and index N riders, and to
apply a delta of 1,000 changes. Baseline in the same run: the same templates stored in
clear in SQLite and loaded into a matrix (what a store without encryption would cost).

Targets: 100,000 riders ready to match within 5 s, peak RSS under 400 MB.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from cloud_sync.roster_wire import Upsert
from tests.benchmarks.common import quick, report
from tests.vault_helpers import Cloud, open_store, record

LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from tests.benchmarks.common import peak_rss_mb
    start = time.perf_counter()
    from edge.vault.live import LiveRoster
    from edge.vault.keys import device_keys
    from edge.vault.store import RosterStore
    import numpy as np
    imported = time.perf_counter()
    folder = Path(sys.argv[1])
    store = RosterStore(folder / "roster.sqlite", device_keys(folder / "keys"), "kiosk-1", "dlib_resnet_v1")
    live = LiveRoster(store)
    ready = time.perf_counter()
    probe = np.zeros(128, dtype=np.float32)
    live.snapshot.gallery.distances(probe)
    print(json.dumps({
        "riders": len(live.snapshot.riders),
        "load_s": ready - imported,
        "total_s": ready - start,
        "peak_rss_mb": peak_rss_mb(),
    }))
    """
)

BASELINE_SCRIPT = textwrap.dedent(
    """
    import json, sqlite3, sys, time
    import numpy as np
    from tests.benchmarks.common import peak_rss_mb
    start = time.perf_counter()
    db = sqlite3.connect(sys.argv[1])
    ids, rows = [], []
    for person_id, blob in db.execute("SELECT person_id, template FROM plain"):
        ids.append(person_id)
        rows.append(np.frombuffer(blob, dtype=np.float32))
    matrix = np.stack(rows)
    norms = np.einsum("ij,ij->i", matrix, matrix)
    print(json.dumps({"riders": len(ids), "load_s": time.perf_counter() - start,
                      "peak_rss_mb": peak_rss_mb()}))
    """
)


def run_json(script: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    sizes = [1_000, 5_000] if quick() else [10_000, 100_000]
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            store = open_store(folder)
            cloud = Cloud("kiosk-1", store._keys)
            store._roster_public = cloud.roster_key.public_key()
            upserts = [Upsert(f"rider-{i:06d}", 1, record(f"Rider {i}", i)) for i in range(size)]
            began = time.perf_counter()
            snapshot = cloud.delta(0, 1, upserts, full=True)
            built = time.perf_counter()
            store.apply_delta(snapshot)
            applied = time.perf_counter()
            changes = [Upsert(f"rider-{i:06d}", 2, record(f"Rider {i}", i + 1)) for i in range(500)]
            deletions = [f"rider-{i:06d}" for i in range(size - 500, size)]
            delta = cloud.delta(1, 2, changes, deletions=deletions)
            t0 = time.perf_counter()
            store.apply_delta(delta)
            delta_s = time.perf_counter() - t0
            store.close()
            loaded = run_json(LOAD_SCRIPT, str(folder))
            plain = folder / "plain.sqlite"
            with sqlite3.connect(plain) as db:
                db.execute("CREATE TABLE plain (person_id TEXT PRIMARY KEY, template BLOB)")
                db.executemany(
                    "INSERT INTO plain VALUES (?, ?)",
                    ((u.person_id, u.record.templates[0].vector.tobytes()) for u in upserts),
                )
            baseline = run_json(BASELINE_SCRIPT, str(plain))
            rows.append(
                {
                    "riders": size,
                    "load_decrypt_index_s": round(loaded["load_s"], 3),
                    "with_imports_s": round(loaded["total_s"], 3),
                    "peak_rss_mb": round(loaded["peak_rss_mb"], 1),
                    "plain_load_s": round(baseline["load_s"], 3),
                    "encrypted_vs_plain": round(loaded["load_s"] / baseline["load_s"], 1),
                    "snapshot_seal_s": round(built - began, 2),
                    "snapshot_apply_s": round(applied - built, 2),
                    "delta_1000_apply_s": round(delta_s, 3),
                }
            )
    report(
        "roster",
        rows,
        {"target": "100,000 riders ready within 5 s with peak RSS under 400 MB"},
    )


if __name__ == "__main__":
    main()
