"""``kiosk run``: the kiosk's parts composed around the rider flow.

Threads, each with one job, meeting only at the flow's input queue:

- **vision**: camera frames through the live face pipeline; posts faces and decisions.
- **board events**: the slot board's notifications into the inventory, and returns,
  removals and re-locks into the flow.
- **eject**: one eject at a time through the driver (it blocks until the powerbank is
  presented); posts the outcome.
- **flow** (the caller's thread, ``run``): takes one input at a time, feeds the pure state
  machine, and carries out its effects: the rider screen, ejects, events. It also pings
  the systemd watchdog, so a stuck flow restarts the service.
- **rider page**: uvicorn serving ``edge.ui`` on the configured local port.

Vision never runs on the flow's thread, so the screen and the board stay responsive while
a face is encoded. SIGTERM lets a rental under way finish (bounded by the flow's own
timeouts) before the process exits.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from ulid import ULID

from cloud_sync.outbox import Outbox
from edge import flow as f
from edge import systemd
from edge.rentals import Ledger, refusal
from edge.slots import Inventory, SlotState, eject_slot
from edge.ui.server import ScreenHub
from edge.vault.store import RosterStore
from edge.vision.consensus import DecisionRecord
from edge.vision.live import LivePipeline
from edge.vision.setup import gallery as load_gallery
from hardware.board import BoardEvent, SlotBoard
from hardware.cameras import Camera
from hardware.errors import BoardError, HardwareError, SlotJammedError
from hardware.messages import EjectOutcome, Inserted, Jammed, Relocked, Removed

log = structlog.get_logger("edge.runtime")


@dataclass(frozen=True)
class Decided:
    """The vision thread's accepted decision, turned into ``flow.Recognised`` by the flow thread."""

    at: float
    record: DecisionRecord


@dataclass(frozen=True)
class Stop:
    at: float


