"""The camera as a broken cable and a failing device, under a real ``kiosk run``.

The camera is ``camera.kind = "opencv"`` reading a named pipe fed with real rider photos
as an MJPEG stream (``PipeCamera``): OpenCV's own reader, which blocks on the pipe as a
wedged driver blocks (a Pi's ribbon cable working loose leaves ``capture_array`` waiting
for ever), which sees the end of the stream when the feeder closes it (the cable
pulled), and which decodes a picture sent again and again as the same frame (a driver
stuck on its last buffer). What the technician and the rider see is read where they read it: ``/healthz``
on the rider page's port and ``kiosk status``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from hardware.sim import BoardSimulator
from models.images import read_image
from tests.helpers import BIN
from tests.integration.ops.test_run_ops import Kiosk
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import config, wait_for

pytestmark = [pytest.mark.service, pytest.mark.timeout(180)]

board = test_runtime.board


class PipeCamera:
    """A named pipe fed with JPEG frames at ``fps``, as a camera would send them: the
    pictures in turn, each a little different as a sensor's are.

    ``stall`` stops the frames but keeps the pipe open (the reader waits for ever);
    ``freeze`` sends the same picture again and again (a driver stuck on its last buffer);
    ``unplug`` closes the pipe (the reader sees the stream end); ``feed`` (again) resumes
    or plugs it back in."""

    def __init__(self, path: Path, jpegs: list[bytes], fps: float = 10.0) -> None:
        self.path = path
        os.mkfifo(path)
        self._jpegs = jpegs
        self.frozen = False
        self._period = 1.0 / fps
        self._feeding = threading.Event()
        self._plugged = threading.Event()
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="pipe-camera", daemon=True)
        self._thread.start()

    def feed(self) -> None:
        self.frozen = False
        self._plugged.set()
        self._feeding.set()

    def freeze(self) -> None:
        self.frozen = True

    def stall(self) -> None:
        self._feeding.clear()

    def unplug(self) -> None:
        self._feeding.clear()
        self._plugged.clear()

    def close(self) -> None:
        self._stop.set()
        self.unplug()
        self._thread.join(timeout=10)
        with _nonblocking_reader(self.path):  # a writer waiting in open() gets its reader
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._plugged.wait(0.1):
                continue
            fd = os.open(self.path, os.O_WRONLY)  # waits for the kiosk to open the camera
            try:
                while self._plugged.is_set() and not self._stop.is_set():
                    if not self._feeding.is_set():
                        time.sleep(0.05)
                        continue
                    os.write(fd, self._jpegs[0 if self.frozen else self.sent % len(self._jpegs)])
                    self.sent += 1
                    time.sleep(self._period)
            except BrokenPipeError:
                pass  # the reader went away (the kiosk stopped or reopens)
            finally:
                os.close(fd)


class _nonblocking_reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


@pytest.fixture
def camera(tmp_path: Path, dev_faces: Path) -> Iterator[PipeCamera]:
    picture = cv2.cvtColor(read_image(dev_faces / "person_03" / "02.jpg"), cv2.COLOR_RGB2BGR)
    noise = np.random.default_rng(5)
    jpegs = []
    for _ in range(4):  # a sensor's noise: no two frames alike
        grain = noise.integers(0, 4, picture.shape, dtype=np.uint8)
        noisy = np.minimum(picture.astype(np.uint16) + grain, 255).astype(np.uint8)
        jpegs.append(cv2.imencode(".jpg", noisy)[1].tobytes())
    pipe = PipeCamera(tmp_path / "camera.mjpg", jpegs)
    yield pipe
    pipe.close()


def health(page: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"{page}/healthz", timeout=5)
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


def test_a_camera_that_stops_sending_frames_is_out_of_service_until_they_come_back(
    tmp_path: Path, board: BoardSimulator, camera: PipeCamera
) -> None:
    """The pipe stays open and silent: OpenCV's read waits for ever (its read timeout does
    not reach a blocked read), so no error ever says the camera is gone."""
    path = config(
        tmp_path,
        tmp_path,
        board.path,
        camera={"kind": "opencv", "source": str(camera.path), "fps": 10, "stall_s": 2},
    )
    camera.feed()
    kiosk = Kiosk(path)
    try:
        page = kiosk.url()
        wait_for(lambda: health(page)[0] == 200, 60)
        camera.stall()
        stalled_at = time.monotonic()
        wait_for(lambda: health(page)[0] == 503, 15)
        took = time.monotonic() - stalled_at
        _, body = health(page)
        assert body["checks"]["camera"] is False, body
        assert body["details"]["in_service"] == "out of service: camera_lost", body
        assert "no frame for" in body["details"]["camera"], body
        assert took < 8, took  # stall_s, the frames OpenCV still held, and a check
        wait_for(lambda: kiosk.status()["camera"]["ok"] is False, 10)
        assert "no frame for" in kiosk.status()["camera"]["detail"]

        camera.feed()  # frames move again: back in service, no restart
        wait_for(lambda: health(page)[0] == 200, 20)
        assert kiosk.process.poll() is None
        stalled = [line for line in kiosk.output().splitlines() if "camera.stalled" in line]
        assert len(stalled) == 1, stalled  # one line for the technician, naming the camera
        assert str(camera.path) in stalled[0]
    finally:
        kiosk.close()


def test_a_camera_url_password_is_never_shown(
    tmp_path: Path, board: BoardSimulator, camera: PipeCamera
) -> None:
    """An IP camera's URL carries its password (``rtsp://user:password@host/...``): the
    logs, ``/healthz``, ``runtime.json``, ``kiosk status``, ``kiosk doctor`` and ``kiosk
    config show`` name the camera without it."""
    with socket.socket() as closed:  # a port nobody answers on: the camera is unplugged
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    source = f"http://admin:hunter2@127.0.0.1:{port}/video.mjpg"
    path = config(tmp_path, tmp_path, board.path, camera={"kind": "opencv", "source": source})
    kiosk = Kiosk(path)
    try:
        page = kiosk.url()
        wait_for(lambda: health(page)[0] == 503, 30)
        _, body = health(page)
        assert f"127.0.0.1:{port}/video.mjpg" in body["details"]["camera"], body
        wait_for(lambda: kiosk.status()["camera"]["ok"] is False, 10)
        shown = [
            json.dumps(body),
            json.dumps(kiosk.status()),
            (tmp_path / "runtime.json").read_text(encoding="utf-8"),
        ]
        for command in (["doctor", "--json"], ["config", "show", "--json"]):
            done = subprocess.run(
                [str(BIN / "kiosk"), "--config", str(path), *command],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            shown.append(done.stdout + done.stderr)
        assert f"127.0.0.1:{port}" in shown[-2] and f"127.0.0.1:{port}" in shown[-1]
    finally:
        kiosk.close()
    shown.append(kiosk.output())
    assert "camera.retrying" in shown[-1]
    for text in shown:
        assert "hunter2" not in text, text[-3000:]


def test_a_replayed_video_that_turns_unreadable_takes_the_kiosk_out_of_service(
    tmp_path: Path, board: BoardSimulator, dev_faces: Path
) -> None:
    """A looped video replay whose file is cut down to its header while ``kiosk run`` plays
    it: the vision thread stops, and the kiosk must not go on renting blind."""
    picture = cv2.cvtColor(read_image(dev_faces / "person_03" / "02.jpg"), cv2.COLOR_RGB2BGR)
    video = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (640, 480))
    for _ in range(10):
        writer.write(cv2.resize(picture, (640, 480)))
    writer.release()
    camera = {"kind": "replay", "source": str(video), "fps": 10, "loop": True}
    kiosk = Kiosk(config(tmp_path, tmp_path, board.path, camera=camera))
    try:
        page = kiosk.url()
        wait_for(lambda: health(page)[0] == 200, 60)
        video.write_bytes(video.read_bytes()[:6000])  # the header and no whole frame
        wait_for(lambda: health(page)[0] == 503, 15)
        _, body = health(page)
        assert body["details"]["in_service"] == "out of service: camera_lost", body
        assert "no readable frame" in body["details"]["camera"], body
        wait_for(lambda: "no readable frame" in kiosk.status()["camera"]["detail"], 10)
    finally:
        kiosk.close()


def test_a_frozen_camera_is_out_of_service_until_its_picture_moves_again(
    tmp_path: Path, board: BoardSimulator, camera: PipeCamera
) -> None:
    """The driver keeps handing out its last buffer: frames arrive, always the same picture,
    where a live sensor never gives two frames alike."""
    camera_settings = {"kind": "opencv", "source": str(camera.path), "fps": 10, "stall_s": 2}
    kiosk = Kiosk(config(tmp_path, tmp_path, board.path, camera=camera_settings))
    camera.feed()
    try:
        page = kiosk.url()
        wait_for(lambda: health(page)[0] == 200, 60)
        time.sleep(3)  # moving pictures for longer than stall_s: still in service
        assert health(page)[0] == 200
        camera.freeze()
        wait_for(lambda: health(page)[0] == 503, 15)
        _, body = health(page)
        assert body["details"]["in_service"] == "out of service: camera_lost", body
        assert body["details"]["camera"].startswith("frozen: "), body
        assert "the same picture for" in body["details"]["camera"], body
        camera.feed()
        wait_for(lambda: health(page)[0] == 200, 15)
        frozen = [line for line in kiosk.output().splitlines() if "camera.frozen" in line]
        assert len(frozen) == 1, frozen
    finally:
        kiosk.close()
