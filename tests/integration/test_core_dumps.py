"""A crash of a kiosk or cloud process leaves no core dump: their memory holds in clear
what their disks hold sealed (the decrypted roster, camera frames, the data key).

Each process is started as a shell with core dumps turned on would start it
(``ulimit -c unlimited``; this machine's kernel writes ``core`` into the working folder),
holds a real rider's template, and is then killed with SIGSEGV, as a crash in dlib or
OpenCV would kill it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cloud_sync.claim_code import hash_claim
from hardware.sim import BoardSimulator
from models.encoder import FaceEngine
from models.images import read_image
from tests.conftest import free_port
from tests.helpers import BIN
from tests.integration.runtime.test_runtime import board, config, engine, enrol, frames, types
from tests.integration.sync.cloudkit import ADMIN_TOKEN, CONSENT, CONSENT_TEXT

__all__ = ["board", "engine"]  # fixtures of the runtime tests, used here

pytestmark = pytest.mark.timeout(120)

CORES_ON = ["bash", "-c", 'ulimit -c unlimited && exec "$@"', "-"]


def crash(process: subprocess.Popen[bytes], folder: Path) -> list[str]:
    """SIGSEGV ``process``; the core files it left in ``folder``."""
    process.send_signal(signal.SIGSEGV)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGSEGV
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("core"))


def test_kiosk_run_leaves_no_core_dump(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "rider-3", "Asha Example")
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 12, blanks=60)
    settings = config(tmp_path, images, board.path)
    folder = tmp_path / "cwd"
    folder.mkdir()
    log = tmp_path / "run.log"
    command = [str(BIN / "kiosk"), "--log-format", "json", "--config", str(settings), "run"]
    with log.open("wb") as out:
        process = subprocess.Popen([*CORES_ON, *command], cwd=folder, stdout=out, stderr=out)
    try:
        # the rider recognised: the roster is decrypted and frames went through the model
        deadline = time.monotonic() + 60
        while "rental.started" not in types(tmp_path):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert crash(process, folder) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_kiosk_cloud_serve_leaves_no_core_dump(tmp_path: Path, dev_faces: Path) -> None:
    observation = FaceEngine().observe(read_image(dev_faces / "person_01" / "01.jpg"))
    assert observation is not None
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env.update(
        KIOSK_CLOUD_DATABASE_URL=f"sqlite:///{tmp_path / 'cloud.sqlite'}",
        KIOSK_CLOUD_ADMIN_TOKEN=ADMIN_TOKEN,
        KIOSK_CLOUD_PORT=str(port),
        KIOSK_CLOUD_LOG_LEVEL="warning",
    )
    folder = tmp_path / "cwd"
    folder.mkdir()
    command = [str(BIN / "kiosk-cloud"), "serve"]
    with (tmp_path / "serve.log").open("wb") as out:
        process = subprocess.Popen(
            [*CORES_ON, *command], cwd=folder, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if http.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline
                time.sleep(0.1)
            assert http.post(url + "/v1/admin/consent-texts", json=CONSENT_TEXT).is_success
            model = http.get(url + "/v1/admin/roster").json()["model"]
            body = {
                "person_id": "ann",
                "templates": [{"model": model, "vector": observation.encoding.tolist()}],
                "consent": CONSENT,
                "claim_hash": hash_claim("4821", log2_n=10),
            }
            response = http.post(url + "/v1/admin/riders", json=body, timeout=10)
            assert response.status_code == 201, response.text
        assert crash(process, folder) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
