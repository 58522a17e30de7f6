"""``kiosk slots``, ``kiosk eject`` and the simulator's entry point, against a real pty."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.outbox import Outbox
from edge.cli.main import app
from edge.cli.runner import run_app
from edge.settings import load_settings
from hardware.driver import SerialBoard
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BoardSimulator]:
    with BoardSimulator(SimConfig(slots=6, eject_s=0.05, seed=3)) as simulator:
        monkeypatch.setenv("KIOSK_BOARD__URL", simulator.path)
        monkeypatch.setenv("KIOSK_BOARD__SLOTS", "6")
        monkeypatch.setenv("KIOSK_BOARD__TIMEOUT_S", "0.1")
        monkeypatch.setenv("KIOSK_KIOSK__STATE_DIR", str(tmp_path / "state"))
        yield simulator


def kiosk(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_app(app, "kiosk", ["--log-format", "json", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_slots_table_json_and_disable(
    sim: BoardSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = kiosk(capsys, "slots", "--json")
    assert code == 0
    listing = json.loads(out)
    assert listing["source"] == "board" and len(listing["slots"]) == 6
    assert listing["slots"][0]["powerbank_id"] == sim.cabinet.slots[0].powerbank_id
    assert kiosk(capsys, "slots", "disable", "2")[0] == 0
    assert sim.cabinet.slots[1].disabled
    code, out, _ = kiosk(capsys, "slots")
    assert code == 0 and "disabled" in out and "powerbank id" in out
    assert kiosk(capsys, "slots", "enable", "2")[0] == 0
    assert not sim.cabinet.slots[1].disabled


def test_eject_records_the_operator(
    sim: BoardSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    powerbank = sim.cabinet.slots[2].powerbank_id
    code, out, _ = kiosk(capsys, "eject", "3", "--reason", "stuck powerbank")
    assert code == 0, out
    assert [record.slot for record in sim.ejects] == [3]
    settings = load_settings()
    events = Outbox(settings.outbox_path, settings.kiosk.id).events()
    [event] = [e for e in events if e.type == "slot.ejected"]
    payload = event.payload
    assert (payload.slot, payload.powerbank_id, payload.reason) == (3, powerbank, "stuck powerbank")  # type: ignore[union-attr]
    assert payload.operator == getpass.getuser()  # type: ignore[union-attr]


def test_bad_slot_and_silent_board(sim: BoardSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert kiosk(capsys, "eject", "9", "--reason", "x")[0] == 4
    assert kiosk(capsys, "slots", "--json")[0] == 0
    sim.act("silent")
    code, out, err = kiosk(capsys, "slots", "--json")
    assert code == 6 and json.loads(out)["source"] == "cached"
    assert "did not answer" in err
    code, _, err = kiosk(capsys, "eject", "1", "--reason", "test")
    assert code == 6 and sim.ejects == []


def test_module_entry_point_serves_a_pty() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "hardware.sim", "--slots", "3", "--seed", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        path = process.stdout.readline().strip()
        with SerialBoard(path, timeout_s=0.5) as board:
            assert board.hello().slots == 3
            assert len(board.status()) == 3
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
