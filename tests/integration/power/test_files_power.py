"""Files the appliance rewrites, cut by the power: ``runtime.json`` rewritten in a loop is
never empty or torn after a cut, and holds at least the last write that returned; the
maintenance flag set or cleared stays so (``cloud_sync.files``: temporary file, fsync,
rename, fsync of the folder); a remote command claimed stays claimed.

LazyFS drops un-fsynced data, not un-fsynced folder entries: that a rename or an unlink is
durable only after the folder's fsync is not something these tests can show."""

from __future__ import annotations

import random
import time

import pytest

from cloud_sync.mqtt.ledger import CommandLedger
from edge.ops.maintenance import read_maintenance, set_maintenance
from edge.ops.runtime_status import FILENAME, read_runtime_status
from tests.integration.power.kit import Part, fsync_tree
from tests.integration.power.lazyfs import PowerFolder

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


def test_runtime_json_rewritten_through_cuts_is_never_empty_and_never_older(
    power: PowerFolder,
) -> None:
    rng = random.Random(3)
    state = power.path / "state"
    state.mkdir()
    fsync_tree(state)
    for _ in range(3):
        writer = Part("runtime", str(state))
        try:
            writer.wait_for("wrote 5")
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            writer.kill()
        power.cut()
        written = [int(line.split()[1]) for line in writer.lines if line.startswith("wrote ")]
        power.mount()
        text = (state / FILENAME).read_text(encoding="utf-8")
        status = read_runtime_status(state)
        assert status is not None, f"runtime.json after a cut: {text[:200]!r}"
        assert status.counts["rentals"] >= written[-1]  # what returned was on the disk


def test_the_maintenance_flag_set_or_cleared_stays_so_after_a_cut(power: PowerFolder) -> None:
    state = power.path / "state"
    state.mkdir()
    fsync_tree(state)
    set_maintenance(state, None, True, "tech-1", "door repair")
    power.cut()
    power.mount()
    flag = read_maintenance(state)
    assert flag is not None and (flag.operator, flag.reason) == ("tech-1", "door repair")
    set_maintenance(state, None, False, "tech-1")
    power.cut()
    power.mount()
    assert read_maintenance(state) is None


def test_a_remote_command_claimed_before_a_cut_is_never_run_again(power: PowerFolder) -> None:
    """``commands.sqlite`` (FULL): an id claimed before the power went is still claimed, so
    the broker's redelivery after the reboot does not eject twice; the command is found
    ``running`` and finished at the start (``CommandExecutor.recover``)."""
    path = power.path / "commands.sqlite"
    claimer = Part("claim", str(path), "20")
    try:
        claimer.wait_for("done")
    finally:
        claimer.kill()
    power.cut()
    power.mount()
    claimed = [line.split()[1] for line in claimer.lines if line.startswith("claimed ")]
    assert len(claimed) == 20
    ledger = CommandLedger(path)
    try:
        assert [entry.id for entry in ledger.running()] == claimed
        assert not any(ledger.claim(i, "eject", "ops:test", time.time() + 600) for i in claimed)
    finally:
        ledger.close()
