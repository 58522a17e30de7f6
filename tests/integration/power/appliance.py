"""The kiosk's outbox writers and its sync daemon as processes the power-loss tests cut.

    python -m tests.integration.power.appliance append OUTBOX KIOSK TYPE COUNT
    python -m tests.integration.power.appliance writer OUTBOX KIOSK
    python -m tests.integration.power.appliance sync OUTBOX KIOSK URL KEY_DIR
    python -m tests.integration.power.appliance runtime STATE_DIR
    python -m tests.integration.power.appliance claim LEDGER COUNT
    python -m tests.integration.power.appliance busy LEDGER COMMAND_FILE
    python -m tests.integration.power.appliance roster FOLDER KIOSK URL PINNED_KEY COUNT [GO]
    python -m tests.integration.power.appliance lock DATABASE

Each event ``append`` returned for is printed at once (``ack SEQ ID TYPE``): it is what the
kiosk has acknowledged (a rental it told the rider about). ``append`` then waits, its
connection open, as the kiosk does between events, until it is killed. ``writer`` appends
rentals and face telemetry for ever; ``sync`` runs the real daemon's passes for ever;
``runtime`` rewrites ``runtime.json`` for ever (``wrote N`` after each); ``claim`` claims
remote command ids in the command ledger (``claimed ID``), then waits; ``busy`` answers
the signed command in a file "busy" (no room to run it) as the MQTT link does, acknowledging
it (``acknowledged ID``) once its answer is owed, then waits; ``roster`` pulls
the cloud's roster changes (``pulled VERSION ERROR``; with ``GO``, a file, only once it
exists, after ``ready``), then waits; ``lock`` holds a database's write lock (``locked``)
until it is killed, as a busy writer in another process does.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync import keyfiles
from cloud_sync.batching import BatchLimits
from cloud_sync.client import CloudClient
from cloud_sync.daemon import SyncDaemon
from cloud_sync.mqtt.executor import CommandExecutor
from cloud_sync.mqtt.ledger import CommandLedger
from cloud_sync.outbox import Outbox
from cloud_sync.signing import kiosk_key
from edge.ops.runtime_status import new_status, write_runtime_status
from edge.vault.live import open_roster

#: The cloud's command key in the command tests (fixed: the test signs, the part verifies).
COMMAND_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
COMMAND_KIOSK = "kiosk-c"


def fields(event_type: str, n: int) -> dict[str, object]:
    if event_type == "rental.started":
        return {
            "rental_id": f"r-{n}-{time.monotonic_ns()}",
            "person_id": f"p{n % 7}",
            "slot": 1 + n % 8,
            "powerbank_id": f"pb-{n}",
            "request_id": f"q{n}",
        }
    if event_type == "face.recognised":
        return {"person_id": f"p{n % 7}", "distance": 0.31, "model": "dlib-resnet-v1"}
    raise SystemExit(f"unknown event type {event_type}")


def append(outbox: Outbox, event_type: str, n: int) -> None:
    event = outbox.append(event_type, **fields(event_type, n))
    if event is not None:
        print(f"ack {event.seq} {event.id} {event_type}", flush=True)


def rewrite_runtime_status(state_dir: Path) -> None:
    """What ``kiosk run`` does every few seconds, as fast as it can: replace runtime.json."""
    for n in itertools.count():
        write_runtime_status(state_dir, new_status(phase=f"p{n}", counts={"rentals": n}))
        print(f"wrote {n}", flush=True)


def claim_commands(path: Path, count: int) -> None:
    """What the MQTT executor does before a remote command runs: claim its id."""
    ledger = CommandLedger(path)
    for n in range(count):
        if ledger.claim(f"cmd-{n}", "eject", "ops:test", time.time() + 600):
            print(f"claimed cmd-{n}", flush=True)
    print("done", flush=True)
    while True:
        time.sleep(3600)


def answer_busy(path: Path, command_file: Path) -> None:
    """What the MQTT link does with an authentic command that finds no room: answer it
    "busy", then acknowledge its message to the broker."""
    raw = command_file.read_bytes()
    executor = CommandExecutor(
        COMMAND_KIOSK, COMMAND_KEY.public_key(), CommandLedger(path), handlers={}, slots=8
    )
    command_id = json.loads(raw)["id"]
    executor.busy(raw, recorded=lambda: print(f"acknowledged {command_id}", flush=True))
    print("done", flush=True)
    while True:
        time.sleep(3600)


def pull_roster(
    folder: Path, kiosk_id: str, url: str, pinned: str, count: int, go: Path | None = None
) -> None:
    """What the daemon does on its roster schedule: pull the cloud's changes, ``count``
    times (``pulled VERSION`` after each; once ``go`` exists, if given), then wait."""
    key = keyfiles.read_private_key(folder / "kiosk.pem", Ed25519PrivateKey)  # type: ignore[type-abstract]
    outbox = Outbox(folder / "outbox.sqlite", kiosk_id)
    store = open_roster(folder / "roster.sqlite", folder / "keys", kiosk_id, pinned)
    client = CloudClient(url, kiosk_id, key, timeout_s=5)
    daemon = SyncDaemon(outbox, client, BatchLimits(50, 1024 * 1024, 0.5), roster=store)
    print("ready", flush=True)
    while go is not None and not go.exists():
        time.sleep(0.01)
    for _ in range(count):
        pulled = daemon.pull_roster()
        print(f"pulled {pulled.to_version} {pulled.error}", flush=True)
    print("done", flush=True)
    while True:
        time.sleep(3600)


def hold_lock(path: Path) -> None:
    """Another writer in the middle of a transaction on ``path``, until it is killed."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    while True:
        time.sleep(3600)


def main(argv: list[str]) -> None:
    if argv[0] == "lock":
        hold_lock(Path(argv[1]))
    if argv[0] == "roster":
        go = Path(argv[6]) if len(argv) > 6 else None
        pull_roster(Path(argv[1]), argv[2], argv[3], argv[4], int(argv[5]), go)
    if argv[0] == "runtime":
        rewrite_runtime_status(Path(argv[1]))
    if argv[0] == "claim":
        claim_commands(Path(argv[1]), int(argv[2]))
    if argv[0] == "busy":
        answer_busy(Path(argv[1]), Path(argv[2]))
    command, path, kiosk_id = argv[0], Path(argv[1]), argv[2]
    outbox = Outbox(path, kiosk_id)
    if command == "append":
        for n in range(int(argv[4])):
            append(outbox, argv[3], n)
        print("done", flush=True)
        while True:
            time.sleep(3600)
    elif command == "writer":
        for n in itertools.count():
            append(outbox, "rental.started", n)
            append(outbox, "face.recognised", n)
            append(outbox, "face.recognised", n)
            time.sleep(0.005)  # a busy kiosk, not a benchmark: the daemon's passes end
    elif command == "sync":
        client = CloudClient(argv[3], kiosk_id, kiosk_key(Path(argv[4])), timeout_s=5)
        daemon = SyncDaemon(outbox, client, BatchLimits(50, 1024 * 1024, 0.5))
        while True:
            result = daemon.sync_once()
            print(f"pass {result.sent} {result.quarantined} {result.error}", flush=True)
            time.sleep(0.05)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
