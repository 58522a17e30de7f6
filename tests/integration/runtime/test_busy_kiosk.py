"""The technician's commands against a running, busy ``kiosk run``: the real ``kiosk`` CLI
as a subprocess beside the real runtime, the board simulator on a pty behind the real
driver, a replayed camera whose pictures the test swaps (an empty scene, then a rider).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hardware.sim import BoardSimulator
from models.encoder import FaceEngine
from tests.helpers import BIN
from tests.integration.ops.test_run_ops import Kiosk
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import (
    BLANK_PNG,
    config,
    enrol,
    events,
    wait_for,
)

pytestmark = [pytest.mark.service, pytest.mark.timeout(240)]


board = test_runtime.board  # the fixtures of kiosk run's own end-to-end tests
engine = test_runtime.engine


def scene(state: Path, count: int = 40) -> Path:
    """A camera folder of ``count`` pictures, each a link the test can point elsewhere."""
    (state / "blank.png").write_bytes(BLANK_PNG)
    folder = state / "frames"
    folder.mkdir()
    for index in range(count):
        (folder / f"{index:03d}.png").symlink_to(state / "blank.png")
    return folder


def show(folder: Path, photo: Path) -> None:
    """From now on the camera sees ``photo`` (each link replaced atomically)."""
    for link in sorted(folder.iterdir()):
        new = link.with_name(f"new-{link.name}.tmp")
        new.symlink_to(photo)
        os.replace(new, link)


def kiosk(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kiosk"), "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cached(path: Path) -> dict[int, dict[str, object]]:
    done = kiosk(path, "slots", "--cached", "--json")
    assert done.returncode == 0, done.stderr
    return {row["slot"]: row for row in json.loads(done.stdout)["slots"]}


def test_slots_disabled_while_kiosk_run_runs_are_never_rented_and_stay_disabled(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    """``kiosk slots disable`` cannot reach the board kiosk run holds: the running kiosk
    still keeps to it (the rental comes from the one slot left), never writes it back,
    and passes it on to the board; the command says so and succeeds."""
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    camera = scene(tmp_path)
    path = config(tmp_path, camera, board.path, flow={"status_every_s": 1})
    running = Kiosk(path)
    try:
        running.url()
        for slot in (1, 2, 3):
            done = kiosk(path, "slots", "disable", str(slot))
            assert done.returncode == 0, done.stderr
            assert f"slot {slot}: disabled;" in done.stdout
            assert "kiosk run holds the board" in done.stdout
        wait_for(lambda: [s.disabled for s in board.cabinet.slots] == [True] * 3 + [False], 30)
        show(camera, dev_faces / "person_03" / "02.jpg")
        wait_for(lambda: any(e["type"] == "rental.started" for e in events(tmp_path)), 90)
        show(camera, tmp_path / "blank.png")
        wait_for(lambda: cached(path)[4]["state"] == "empty", 30)
    finally:
        running.close()
    assert [record.slot for record in board.ejects] == [4]
    assert [cached(path)[slot]["disabled"] for slot in (1, 2, 3)] == [True] * 3
