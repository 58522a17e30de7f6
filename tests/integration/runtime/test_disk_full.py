"""``kiosk run`` with its state folder on a small tmpfs that fills up: the kiosk goes out of
service (``disk_full``, ``/healthz`` 503) and ejects nothing while the disk cannot take an
eject's intent, and rents again by itself once space returns.

Mounting the tmpfs needs root (CI runs as root); elsewhere the test is skipped, and with
``KIOSK_REQUIRE_SERVICES=1`` it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hardware.sim import BoardSimulator
from models.encoder import FaceEngine
from tests.conftest import free_port, need
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import (
    BLANK_PNG,
    config,
    enrol,
    start,
    stop,
    types,
    wait_for,
)

board = test_runtime.board
engine = test_runtime.engine


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test (root only)."""
    mount = shutil.which("mount")
    need(os.geteuid() == 0 and mount is not None, "root, to mount a tmpfs")
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    need(done.returncode == 0, f"a tmpfs mount ({done.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False
    )
    stats = os.statvfs(folder)
    assert stats.f_bavail * stats.f_frsize < 64 * 1024, "the tmpfs did not fill up"
    return filler


def health(port: int) -> tuple[int, str]:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.HTTPError:
        return 0, ""
    return answer.status_code, answer.text


def test_a_full_disk_takes_the_kiosk_out_of_service_until_space_returns(
    tmp_path: Path,
    small_disk: Path,
    dev_faces: Path,
    engine: FaceEngine,
    board: BoardSimulator,
) -> None:
    state = small_disk / "state"
    state.mkdir()
    enrol(state, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    # the rider comes and goes: 3 s of an empty scene, then 2 s of the rider, over and over
    images = tmp_path / "frames"
    images.mkdir()
    for index in range(24):
        (images / f"{index:03d}-blank.png").write_bytes(BLANK_PNG)
    for index in range(24, 40):
        (images / f"{index:03d}.jpg").symlink_to(dev_faces / "person_03" / "02.jpg")
    port = free_port()
    path = config(state, images, board.path, camera={"loop": True}, ui={"port": port})
    process = start(path)
    try:
        wait_for(lambda: health(port)[0] == 200 or process.poll() is not None, 60)
        assert process.poll() is None, process.communicate()[1][-3000:]
        filler = fill(small_disk)
        wait_for(lambda: health(port)[0] == 503, 10)
        status, body = health(port)
        assert status == 503 and "disk_full" in body, body
        # the rider passes by twice more: nothing is ejected, the kiosk stays out of service
        time.sleep(11)
        assert board.ejects == []
        assert "disk_full" in health(port)[1]
        assert process.poll() is None
        filler.unlink()
        wait_for(lambda: health(port)[0] == 200, 10)
        wait_for(lambda: "rental.started" in types(state), 30)
        assert board.ejects
    finally:
        err = stop(process) if process.poll() is None else process.communicate()[1]
    assert "Traceback" not in err, err[-3000:]
    assert types(state).count("rental.started") == 1
    assert len(board.ejects) == 1
