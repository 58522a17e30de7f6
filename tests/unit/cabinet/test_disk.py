"""``edge.cabinet.disk``: whether the state folder's file system can take an eject intent."""

from __future__ import annotations

from pathlib import Path

from edge.cabinet import disk


def test_a_folder_with_room_can_take_an_intent(tmp_path: Path) -> None:
    assert disk.free_bytes(tmp_path) > 0
    assert disk.has_room(tmp_path, failed=False, reserve=1)
    assert disk.has_room(tmp_path, failed=True, reserve=4096)  # the probe allocates it
    assert list(tmp_path.iterdir()) == []  # and leaves nothing behind


def test_free_space_under_the_reserve_is_no_room(tmp_path: Path) -> None:
    more_than_free = disk.free_bytes(tmp_path) + 1024**3
    assert not disk.has_room(tmp_path, failed=False, reserve=more_than_free)


def test_a_folder_that_cannot_be_measured_is_no_room(tmp_path: Path) -> None:
    assert not disk.has_room(tmp_path / "gone", failed=False)
    assert not disk.can_allocate(tmp_path / "gone", 4096)
