"""A kiosk whose roster is past the face policy's calibrated size decides automatically
among its automatic set only: ``kiosk run``'s parts with a real face photo, the board
simulator and a roster of 430 riders (one real, the rest random templates far from any
face). A rider in the set rents at a look; a rider outside it is offered the claim step,
not refused; with no set, every rider is asked for a claim, as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloud_sync.roster_wire import RiderRecord, Template
from cloud_sync.signing import public_key_text
from edge.vault.keys import device_keys
from edge.vault.live import open_roster
from hardware.sim import BoardSimulator
from models.encoder import FaceEngine
from models.images import read_image
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import config, frames, running, wait_for
from tests.vault_helpers import Cloud

board = test_runtime.board
engine = test_runtime.engine
FILLERS = 430  # past the 410 riders the shipped operating points decide automatically for


def big_roster(state: Path, engine: FaceEngine, photo: Path, chosen: list[str] | None) -> str:
    """rider-3 from ``photo`` and random riders; ``chosen`` is the automatic set, applied
    from a delta signed by a cloud roster key. Returns that key, which the kiosk pins."""
    image = read_image(photo)
    vector = engine.encode(image, max(engine.detect(image), key=lambda box: box.area))
    store = open_roster(state / "roster.sqlite", state / "keys", "kiosk-e2e")
    model = engine.model_version
    store.enrol("rider-3", RiderRecord("Asha Example", (Template(model, vector),)))
    rng = np.random.default_rng(7)
    for n in range(FILLERS):
        random = rng.normal(size=128).astype(np.float32)
        random *= 1.2 / np.linalg.norm(random)  # far from every real face
        store.enrol(f"filler-{n:03d}", RiderRecord(f"Filler {n}", (Template(model, random),)))
    store.close()
    cloud = Cloud("kiosk-e2e", device_keys(state / "keys"))
    pinned = public_key_text(cloud.roster_key)
    if chosen is not None:
        store = open_roster(state / "roster.sqlite", state / "keys", "kiosk-e2e", pinned)
        try:
            delta = cloud.delta(store.version, store.version + 1, model=model, auto_set=chosen)
            assert store.apply_delta(delta).auto_set == len(chosen)
        finally:
            store.close()
    return pinned


def test_a_rider_in_the_automatic_set_rents_at_a_look(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    pinned = big_roster(
        tmp_path, engine, dev_faces / "person_03" / "01.jpg", ["rider-3", "filler-001"]
    )
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=60)
    roster = {"cloud_roster_key": pinned}
    with running(config(tmp_path, images, board.path, roster=roster)) as kiosk:
        wait_for(lambda: any(s["key"] == "take" for s in kiosk.screens), timeout=60)
        assert not any(s["key"] == "claim" for s in kiosk.screens)
    assert len(board.ejects) == 1


def test_a_rider_outside_the_set_is_offered_the_claim_step_not_refused(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    pinned = big_roster(tmp_path, engine, dev_faces / "person_03" / "01.jpg", ["filler-001"])
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 40)
    roster = {"cloud_roster_key": pinned}
    camera = {"loop": True}
    with running(config(tmp_path, images, board.path, camera=camera, roster=roster)) as kiosk:
        wait_for(lambda: kiosk.shows("claim"), timeout=60)
        assert not any(s["key"] == "not_recognised" for s in kiosk.screens)
    assert board.ejects == []
