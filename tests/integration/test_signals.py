"""Signals reach the long-running commands without ever hanging them: the handler only
writes to a pipe, and the action (stop, sync now) runs on a thread of its own."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cloud_sync.signing import kiosk_key
from edge.cli.signals import SignalRelay
from tests.conftest import free_port
from tests.helpers import BIN

pytestmark = pytest.mark.timeout(30)


def test_a_stop_that_lands_while_the_main_thread_holds_the_services_lock_is_carried_out() -> None:
    # `kiosk run` spends its life in Queue.get on the main thread, holding the queue's lock
    # at moments; a handler that put its Stop there itself would wait for that lock forever
    inputs: queue.Queue[str] = queue.Queue()
    with SignalRelay({signal.SIGUSR1: lambda: inputs.put("stop")}):
        with inputs.mutex:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.2)  # the handler has run here, on this thread, and returned
            assert not inputs.queue
        assert inputs.get(timeout=5) == "stop"


def test_a_burst_of_signals_runs_every_action_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    seen: queue.SimpleQueue[int] = queue.SimpleQueue()
    with SignalRelay({signal.SIGUSR1: lambda: seen.put(1)}):
        for _ in range(50):
            os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while seen.qsize() < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen.qsize() == 50
    assert signal.getsignal(signal.SIGUSR1) == before


def test_a_failing_action_does_not_deafen_the_relay() -> None:
    seen: queue.SimpleQueue[str] = queue.SimpleQueue()

    def wake() -> None:
        seen.put("wake")
        raise RuntimeError("the action broke")

    with SignalRelay({signal.SIGUSR1: wake}):
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen.get(timeout=5) == "wake"
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen.get(timeout=5) == "wake"


def test_sync_run_hammered_with_sync_now_still_stops_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "kiosk"
    kiosk_key(state)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env.update(
        KIOSK_KIOSK__ID="kiosk-s",
        KIOSK_KIOSK__STATE_DIR=str(state),
        KIOSK_SYNC__CLOUD_URL=f"http://127.0.0.1:{free_port()}",  # nobody there: backoff
        KIOSK_SYNC__INTERVAL_S="0.5",
        KIOSK_SYNC__BACKOFF_BASE_S="0.01",
        KIOSK_SYNC__BACKOFF_MAX_S="1",
        KIOSK_SYNC__TIMEOUT_S="1",
    )
    log = tmp_path / "sync.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "kiosk"), "sync", "run"], env=env, stdout=out, stderr=out
        )
    try:
        time.sleep(3.0)  # started and failing its passes
        assert proc.poll() is None, log.read_text()
        for _ in range(300):
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()
