"""Commands a restart cut short: answered from the eject journal, never left ``running``.

Real SQLite files: the command ledger (``commands.sqlite``) and the outbox with its eject
journal; the executor is built again over the same files, as a restarted kiosk does.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

from cloud_sync.mqtt.executor import CommandExecutor
from cloud_sync.mqtt.ledger import CommandLedger
from cloud_sync.outbox import Outbox
from edge.cabinet.ejects import SETTLE_RESERVE, Intent
from edge.cabinet.rentals import Ledger
from edge.ops.wiring import eject_recovery

if TYPE_CHECKING:
    from edge.runtime.loop import Runtime


def executor(state: Path, journal_of: object) -> CommandExecutor:
    return CommandExecutor(
        kiosk_id="kiosk-a",
        public_key=None,
        ledger=CommandLedger(state / "commands.sqlite"),
        handlers={},
        slots=4,
        recoveries={"eject": eject_recovery(cast("Runtime", journal_of))},
    )


def statuses(state: Path) -> dict[str, str]:
    return {entry.id: entry.status for entry in CommandLedger(state / "commands.sqlite").recent()}


def test_interrupted_commands_are_answered_once_their_outcome_is_known(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", "kiosk-a")
    journal = Ledger(outbox).journal
    runtime = SimpleNamespace(journal=journal)
    before = CommandLedger(tmp_path / "commands.sqlite")
    expires = time.time() + 60
    for command_id, name in (("C-sent", "eject"), ("C-never", "eject"), ("C-sync", "sync-now")):
        assert before.claim(command_id, name, "ops:test", expires)
    before.close()
    intent = Intent("R-1", "operator", 2, "PB-2", "remote:ops:test", "stuck", "C-sent", "gone:1")
    journal.begin(intent)  # the eject reached the board; the kiosk died before its outcome

    restarted = executor(tmp_path, runtime)
    assert [entry.id for entry in restarted.interrupted] == ["C-sent", "C-never", "C-sync"]
    first = {result.id: result for result in restarted.recover()}
    assert set(first) == {"C-never", "C-sync"}  # the eject waits for its settlement
    assert first["C-never"].status == "error" and "nothing ejected" in first["C-never"].detail
    assert first["C-sync"].status == "error" and "interrupted" in first["C-sync"].detail
    assert statuses(tmp_path)["C-sent"] == "running"

    event = journal.record("R-1", "taken", "settled from the slot's status", None)
    assert event is not None
    assert journal.record("R-1", "taken") is None  # settled once
    [answer] = restarted.recover()
    assert (answer.id, answer.status) == ("C-sent", "ok")
    assert answer.data == {"slot": 2, "powerbank_id": "PB-2", "outcome": "taken"}
    assert restarted.recover() == [] and restarted.interrupted == []
    assert set(statuses(tmp_path).values()) == {"ok", "error"}
    assert executor(tmp_path, runtime).interrupted == []  # nothing left for the next start
    payloads = [e.payload for e in outbox.events() if e.type == "slot.ejected"]
    assert len(payloads) == 1
    outbox.close()


def test_an_eject_settled_as_not_ejected_is_answered_as_an_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", "kiosk-a")
    journal = Ledger(outbox).journal
    ledger = CommandLedger(tmp_path / "commands.sqlite")
    assert ledger.claim("C-1", "eject", "ops:test", time.time() + 60)
    ledger.close()
    journal.begin(Intent("R-1", "operator", 3, "PB-3", "remote:ops:test", "x", "C-1", "gone:1"))
    journal.record("R-1", "failed", "interrupted: the powerbank is still there")
    [answer] = executor(tmp_path, SimpleNamespace(journal=journal)).recover()
    assert answer.status == "error" and "the eject failed (failed)" in answer.detail
    outbox.close()


def test_the_reserve_covers_the_largest_slot_ejected_event(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", "k" * 63)
    outbox.append(
        "slot.ejected",
        slot=64,
        powerbank_id="b" * 64,
        operator="o" * 64,
        reason="r" * 200,
        outcome="no_answer",
        detail="d" * 200,
    )
    [(size,)] = outbox.connection.execute("SELECT size FROM events").fetchall()
    outbox.close()
    assert size <= SETTLE_RESERVE
