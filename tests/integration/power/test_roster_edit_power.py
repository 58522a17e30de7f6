"""A technician's hand edit of the kiosk's roster cut by the power: the deletion that
reached the disk keeps its ``roster.edited`` record naming the operator, even when the power
went after the roster changed and before the outbox took the event (two files: the event
is owed in the roster's own transaction, and the next writer records it, once).

Real parts: ``kiosk roster delete`` in a subprocess on the kiosk's state folder on LazyFS,
another process holding the outbox's write lock as a busy writer does.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time

import pytest

from cloud_sync.outbox import Outbox
from tests.helpers import BIN, run_cli
from tests.integration.power.kit import Part, event_bodies, fsync_tree, inspect, wait_until
from tests.integration.power.lazyfs import PowerFolder
from tests.integration.test_roster_cli import make_roster

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]

VERSION = "SELECT value FROM meta WHERE key = 'version'"


def test_a_hand_deletion_cut_before_the_outbox_took_its_record_is_still_recorded_once(
    power: PowerFolder,
) -> None:
    state = power.path / "state"
    state.mkdir()
    roster = make_roster(state)  # rider-a, rider-b; version 2
    Outbox(state / "outbox.sqlite", "kiosk-dev").close()  # the kiosk's, as `kiosk run` made it
    env = {key: value for key, value in os.environ.items() if not key.startswith("KIOSK_")}
    env["KIOSK_KIOSK__STATE_DIR"] = str(state)
    fsync_tree(state)

    locker = Part("lock", str(state / "outbox.sqlite"))
    locker.wait_for("locked")
    deleting = subprocess.Popen(
        [str(BIN / "kiosk"), "roster", "delete", "rider-a"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: inspect(roster, VERSION) == [("3",)])
        time.sleep(0.2)  # the command is waiting for the outbox now
        assert deleting.poll() is None, deleting.communicate()
    finally:
        deleting.kill()
        deleting.communicate(timeout=10)
        locker.kill()
    power.cut()
    power.mount()
    assert inspect(roster, "SELECT person_id FROM riders") == [("rider-b",)]

    result = run_cli("roster", "delete", "rider-b", env={"KIOSK_KIOSK__STATE_DIR": str(state)})
    assert result.returncode == 0, result.stderr
    me = pwd.getpwuid(os.getuid()).pw_name
    edits = [e["payload"] for e in event_bodies(state) if e["type"] == "roster.edited"]
    assert edits == [
        {"action": "delete", "operator": me, "riders": 1, "roster_version": 3},
        {"action": "delete", "operator": me, "riders": 1, "roster_version": 4},
    ]
