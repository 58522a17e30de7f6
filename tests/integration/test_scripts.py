"""Every shell script in the repository passes shellcheck."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import need
from tests.helpers import REPO

SCRIPTS = sorted(
    path
    for folder in ("scripts", ".ci")
    for path in (REPO / folder).rglob("*")
    if path.is_file() and path.read_bytes()[:64].split(b"\n")[0].endswith((b"bash", b"/sh"))
)


def test_there_are_shell_scripts() -> None:
    assert SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(path.relative_to(REPO)) for path in SCRIPTS])
def test_shellcheck(script: object) -> None:
    need(shutil.which("shellcheck") is not None, "shellcheck (apt-get install shellcheck)")
    result = subprocess.run(
        ["shellcheck", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
