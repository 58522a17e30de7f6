"""The install targets, read from the lock: each pip lock (requirements-<target>.lock) is
the uv lock exported for its extra, each target has only the packages it runs, and dlib is
never built from source."""

from __future__ import annotations

import re
import subprocess
import tomllib
from functools import cache

import pytest

from tests.conftest import need
from tests.helpers import REPO

UV = REPO / ".tools" / "bin" / "uv"
TARGETS = ("kiosk", "cloud", "cloud-enrol")
EXPORT = ("--format", "requirements-txt", "--extra")

VISION = {"dlib-bin", "dlib", "opencv-python-headless", "opencv-python", "face-recognition"}
VISION |= {"face-recognition-models", "scikit-image", "scipy", "pillow", "imageio"}
SERVER_ONLY = {"psycopg", "psycopg-binary", "psycopg-pool", "fastapi-offline"}
KIOSK_HARDWARE = {"pyserial", "sqlite-utils"}


def _body(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


@cache
def _exported(target: str) -> str:
    need(UV.is_file(), f"uv at {UV} (make setup installs it)")
    return subprocess.run(
        [str(UV), "export", "--frozen", "--no-emit-project", "--no-dev", *EXPORT, target],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _names(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([a-z0-9][a-z0-9._-]*)==", text, re.MULTILINE)}


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_lock_matches_uv_lock(target: str) -> None:
    committed = (REPO / f"requirements-{target}.lock").read_text(encoding="utf-8")
    assert _body(_exported(target)) == _body(committed), (
        f"requirements-{target}.lock is stale: run `make lock`"
    )


def test_no_stale_single_lock_remains() -> None:
    # one pip lock per target; a leftover all-in-one lock would install the cloud on kiosks
    assert not (REPO / "requirements.lock").exists()


def test_the_cloud_gets_no_vision_and_no_kiosk_hardware() -> None:
    names = _names(_exported("cloud"))
    assert {"fastapi", "uvicorn", "psycopg", "prometheus-client", "fastapi-offline"} <= names
    assert not names & (VISION | KIOSK_HARDWARE), names & (VISION | KIOSK_HARDWARE)


def test_the_cloud_enrolment_extra_adds_only_the_face_encoder() -> None:
    cloud = _names(_exported("cloud"))
    enrol = _names(_exported("cloud-enrol"))
    assert {"dlib-bin", "opencv-python-headless", "face-recognition-models"} <= enrol
    assert cloud < enrol
    assert not enrol & ({"face-recognition", "scikit-image", "scipy"} | KIOSK_HARDWARE)


def test_the_kiosk_gets_no_database_server_driver_nor_the_cloud_docs() -> None:
    names = _names(_exported("kiosk"))
    # the rider page's server (edge/ui/server.py) is FastAPI on uvicorn: that much it runs
    assert {"dlib-bin", "opencv-python-headless", "pyserial", "paho-mqtt", "fastapi"} <= names
    assert not names & SERVER_ONLY, names & SERVER_ONLY


def test_face_recognition_is_only_the_tests_reference() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    declared = [*project["project"]["dependencies"]]
    for extra in project["project"]["optional-dependencies"].values():
        declared += extra
    assert not [d for d in declared if d.startswith("face-recognition==")]
    assert "face-recognition==1.3.0" in project["dependency-groups"]["dev"]
    for target in (*TARGETS, "demo"):
        assert "face-recognition" not in _names(_exported(target)), target


def test_dlib_comes_only_from_prebuilt_wheels() -> None:
    lock = (REPO / "uv.lock").read_text(encoding="utf-8")
    assert 'name = "dlib-bin"' in lock
    assert '\nname = "dlib"\n' not in lock.replace("[[package]]", "")
    for target in ("kiosk", "cloud-enrol"):
        requirements = (REPO / f"requirements-{target}.lock").read_text(encoding="utf-8")
        assert "dlib-bin==" in requirements
        assert not any(line.startswith("dlib==") for line in requirements.splitlines())
