"""The suite's ground truth: on this machine, LazyFS drops what was not fsynced at a cut.
When it does not, every other test here would pass for nothing: this one fails instead."""

from __future__ import annotations

import os

import pytest

from tests.integration.power.lazyfs import PowerFolder

pytestmark = pytest.mark.service


def test_a_cut_drops_an_unfsynced_write_and_keeps_an_fsynced_one() -> None:
    folder = PowerFolder()
    try:
        folder.mount()
        (folder.path / "synced").write_bytes(b"a" * 10000)
        with (folder.path / "synced").open("rb+") as out:
            os.fsync(out.fileno())
        (folder.path / "unsynced").write_bytes(b"b" * 10000)
        assert (folder.path / "unsynced").read_bytes() == b"b" * 10000  # seen before the cut
        folder.cut()
        assert not folder.mounted()
        folder.mount()
        assert (folder.path / "synced").read_bytes() == b"a" * 10000
        unsynced = folder.path / "unsynced"
        assert not unsynced.exists() or unsynced.read_bytes() == b""
    finally:
        folder.close()


def test_the_fixture_proves_the_cut_before_a_test_runs(power: PowerFolder) -> None:
    assert power.cuts == 1  # prove_it_drops cut once, and found the write gone
    assert os.path.ismount(power.path)
