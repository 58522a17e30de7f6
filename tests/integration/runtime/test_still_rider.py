"""A rider standing still in front of ``kiosk run`` never sees the idle invitation.

The real kiosk (a subprocess) replays one photo, looped, with liveness on: a stranger, and
an enrolled rider whose photo cannot blink. Every screen the rider page is sent over its
server-sent events is recorded; once the kiosk has started checking the face, the idle
screen must never come back while the photo stays in front of the camera. The flow's
timeouts are shortened so that the seconds cover several of each (checking, result,
liveness).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from hardware.sim import BoardSimulator
from models.encoder import FaceEngine
from tests.conftest import free_port
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import config, enrol, frames, start, stop, wait_for

board = test_runtime.board
engine = test_runtime.engine

WATCH_S = 7.0


def screens_sent(port: int, seconds: float) -> list[tuple[str, str | None]]:
    """Every screen the page's event stream carries for ``seconds`` (key, hint)."""
    seen: list[tuple[str, str | None]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with httpx.stream("GET", f"http://127.0.0.1:{port}/events", timeout=5) as stream:
                kind = None
                for line in stream.iter_lines():
                    if line.startswith("event:"):
                        kind = line.removeprefix("event:").strip()
                    elif line.startswith("data:") and kind == "screen":
                        state = json.loads(line.removeprefix("data:"))
                        seen.append((state["key"], state.get("detail")))
                    if time.monotonic() >= deadline:
                        break
        except httpx.HTTPError:
            time.sleep(0.2)  # not serving yet
    return seen


@pytest.mark.parametrize(
    ("enrolled", "shown"),
    [("person_03/01.jpg", "person_06/01.jpg"), ("person_06/01.jpg", "person_06/02.jpg")],
    ids=["stranger", "enrolled-photo-never-blinks"],
)
def test_a_still_face_never_sends_the_screen_back_to_idle(
    tmp_path: Path,
    dev_faces: Path,
    engine: FaceEngine,
    board: BoardSimulator,
    enrolled: str,
    shown: str,
) -> None:
    enrol(tmp_path, engine, dev_faces / enrolled, "rider-1", "Asha Example")
    images = frames(tmp_path / "frames", dev_faces / shown, 1)
    port = free_port()
    path = config(
        tmp_path,
        images,
        board.path,
        camera={"loop": True},
        ui={"port": port},
        flow={"checking_s": 1.5, "result_s": 1},
        vision__liveness={"method": "blink", "timeout_s": 1},
    )
    process = start(path)
    try:
        wait_for(lambda: _serving(port) or process.poll() is not None, timeout=60)
        assert process.poll() is None, process.communicate()[1][-3000:]
        seen = screens_sent(port, WATCH_S)
    finally:
        stop(process) if process.poll() is None else process.communicate()
    keys = [key for key, _ in seen]
    # the face noticed: checking, or already its result when the page answered late
    noticed = [index for index, key in enumerate(keys) if key != "idle"]
    assert noticed, seen
    after = keys[noticed[0] :]
    assert "idle" not in after, f"the rider standing still saw the idle screen: {seen}"
    assert board.ejects == []


def _serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
