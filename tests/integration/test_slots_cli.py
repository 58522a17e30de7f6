"""``kiosk slots``, ``kiosk eject`` and the simulator's entry point, against a real pty."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from cloud_sync.events import SlotEjected, SlotService, parse_event
from cloud_sync.outbox import Outbox
from edge.cli.main import app
from edge.cli.runner import run_app
from edge.settings import load_settings
from hardware.driver import SerialBoard
from hardware.messages import Door, DoorState
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)
P = TypeVar("P", SlotEjected, SlotService)


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


def said(err: str) -> list[str]:
    """What the command told the person on standard error (not the JSON log lines)."""
    return [line for line in err.splitlines() if line.startswith("kiosk: ")]


def recorded(model: type[P]) -> list[P]:
    """The payloads of the events of one type in the kiosk's outbox, oldest first."""
    settings = load_settings()
    events = Outbox(settings.outbox_path, settings.kiosk.id).events()
    return [e.payload for e in events if isinstance(e.payload, model)]


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
    services = recorded(SlotService)
    assert [(p.slot, p.enabled, p.board_confirmed) for p in services] == [
        (2, False, True),
        (2, True, True),
    ]
    assert {p.operator for p in services} == {getpass.getuser()}


def test_only_a_technician_may_disable_a_slot(
    sim: BoardSimulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.getuid", lambda: 54321)  # not root, not the state folder's owner
    monkeypatch.setattr("os.getgroups", lambda: [54321])
    monkeypatch.setattr("os.getgid", lambda: 54321)
    for action in ("disable", "enable"):
        code, _, err = kiosk(capsys, "slots", action, "2")
        assert code == 10 and "kiosk-tech" in err and f"slots {action}" in err
    assert not sim.cabinet.slots[1].disabled
    monkeypatch.undo()
    assert recorded(SlotService) == []
    code, _, err = kiosk(capsys, "slots", "--json", "--cached")
    assert code == 4 and "no slot state" in err.lower()  # refused before anything was written


def test_disable_while_the_board_is_silent_holds_on_the_kiosk(
    sim: BoardSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.act("silent")
    code, _, err = kiosk(capsys, "slots", "disable", "4")
    assert code == 6 and len(said(err)) == 1
    assert "disabled on this kiosk" in err and "did not confirm" in err
    [service] = recorded(SlotService)
    assert (service.slot, service.enabled, service.board_confirmed) == (4, False, False)
    listing = json.loads(kiosk(capsys, "slots", "--json", "--cached")[1])
    assert listing["slots"][3]["state"] == "disabled"


def test_a_slot_disabled_on_the_board_is_shown_disabled(
    sim: BoardSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.cabinet.slots[4].disabled = True  # the board's own flag, not set through the kiosk
    code, out, _ = kiosk(capsys, "slots", "--json")
    assert code == 0
    row = json.loads(out)["slots"][4]
    assert (row["state"], row["disabled"]) == ("disabled", True)
    code, out, _ = kiosk(capsys, "slots")
    assert code == 0 and "disabled on the board" in out


def test_the_least_charge_to_rent_is_a_setting(
    sim: BoardSimulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for slot, charge in zip(sim.cabinet.slots, (50, 85, 99, 100, 70, 90), strict=True):
        slot.charge = float(charge)
    states = {}
    for setting in ("80", "95"):
        monkeypatch.setenv("KIOSK_BOARD__MIN_CHARGE_PCT", setting)
        rows = json.loads(kiosk(capsys, "slots", "--json")[1])["slots"]
        states[setting] = [row["state"] for row in rows]
    assert states["80"] == ["charging", "ready", "ready", "ready", "charging", "ready"]
    assert states["95"] == ["charging", "charging", "ready", "ready", "charging", "charging"]
    monkeypatch.setenv("KIOSK_BOARD__MIN_CHARGE_PCT", "0")
    code, _, err = kiosk(capsys, "slots", "--json")
    assert code == 3 and "board.min_charge_pct" in err


def test_eject_records_the_operator(
    sim: BoardSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    powerbank = sim.cabinet.slots[2].powerbank_id
    code, out, _ = kiosk(capsys, "eject", "3", "--reason", "stuck powerbank")
    assert code == 0, out
    assert [record.slot for record in sim.ejects] == [3]
    [payload] = recorded(SlotEjected)
    assert (payload.slot, payload.powerbank_id, payload.reason) == (3, powerbank, "stuck powerbank")
    assert (payload.operator, payload.outcome) == (getpass.getuser(), "presented")


@pytest.mark.parametrize(
    ("fault", "outcome", "detail"),
    [("jam", "jammed", ""), ("remove", "refused", "slot_empty")],
)
def test_a_failed_eject_records_the_operator_and_the_outcome(
    sim: BoardSimulator, capsys: pytest.CaptureFixture[str], fault: str, outcome: str, detail: str
) -> None:
    powerbank = sim.cabinet.slots[2].powerbank_id
    assert kiosk(capsys, "slots", "--json")[0] == 0  # the kiosk knows the powerbank in slot 3
    sim.act(fault, 3)  # type: ignore[arg-type]
    code, out, err = kiosk(capsys, "eject", "3", "--reason", "customer locked out")
    assert code == 6 and out == ""
    [line] = said(err)
    assert line.startswith(f"kiosk: error: slot 3: the eject failed ({outcome})")
    assert f"operator {getpass.getuser()}" in line
    [payload] = recorded(SlotEjected)
    assert (payload.slot, payload.outcome, payload.detail) == (3, outcome, detail)
    assert (payload.operator, payload.reason) == (getpass.getuser(), "customer locked out")
    assert payload.powerbank_id == powerbank
    state = json.loads(kiosk(capsys, "slots", "--json", "--cached")[1])["slots"][2]["state"]
    assert state == ("fault" if fault == "jam" else "empty")


def test_a_slot_ejected_event_from_before_the_outcome_field_still_validates() -> None:
    event = parse_event(
        {
            "id": "01J00000000000000000000000",
            "kiosk_id": "kiosk-a",
            "seq": 1,
            "type": "slot.ejected",
            "occurred_at": "2026-03-01T10:00:00Z",
            "payload": {"slot": 3, "powerbank_id": "PB1", "operator": "ana", "reason": "x"},
        }
    )
    assert isinstance(event.payload, SlotEjected)
    assert (event.payload.outcome, event.payload.detail) == ("presented", "")


def test_bad_slot_and_silent_board(sim: BoardSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert kiosk(capsys, "eject", "9", "--reason", "x")[0] == 4
    assert kiosk(capsys, "slots", "--json")[0] == 0
    sim.act("silent")
    code, out, err = kiosk(capsys, "slots", "--json")
    assert code == 6 and json.loads(out)["source"] == "cached"
    assert "did not answer" in err
    code, _, err = kiosk(capsys, "eject", "1", "--reason", "test")
    assert code == 6 and sim.ejects == []
    [line] = said(err)
    assert "the eject failed (no_answer)" in line and "check 'kiosk slots'" in line
    [payload] = recorded(SlotEjected)
    assert (payload.slot, payload.outcome, payload.operator) == (1, "no_answer", getpass.getuser())
    assert payload.powerbank_id == sim.cabinet.slots[0].powerbank_id


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


def test_the_simulator_trips_the_tamper_switch_on_a_timer() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "hardware.sim", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--tamper-after-s" in helped.stdout and "--door-open-after-s" in helped.stdout
    process = subprocess.Popen(
        [sys.executable, "-m", "hardware.sim", "--slots", "2", "--tamper-after-s", "0.5"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        path = process.stdout.readline().strip()
        with SerialBoard(path, timeout_s=0.5) as board:
            board.hello()
            seen = []
            while (event := board.next_event(timeout=5)) is not None:
                seen.append(event)
                if isinstance(event, Door):
                    break
            assert Door(DoorState.TAMPER) in seen
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
