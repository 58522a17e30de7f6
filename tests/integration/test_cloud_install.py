"""Each install target runs with only its own packages.

- The cloud API and ``kiosk-cloud`` run in a process where importing the face stack (OpenCV,
  dlib, face_recognition), the kiosk's devices or the kiosk itself (``edge``, ``hardware``)
  raises at once: a meta-path finder refuses them, so even an import inside a function or
  behind ``try/except ImportError`` is caught.
- Fresh virtual environments hold exactly one target from the lock (installed from
  uv's cache, offline, so the test needs no network once ``make setup`` has run): the
  cloud's serves its API and lacks OpenCV, dlib and pyserial; the kiosk's answers
  ``kiosk --version`` and lacks the PostgreSQL driver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, need
from tests.helpers import CONSENT_ARGS, REPO, consent_text

UV = REPO / ".tools" / "bin" / "uv"

BLOCKER = textwrap.dedent(
    """
    import sys

    BLOCKED = {"cv2", "dlib", "face_recognition", "face_recognition_models", "skimage",
               "serial", "sqlite_utils", "picamera2", "edge", "hardware"}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise RuntimeError(f"the cloud imported {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    """
)


def _blocked(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env["KIOSK_CLOUD_DATABASE_URL"] = f"sqlite:///{tmp_path}/cloud.sqlite"
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cloud_app_runs_without_the_face_stack_or_the_kiosk(tmp_path: Path) -> None:
    result = _blocked(
        """
        from fastapi.testclient import TestClient

        from cloud_sync.server.app import create_app
        from cloud_sync.server.config import load_cloud_settings

        with TestClient(create_app(load_cloud_settings())) as client:
            assert client.get("/healthz").json()["status"] == "ok"
            assert client.get("/metrics").status_code == 200
            assert client.get("/docs").status_code == 200
        print("served")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("served")


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--help"],
        ["--help"],
        ["migrate"],
        ["migrate", "+", "kiosks"],  # a reader needs the database migrate makes
        ["keys", "init"],
        ["migrate", "+", "keys", "init", "+", "riders", "list"],  # readers create nothing
        ["migrate", "+", "keys", "init", "+", "roster", "info"],
        ["command", "--help"],
    ],
    ids=" ".join,
)
def test_kiosk_cloud_commands_run_without_the_face_stack_or_the_kiosk(
    args: list[str], tmp_path: Path
) -> None:
    result = _blocked(
        f"""
        import sys

        from cloud_sync.cli import main

        args = {args!r}
        while "+" in args:
            first, args = args[: args.index("+")], args[args.index("+") + 1 :]
            sys.argv = ["kiosk-cloud", *first]
            try:
                main()
            except SystemExit as done:
                assert not done.code, first
        sys.argv = ["kiosk-cloud", *args]
        main()
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "the cloud imported" not in result.stderr + result.stdout


# -- one target per virtual environment ---------------------------------------------------


def _target_venv(target: str, folder: Path) -> Path:
    """A virtual environment with the target's packages and the project, nothing else.

    Installed by ``uv sync --frozen`` with the target's extra alone, offline: the lock's
    own wheel addresses, found in the cache ``make setup`` filled. (Its pip lock,
    ``requirements-<target>.lock``, is the same set: ``test_lock`` checks it is the export
    of this lock. ``uv pip install -r`` offline would also need PyPI's index pages in the
    cache, which a fresh machine's ``make setup`` never fetches.)"""
    need(UV.is_file(), f"uv at {UV} (make setup installs it)")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PYTHON")}
    env["UV_PROJECT_ENVIRONMENT"] = str(folder)
    command = [str(UV), "sync", "--frozen", "--offline", "--quiet", "--no-dev"]
    installed = subprocess.run(
        [*command, "--extra", target, "--python", sys.executable],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    return folder / "bin"


def _lacks(python: Path, *modules: str) -> list[str]:
    present = []
    for module in modules:
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
        if probe.returncode == 0:
            present.append(module)
    return present


@pytest.fixture(scope="module")
def cloud_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _target_venv("cloud", tmp_path_factory.mktemp("cloud") / "venv")


@pytest.mark.timeout(180)
def test_the_cloud_target_alone_serves_its_api(cloud_bin: Path, tmp_path: Path) -> None:
    bin_dir = cloud_bin
    assert _lacks(bin_dir / "python", "cv2", "dlib", "serial", "sqlite_utils", "skimage") == []
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env.update(
        KIOSK_CLOUD_DATABASE_URL=f"sqlite:///{tmp_path}/cloud.sqlite",
        KIOSK_CLOUD_PORT=str(port),
        KIOSK_CLOUD_LOG_LEVEL="warning",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(bin_dir / "kiosk-cloud"), "serve"], env=env, stdout=out, stderr=out
        )
    try:
        for _ in range(300):
            assert server.poll() is None, log.read_text()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError(log.read_text())
        assert health.json()["status"] == "ok"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_cloud_target_alone_says_photos_need_the_enrolment_extra(
    cloud_bin: Path, tmp_path: Path, dev_faces: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env["KIOSK_CLOUD_DATABASE_URL"] = f"sqlite:///{tmp_path}/cloud.sqlite"

    def cloud(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(cloud_bin / "kiosk-cloud"), *args], env=env, capture_output=True, text=True
        )

    photo = sorted((dev_faces / "person_01").iterdir())[0]
    assert cloud(*consent_text(tmp_path)).returncode == 0
    refused = cloud("riders", "add", "--person-id", "rider-1", str(photo), *CONSENT_ARGS)
    assert refused.returncode == 5, refused.stderr
    assert "install powerbank-kiosk[cloud-enrol]" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert cloud("riders", "list").stdout == ""  # nothing stored
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps([[0.01 * i for i in range(128)]]))
    added = cloud(
        "riders", "add", "--person-id", "rider-1", "--templates", str(templates), *CONSENT_ARGS
    )
    assert added.returncode == 0, added.stderr  # templates need no encoder
    assert "rider-1" in cloud("riders", "list").stdout


@pytest.mark.timeout(180)
def test_the_kiosk_target_alone_runs_without_the_cloud_server_packages(tmp_path: Path) -> None:
    bin_dir = _target_venv("kiosk", tmp_path / "venv")
    assert _lacks(bin_dir / "python", "psycopg", "fastapi_offline", "face_recognition") == []
    version = subprocess.run(
        [str(bin_dir / "kiosk"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("kiosk ")
    loads = subprocess.run(
        [str(bin_dir / "python"), "-c", "import edge.runtime.loop, models; models.verify()"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loads.returncode == 0, loads.stderr
