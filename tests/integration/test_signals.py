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

from cloud_sync.outbox import Outbox
from cloud_sync.signing import kiosk_key
from edge.cli.signals import SignalRelay
from tests.conftest import free_port
from tests.helpers import BIN
from tests.integration.sync.test_hostile_cloud import Dripper

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


def sync_run(state: Path, log: Path, **settings: str) -> subprocess.Popen[bytes]:
    """A real ``kiosk sync run`` of kiosk ``kiosk-s`` in ``state`` (its key made there
    first), its output in ``log``; ``settings`` as ``KIOSK_SYNC__<NAME>`` values."""
    kiosk_key(state)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env.update(KIOSK_KIOSK__ID="kiosk-s", KIOSK_KIOSK__STATE_DIR=str(state))
    env.update({f"KIOSK_SYNC__{name.upper()}": value for name, value in settings.items()})
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "kiosk"), "sync", "run"], env=env, stdout=out, stderr=out
        )


def test_sync_run_hammered_with_sync_now_still_stops_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "sync.log"
    proc = sync_run(
        tmp_path / "kiosk",
        log,
        cloud_url=f"http://127.0.0.1:{free_port()}",  # nobody there: backoff
        interval_s="0.5",
        backoff_base_s="0.01",
        backoff_max_s="1",
        timeout_s="1",
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


def test_sync_run_stopped_while_the_cloud_drips_its_answer_ends_within_the_grace(
    tmp_path: Path,
) -> None:
    """A stop during an exchange that could run to ``sync.request_deadline_s`` (300 s, far
    past systemd's stop timeout) ends the process after ``sync.stop_grace_s``, with one
    line saying so, and the event it was sending stays pending."""
    dripper = Dripper("body")
    state = tmp_path / "kiosk"
    outbox = Outbox(state / "outbox.sqlite", "kiosk-s")
    outbox.append("kiosk.started", version="1.0.0", mode="rental")
    outbox.close()
    log = tmp_path / "sync.log"
    proc = sync_run(
        state,
        log,
        cloud_url=dripper.url,
        timeout_s="5",  # a byte every 0.2 s: only the deadline would end it
        stop_grace_s="2",
    )
    try:
        time.sleep(3.0)  # the first pass is reading the answer that never ends
        assert proc.poll() is None, log.read_text()
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
        assert 1.5 < time.monotonic() - stopped < 10
    finally:
        dripper.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "sync.stop_forced" in text and "Traceback" not in text
    assert Outbox(state / "outbox.sqlite", "kiosk-s", read_only=True).count("pending") == 1
