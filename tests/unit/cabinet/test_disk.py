"""``edge.cabinet.disk``: whether the state folder's file system can take an eject intent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.cabinet import disk


def test_a_folder_with_room_can_take_an_intent(tmp_path: Path) -> None:
    assert (disk.free_bytes(tmp_path) or 0) > 0
    assert disk.has_room(tmp_path, failed=False, reserve=1)
    assert disk.has_room(tmp_path, failed=True, reserve=4096)  # the probe allocates it
    assert list(tmp_path.iterdir()) == []  # and leaves nothing behind


def test_free_space_under_the_reserve_is_no_room(tmp_path: Path) -> None:
    more_than_free = (disk.free_bytes(tmp_path) or 0) + 1024**3
    assert not disk.has_room(tmp_path, failed=False, reserve=more_than_free)


def test_a_folder_that_cannot_be_measured_is_no_room(tmp_path: Path) -> None:
    assert not disk.has_room(tmp_path / "gone", failed=False)
    assert not disk.can_allocate(tmp_path / "gone", 4096)


def test_a_file_system_that_reports_no_size_is_judged_by_its_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LazyFS (the power-cut tests' file system) has no statfs: FUSE answers zeros
    zeros = os.statvfs_result((4096, 4096, 0, 0, 0, 0, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda _folder: zeros)
    assert disk.free_bytes(tmp_path) is None
    assert disk.has_room(tmp_path, failed=False)  # no refused write: room
    monkeypatch.setattr(disk, "can_allocate", lambda _folder, _size: False)
    assert not disk.has_room(tmp_path, failed=True)  # refused, and the probe fails too
