"""``kiosk run`` with a replay camera whose source cannot be replayed (missing, or holding no
image) stops at start with one line and exit code 6: no retry can mend it, so it must not
sit out of service (``camera_lost``) for ever."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hardware.sim import BoardSimulator
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import config, start

board = test_runtime.board


@pytest.mark.parametrize("source", ["missing", "empty"])
def test_a_replay_source_that_cannot_replay_stops_kiosk_run_at_start(
    tmp_path: Path, board: BoardSimulator, source: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    images = tmp_path / "frames"
    if source == "empty":
        images.mkdir()
        (images / "notes.txt").write_text("not a picture\n", encoding="utf-8")
    process = start(config(state, images, board.path))
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError("kiosk run kept running without a camera:\n" + err[-3000:]) from None
    assert process.returncode == 6, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("kiosk: error:")]
    assert len(errors) == 1, err[-3000:]
    assert "camera.source" in errors[0] and str(images) in errors[0], errors[0]
    assert ("no such folder" if source == "missing" else "holds no image files") in errors[0]
    assert "Traceback" not in err
    assert board.ejects == []
