"""``cloud_sync.files``: the one way kiosk and cloud replace a file (temporary file, fsync,
rename, fsync of the folder); see tests/integration/power/ for the same under power cuts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloud_sync.files import remove_durably, write_atomic


def test_a_replace_writes_all_of_a_large_body_with_the_mode_asked(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    body = os.urandom(3 * 1024 * 1024)
    write_atomic(path, body, 0o640)
    assert path.read_bytes() == body
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_a_failed_replace_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes", 0o600)  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "x", b"new")


def test_remove_durably_says_whether_there_was_a_file(tmp_path: Path) -> None:
    path = tmp_path / "maintenance"
    path.write_bytes(b"{}")
    assert remove_durably(path) is True
    assert not path.exists()
    assert remove_durably(path) is False
