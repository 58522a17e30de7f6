"""Never an eject without its event, when the power goes: a technician's ``kiosk eject``
cut while the board ejects leaves its intent on the disk (it was fsynced before the board
was asked), and the next command that owns the board records the eject exactly once; after the cuts
``kiosk status``, ``kiosk sync status`` and ``kiosk roster verify`` answer, no traceback.

Real parts: ``kiosk eject`` as a subprocess with its state folder on LazyFS, the board
simulator on a pty with a slow latch (the cut lands while it ejects); the cabinet keeps
its own state (it is hardware, not the kiosk's disk).
"""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Iterator

import pytest

from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from tests.helpers import BIN
from tests.integration.ops.test_eject_crash import (
    blank_config,
    emptied,
    kill_mid_eject,
    kiosk_eject,
)
from tests.integration.power.kit import earlier_boot, ejected, inspect, outbox_rows
from tests.integration.power.lazyfs import PowerFolder
from tests.integration.runtime.test_runtime import wait_for

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


@pytest.fixture
def board() -> Iterator[BoardSimulator]:
    """A cabinet whose latch takes 2.5 s to open; the powerbank is taken 0.3 s later."""
    sim = BoardSimulator(
        SimConfig(slots=4, filled=4, charge_rate=50, eject_s=2.5, take_after_s=0.3, seed=11)
    )
    sim.start()
    yield sim
    sim.stop()


def test_a_technician_eject_cut_by_the_power_is_recorded_once_after_the_reboot(
    power: PowerFolder, board: BoardSimulator
) -> None:
    state = power.path / "state"
    state.mkdir()
    path = blank_config(state, board.path)
    earlier_boot(power, state)  # provisioned
    powerbank = board.cabinet.slots[2].powerbank_id
    kill_mid_eject(kiosk_eject(path, 3, "customer locked out"), board)
    power.cut()
    power.mount()
    wait_for(lambda: emptied(board, 3), 20)  # the powerbank left while the power was off

    outbox_rows(state / "outbox.sqlite")  # not corrupt
    intents = inspect(state / "outbox.sqlite", "SELECT slot, reason, state FROM ejects")
    assert intents == [(3, "customer locked out", "ejecting")]  # the intent survived
    assert ejected(state) == []

    done = kiosk_eject(path, 1, "inspection")
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err[-3000:]
    assert "slot 3: an eject left unfinished" in out
    power.cut()  # right after: what the command recorded is on the disk
    power.mount()
    first, second = ejected(state)
    assert (first["slot"], first["powerbank_id"], first["outcome"]) == (3, powerbank, "taken")
    assert (first["operator"], first["reason"]) == (getpass.getuser(), "customer locked out")
    assert (second["slot"], second["outcome"], second["reason"]) == (1, "presented", "inspection")
    assert [record.slot for record in board.ejects] == [3, 1]  # never ejected twice
    for command, code in ((["status"], 0), (["sync", "status"], 0), (["roster", "verify"], 4)):
        answer = subprocess.run(
            [str(BIN / "kiosk"), "--config", str(path), *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in answer.stdout + answer.stderr, command
        assert answer.returncode == code, (command, answer.stderr[-500:])  # 4: no roster here