class Runtime:
    """The kiosk's parts, wired together; ``run`` until ``stop`` is set."""

    def __init__(
        self,
        *,
        kiosk_id: str,
        flow: f.Flow,
        camera: Camera,
        pipeline: LivePipeline,
        board: SlotBoard,
        board_events: Callable[[float], BoardEvent | None],
        inventory: Inventory,
        outbox: Outbox,
        roster: RosterStore,
        hub: ScreenHub,
        model_version: str,
        service_check: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kiosk_id = kiosk_id
        self.flow = flow
        self.camera = camera
        self.pipeline = pipeline
        self.board = board
        self._board_events = board_events
        self.inventory = inventory
        self.outbox = outbox
        self.ledger = Ledger(outbox)
        self.roster = roster
        self.hub = hub
        self.model_version = model_version
        self._service_check = service_check
        self._clock = clock
        self.inputs: queue.Queue[f.Input | Decided | Stop] = queue.Queue()
        self._ejects: queue.Queue[f.Eject | None] = queue.Queue()
        self._stop = threading.Event()
        self._riders = roster.load().riders
        self._roster_version = roster.version
        self._threads: list[threading.Thread] = []
        self.decisions: list[DecisionRecord] = []

    # -- threads ---------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _vision(self) -> None:
        face_in_view = False
        last_seen: tuple[int, str | None] | None = None
        try:
            for frame in self.camera.frames():
                if self._stop.is_set():
                    return
                outcome = self.pipeline.process(frame)
                now = self._clock()
                if outcome.record is not None:
                    record = outcome.record
                    self.decisions.append(record)
                    log.info("face.decision", **record.as_dict())
                    if record.accepted:
                        self.inputs.put(Decided(now, record))
                    else:
                        self.inputs.put(f.NotRecognised(now, record.reason))
                    continue
                if outcome.faces == 0:
                    if face_in_view:
                        self.inputs.put(f.FaceGone(now))
                    face_in_view, last_seen = False, None
                    continue
                face_in_view = True
                seen = (outcome.faces, outcome.hint)
                if seen != last_seen:
                    self.inputs.put(f.FaceSeen(now, faces=outcome.faces, hint=outcome.hint))
                    last_seen = seen
        except HardwareError as exc:
            log.error("camera.failed", error=str(exc))
        finally:
            log.info("vision.stopped")

    def _board_loop(self) -> None:
        while not self._stop.is_set():
            event = self._board_events(0.2)
            if event is None:
                continue
            try:
                self.inventory.apply(event)
            except Exception as exc:  # the inventory must never stop the board's events
                log.error("inventory.failed", error=str(exc), event=type(event).__name__)
            now = self._clock()
            if isinstance(event, Removed):
                self.inputs.put(f.Taken(now, event.slot))
            elif isinstance(event, Relocked):
                self.inputs.put(f.NotTaken(now, event.slot))
            elif isinstance(event, Jammed):
                self.inputs.put(f.EjectFailed(now, event.slot, "jammed"))
            elif isinstance(event, Inserted):
                self.inputs.put(f.Returned(now, event.slot, event.powerbank_id, event.charge))

    def _eject_loop(self) -> None:
        while True:
            command = self._ejects.get()
            if command is None:
                return
            try:
                result = eject_slot(self.board, self.inventory, command.slot, command.rental_id)
            except SlotJammedError:
                self.inputs.put(f.EjectFailed(self._clock(), command.slot, "jammed"))
                continue
            except BoardError as exc:
                log.warning("eject.failed", slot=command.slot, error=str(exc))
                self.inputs.put(f.EjectFailed(self._clock(), command.slot, "board_fault"))
                continue
            now = self._clock()
            if result.outcome == EjectOutcome.JAMMED:
                self.inputs.put(f.EjectFailed(now, command.slot, "jammed"))
                continue
            self.inputs.put(f.Ejected(now, command.slot, result.powerbank_id))
            if result.outcome == EjectOutcome.TAKEN:
                self.inputs.put(f.Taken(now, command.slot))
            elif result.outcome == EjectOutcome.RELOCKED:
                self.inputs.put(f.NotTaken(now, command.slot))

    # -- the flow's thread ---------------------------------------------------------------------

    def _recognised(self, decided: Decided) -> f.Recognised | f.NotRecognised:
        person = decided.record.person_id
        rider = self._riders.get(person or "")
        if rider is None or person is None:  # deleted between the decision and now
            return f.NotRecognised(decided.at, "unknown")
        first_name = rider.display_name.split()[0] if rider.display_name.strip() else person
        why = refusal(rider.entitlements, self.ledger.open_count(person), datetime.now(UTC).date())
        slot = None
        if why is None and self.flow.mode == "rental":
            slot = self.inventory.choose()
        return f.Recognised(decided.at, person, first_name, refusal=why, slot=slot)

    def _carry_out(self, effects: list[f.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, f.Show):
                self.hub.publish(effect.screen)
            elif isinstance(effect, f.Eject):
                held = self.inventory.slot(effect.slot).powerbank_id
                self.ledger.begin(effect.rental_id, effect.person_id, effect.slot, held)
                self._ejects.put(effect)
            elif isinstance(effect, f.Record):
                self._record(effect)

    def _record(self, effect: f.Record) -> None:
        data = effect.as_dict()
        if effect.type == "rental.started":
            self.ledger.started(str(data["rental_id"]), str(data["powerbank_id"]))
            log.info(
                "rental.summary", outcome="started", slot=data["slot"], rental_id=data["rental_id"]
            )
        elif effect.type == "rental.failed":
            self.ledger.failed(str(data["rental_id"]), str(data["reason"]))
            log.info("rental.summary", outcome="failed", slot=data["slot"], reason=data["reason"])
        elif effect.type == "rental.returned":
            charge = data.get("charge")
            closed = self.ledger.returned(
                int(data["slot"] or 0),
                str(data["powerbank_id"]),
                None if charge is None else int(charge),
            )
            log.info("rental.returned", slot=data["slot"], closed=closed is not None)
        else:
            self.outbox.append(effect.type, **data)

    def _maybe_reload_roster(self) -> None:
        version = self.roster.version
        if version == self._roster_version:
            return
        self._riders = self.roster.load().riders
        self.pipeline.swap_gallery(load_gallery(self.roster, self.model_version))
        self._roster_version = version
        log.info("roster.reloaded", version=version, riders=len(self._riders))

    def _settle_interrupted(self) -> int:
        """Rentals whose eject was under way when the kiosk stopped, settled from the slots.

        A slot that is empty now gave its powerbank to the rider (``rental.started``); a slot
        that still holds it never ejected or re-locked (``rental.failed``); a powerbank still
        standing out waits for the board to say. Returns how many remain unsettled.
        """
        if self.flow.rental is not None:
            return 0
        intents = self.ledger.unsettled()
        if not intents:
            return 0
        try:
            self.inventory.refresh(self.board)
        except BoardError as exc:
            log.warning("rental.unsettled", count=len(intents), error=str(exc))
            return len(intents)
        waiting = 0
        for intent in intents:
            slot = self.inventory.slot(intent.slot)
            if slot.state == SlotState.EMPTY:
                self.ledger.started(intent.rental_id, intent.powerbank_id or "unknown")
                log.info("rental.settled", rental_id=intent.rental_id, outcome="started")
            elif slot.state in (
                SlotState.CHARGING,
                SlotState.READY,
                SlotState.DISABLED,
                SlotState.FAULT,
            ):
                self.ledger.failed(intent.rental_id, "interrupted")
                log.info("rental.settled", rental_id=intent.rental_id, outcome="failed")
            else:
                waiting += 1
        return waiting

    def stop(self) -> None:
        self.inputs.put(Stop(self._clock()))

    def run(self, watchdog_s: float | None = None) -> None:
        """Start the threads and run the flow until ``stop`` (SIGTERM) and any rental ends."""
        unsettled = self._settle_interrupted()
        self.outbox.append("kiosk.started", version=_version(), mode=self.flow.mode)
        self._spawn(self._board_loop, "board-events")
        self._spawn(self._eject_loop, "eject")
        self._spawn(self._vision, "vision")
        self._carry_out(self.flow.handle(f.Service(self._clock(), self._service_check())))
        systemd.notify("READY=1", "STATUS=renting")
        ping_every = (watchdog_s or 0) / 3
        last_ping = last_check = self._clock()
        stopping = False
        while True:
            try:
                item = self.inputs.get(timeout=0.2)
            except queue.Empty:
                item = f.Tick(self._clock())
            now = self._clock()
            if isinstance(item, Stop):
                stopping = True
                systemd.notify("STOPPING=1", "STATUS=finishing the rental under way")
                item = f.Service(now, "stopping")
            elif isinstance(item, Decided):
                item = self._recognised(item)
            rental_id = str(ULID()) if isinstance(item, f.Recognised) else None
            self._carry_out(self.flow.handle(item, rental_id=rental_id))
            if stopping and self.flow.phase not in (f.Phase.EJECTING, f.Phase.TAKE):
                break
            if ping_every and now - last_ping >= ping_every:
                systemd.notify("WATCHDOG=1")
                last_ping = now
            if now - last_check >= 1.0 and not stopping:
                last_check = now
                self._maybe_reload_roster()
                if unsettled:
                    unsettled = self._settle_interrupted()
                reason = self._service_check() or (
                    None if self.inventory.board_online else "board_offline"
                )
                self._carry_out(self.flow.handle(f.Service(now, reason)))
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._ejects.put(None)
        self.camera.close()
        for thread in self._threads:
            thread.join(timeout=3)


def _version() -> str:
    from edge import __version__

    return __version__


def describe(runtime: Runtime) -> dict[str, Any]:
    """A summary for status files and logs (no personal data)."""
    return {
        "kiosk_id": runtime.kiosk_id,
        "phase": runtime.flow.phase.value,
        "out_of_service": runtime.flow.out_of_service,
        "roster_version": runtime.roster.version,
        "board_online": runtime.inventory.board_online,
    }
