"""The pip lock (requirements.lock) is the uv lock exported; dlib is never built from source."""

from __future__ import annotations

import subprocess

from tests.conftest import need
from tests.helpers import REPO

UV = REPO / ".tools" / "bin" / "uv"


def _body(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_requirements_lock_matches_uv_lock() -> None:
    need(UV.is_file(), f"uv at {UV} (make setup installs it)")
    exported = subprocess.run(
        [
            str(UV),
            "export",
            "--frozen",
            "--no-emit-project",
            "--no-dev",
            "--format",
            "requirements-txt",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (REPO / "requirements.lock").read_text(encoding="utf-8")
    assert _body(exported) == _body(committed), "requirements.lock is stale: run `make lock`"


def test_dlib_comes_only_from_prebuilt_wheels() -> None:
    lock = (REPO / "uv.lock").read_text(encoding="utf-8")
    assert 'name = "dlib-bin"' in lock
    assert '\nname = "dlib"\n' not in lock.replace("[[package]]", "")
    requirements = (REPO / "requirements.lock").read_text(encoding="utf-8")
    assert "dlib-bin==" in requirements
    assert not any(line.startswith("dlib==") for line in requirements.splitlines())
