"""Field operations wired into ``kiosk run``: the reporter, MQTT and its command handlers.

``start_ops(settings, runtime)`` starts the ``Reporter`` (``runtime.json``, gauges, the
offline indicator) and, when ``[mqtt] enabled = true``, the MQTT link with the runtime's
handlers:

- ``eject``: asks the flow's thread first (``runtime.Call``): refused while a rental is
  under way; otherwise the kiosk is held out of service ("maintenance" on the screen) for
  the eject, so no rental can start beside it. It ejects through
  ``edge.cabinet.settle.operator_eject``, as ``kiosk eject`` does: the intent (with the
  command's id) in the eject journal before the board is asked, the outcome recorded as a
  ``slot.ejected`` event naming ``remote:<issuer>``. An eject command a restart cut short
  is answered once the runtime settled its intent from the slot's status
  (``eject_recovery``); one that never reached the board is answered "nothing ejected".
- ``sync-now``: SIGUSR1 to this user's ``kiosk sync run`` processes (the daemon's wake).
- ``reload-roster``: waits until the runtime has the roster on disk loaded (it checks
  every second) and answers its version.
- ``maintenance-on|off`` (``edge.ops.remote``) and ``ping`` (built in).

Every handler runs on the link's command thread: a slow eject or a broker that went away
never stalls the flow's thread, and publishing never blocks.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from cloud_sync.errors import OutboxFullError
from cloud_sync.mqtt.commands import Command, EjectArgs
from cloud_sync.mqtt.executor import Handler, HandlerData, Recovery
from cloud_sync.mqtt.ledger import LedgerEntry
from cloud_sync.mqtt.telemetry import Telemetry
from edge.cabinet.settle import EJECTED, operator_eject
from edge.ops.remote import open_kiosk_mqtt, remote_operator, telemetry_snapshot
from edge.ops.reporter import Reporter
from edge.settings import Settings

if TYPE_CHECKING:
    from cloud_sync.mqtt.client import KioskMqtt
    from edge.runtime.loop import Runtime

log = structlog.get_logger("edge.ops")

#: How long a remote command waits for the flow's thread to let it in.
ADMIT_S = 10.0
#: How long ``reload-roster`` waits for the runtime to load the roster on disk.
RELOAD_S = 10.0
HOLD_REASON = "maintenance"


class CommandRefused(RuntimeError):
    """A remote command the kiosk will not run now (the result says why)."""


def busy(runtime: Runtime) -> str | None:
    """Why a remote eject may not run now: a rental (or its eject) under way."""
    from edge import flow as f

    if runtime.flow.rental is not None or runtime.flow.phase in (
        f.Phase.EJECTING,
        f.Phase.CONFIRMING,
        f.Phase.TAKE,
    ):
        return "a rental is under way"
    if runtime.worker.current is not None:
        return "an eject is under way"
    if runtime.hold is not None:
        return "another remote command is under way"
    return None


def _admit(runtime: Runtime) -> None:
    """Hold the kiosk out of service, decided on the flow's thread; raise when it is busy."""
    from edge.runtime.loop import Call

    answer: queue.Queue[str | None] = queue.Queue(maxsize=1)
    lock = threading.Lock()
    given_up = False  # the command was answered "not in time": its call must hold nothing

    def decide() -> None:
        with lock:
            if given_up:
                return
            why = busy(runtime)
            if why is None:
                runtime.hold = HOLD_REASON
            answer.put(why)

    runtime.inputs.put(Call(time.monotonic(), decide))
    try:
        why = answer.get(timeout=ADMIT_S)
    except queue.Empty:
        with lock:  # decided in the meantime, or never will be
            if answer.empty():
                given_up = True
                raise CommandRefused("the kiosk's flow did not answer in time") from None
            why = answer.get_nowait()
    if why is not None:
        raise CommandRefused(f"refused: {why}")


def _release(runtime: Runtime) -> None:
    from edge.runtime.loop import Recheck

    runtime.hold = None
    runtime.inputs.put(Recheck(time.monotonic()))


