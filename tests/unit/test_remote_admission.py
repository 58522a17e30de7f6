"""A remote eject is admitted on the flow's thread; one answered "not in time" never
leaves the kiosk held out of service when the flow's thread gets to it later."""

from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from edge import flow as f
from edge.ops import wiring
from edge.runtime.loop import Call


def stalled_runtime(stall_s: float) -> tuple[Any, threading.Event]:
    """The flow's side of a runtime: its thread runs each Call as ``Runtime.run`` does,
    after a first stall (a slow roster reload, a start before the loop reads inputs)."""
    runtime = SimpleNamespace(
        inputs=queue.Queue(),
        flow=SimpleNamespace(rental=None, phase=f.Phase.IDLE),
        worker=SimpleNamespace(current=None),
        hold=None,
    )
    ran = threading.Event()

    def flow_thread() -> None:
        time.sleep(stall_s)
        while True:
            item = runtime.inputs.get()
            if isinstance(item, Call):
                item.fn()
                ran.set()

    threading.Thread(target=flow_thread, daemon=True).start()
    return runtime, ran


def test_an_admission_answered_too_late_holds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wiring, "ADMIT_S", 0.2)
    runtime, ran = stalled_runtime(0.6)
    with pytest.raises(wiring.CommandRefused, match="did not answer in time"):
        wiring._admit(runtime)
    assert ran.wait(5)  # the flow's thread got to the call after the answer
    assert runtime.hold is None, "the kiosk stays out of service for a refused command"
    assert wiring.busy(runtime) is None
    wiring._admit(runtime)  # the next remote command is admitted
    assert runtime.hold == wiring.HOLD_REASON


def test_an_admission_in_time_holds_the_kiosk_and_a_second_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wiring, "ADMIT_S", 2.0)
    runtime, _ = stalled_runtime(0.0)
    wiring._admit(runtime)
    assert runtime.hold == wiring.HOLD_REASON
    with pytest.raises(wiring.CommandRefused, match="another remote command"):
        wiring._admit(runtime)
