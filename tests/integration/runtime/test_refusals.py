"""A recognised rider turned away leaves a trace: ``kiosk run`` (a subprocess) replays the
photo of a rider whose account is on hold, who walks up again and again; the outbox, then
the cloud after a sync, hold ``rider.refused`` events with the person id, the reason and a
count, never a picture or a template, and far fewer events than refusals.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.outbox import Outbox
from cloud_sync.roster_wire import Entitlements, RiderRecord, Template
from edge.ops.runtime_status import read_runtime_status
from edge.vault.live import open_roster
from hardware.sim import BoardSimulator
from models.encoder import FaceEngine
from models.images import read_image
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import config, events, frames, start, stop, wait_for
from tests.integration.sync.cloudkit import Kiosk, start_cloud

board = test_runtime.board
engine = test_runtime.engine

LOOKS = 3  # the first refusal and at least two more, all inside the minute that counts them


def enrol_on_hold(state: Path, engine: FaceEngine, photo: Path) -> None:
    image = read_image(photo)
    vector = engine.encode(image, max(engine.detect(image), key=lambda box: box.area))
    store = open_roster(state / "roster.sqlite", state / "keys", "kiosk-e2e")
    record = RiderRecord(
        "Asha Example", (Template(engine.model_version, vector),), Entitlements(may_rent=False)
    )
    store.enrol("rider-3", record)
    store.close()


def refusals(state: Path) -> list[dict[str, object]]:
    return [event for event in events(state) if event["type"] == "rider.refused"]


def looks(state: Path) -> int:
    """The faces the running kiosk has recognised so far (its ``runtime.json``)."""
    status = read_runtime_status(state)
    return 0 if status is None else status.counts.get("recognised", 0)


def test_a_rider_on_hold_is_refused_and_the_refusals_reach_the_cloud(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol_on_hold(tmp_path, engine, dev_faces / "person_03" / "01.jpg")
    # 2 s of the rider's face, 1.5 s of nobody, again and again
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 16, blanks=12)
    path = config(tmp_path, images, board.path, camera={"loop": True})
    process = start(path)
    try:
        # the watch starts at the first refusal, however long the kiosk took to start
        wait_for(lambda: refusals(tmp_path) or process.poll() is not None, timeout=60)
        # the rider walks up again and again (however slowly a loaded machine replays it)
        wait_for(lambda: looks(tmp_path) >= LOOKS or process.poll() is not None, timeout=40)
        time.sleep(0.5)  # the last look's refusal reaches the flow
        assert process.poll() is None, process.communicate()[1][-3000:]
        while_running = refusals(tmp_path)
    finally:
        err = stop(process) if process.poll() is None else process.communicate()[1]
    # the first refusal at once; the repeats of the minute are counted, recorded at the stop
    assert len(while_running) == 1, err[-3000:]
    assert while_running[0]["payload"] == {"person_id": "rider-3", "reason": "blocked", "count": 1}
    recorded = refusals(tmp_path)
    assert len(recorded) == 2, err[-3000:]
    counts = [event["payload"]["count"] for event in recorded]  # type: ignore[index]
    assert counts[0] == 1 and counts[1] >= 2, recorded  # several looks, two events
    assert board.ejects == []
    assert "rental.started" not in {event["type"] for event in events(tmp_path)}

    # the sync carries them to the cloud as they are: no picture, no template
    cloud = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}")
    try:
        key = Ed25519PrivateKey.generate()
        cloud.register("kiosk-e2e", key)
        outbox = Outbox(tmp_path / "outbox.sqlite", "kiosk-e2e")
        try:
            result = Kiosk("kiosk-e2e", key, outbox).daemon(cloud.url).sync_once()
        finally:
            outbox.close()
        assert result.error is None and result.quarantined == 0, result
        stored = [event for event in cloud.events("kiosk-e2e") if event["type"] == "rider.refused"]
    finally:
        cloud.stop()
    payloads = [_payload(event) for event in stored]
    assert payloads == [event["payload"] for event in recorded]
    for payload in payloads:
        assert set(payload) == {"person_id", "reason", "count"}  # no picture, no template


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    payload = event["payload"]
    loaded: dict[str, Any] = json.loads(payload) if isinstance(payload, str) else payload
    return loaded