def eject_handler(runtime: Runtime) -> Handler:
    """``eject``: one slot, serialised with rentals, through the eject journal like
    ``kiosk eject``."""

    def eject(command: Command) -> HandlerData:
        args = command.typed_args()
        assert isinstance(args, EjectArgs)
        slot, who = args.slot, remote_operator(command)
        _admit(runtime)
        try:
            done = operator_eject(
                runtime.board,
                runtime.inventory,
                runtime.journal,
                slot,
                operator=who,
                reason=args.reason,
                command_id=command.id,
            )
        except OutboxFullError as exc:
            raise CommandRefused(f"slot {slot}: not ejected: {exc}") from None
        finally:
            _release(runtime)
        if done.error is not None:
            raise CommandRefused(
                f"slot {slot}: the eject failed ({done.outcome}): {done.error}"
            ) from None
        return {"slot": slot, "powerbank_id": done.powerbank_id, "outcome": done.outcome}

    return eject


def eject_recovery(runtime: Runtime) -> Recovery:
    """An ``eject`` command a restart cut short: answered from its intent once the runtime
    settled it from the slot's status (None until then)."""

    def recover(entry: LedgerEntry) -> HandlerData | None:
        found = runtime.journal.for_command(entry.id)
        if found is None:
            raise CommandRefused(
                "interrupted by a restart before the eject reached the board: nothing ejected"
            )
        if found.outcome is None:
            return None  # the runtime settles it once the board answers
        slot = found.intent.slot
        if found.outcome not in EJECTED:
            detail = f": {found.detail}" if found.detail else ""
            raise CommandRefused(f"slot {slot}: the eject failed ({found.outcome}){detail}")
        return {"slot": slot, "powerbank_id": found.powerbank_id, "outcome": found.outcome}

    return recover


def sync_daemons(proc: Path = Path("/proc")) -> list[int]:
    """The pids of this user's ``kiosk sync run`` processes."""
    found: list[int] = []
    uid = os.getuid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        names = [Path(os.fsdecode(arg)).name for arg in argv]
        pairs = list(itertools.pairwise(names))
        if "kiosk" in names and ("sync", "run") in pairs:
            found.append(int(entry.name))
    return found


def wake_sync(command: Command) -> HandlerData:
    """``sync-now``: wake the sync daemon (SIGUSR1, as ``kiosk sync run`` documents)."""
    woken = 0
    for pid in sync_daemons():
        try:
            os.kill(pid, signal.SIGUSR1)
            woken += 1
        except OSError:
            continue
    if not woken:
        raise CommandRefused("no sync daemon (kiosk sync run) is running on this kiosk")
    return {"woken": woken}


def reload_handler(runtime: Runtime) -> Handler:
    def reload(command: Command) -> HandlerData:
        deadline = time.monotonic() + RELOAD_S
        while runtime.loaded_roster_version != runtime.roster.version:
            if time.monotonic() > deadline:
                raise CommandRefused("the runtime did not load the roster in time")
            time.sleep(0.1)
        return {"roster_version": runtime.loaded_roster_version}

    return reload


def snapshot(runtime: Runtime, state_dir: Path) -> Telemetry:
    camera = runtime.camera_health
    return telemetry_snapshot(
        runtime.inventory.slots(),
        runtime.outbox.stats(),
        runtime.metrics.counts(),
        maintenance=(state_dir / "maintenance").exists(),
        camera_ok=None if camera is None or camera.status is None else camera.down is None,
        board_online=runtime.inventory.board_online,
    )


@dataclass
class Ops:
    """What ``kiosk run`` starts beside the runtime; ``stop`` on the way out."""

    reporter: Reporter
    link: KioskMqtt | None

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()  # the retained "offline", then disconnect
        self.reporter.stop()


def start_ops(settings: Settings, runtime: Runtime) -> Ops:
    """The reporter, and the MQTT link when enabled (both return at once)."""
    state_dir = settings.kiosk.state_dir
    link: KioskMqtt | None = None
    if settings.mqtt.enabled:
        handlers = {
            "eject": eject_handler(runtime),
            "sync-now": wake_sync,
            "reload-roster": reload_handler(runtime),
        }
        link = open_kiosk_mqtt(
            settings,
            handlers,
            snapshot=lambda: snapshot(runtime, state_dir),
            outbox=runtime.outbox,
            slots=settings.board.slots,
            recoveries={"eject": eject_recovery(runtime)},
        )
    reporter = Reporter(
        runtime,
        state_dir,
        settings.kiosk.mode,
        mqtt=lambda: link,
        every_s=2.0,
        offline_after_s=settings.ui.offline_after_s,
    ).start()
    return Ops(reporter, link)
