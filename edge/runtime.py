"""``kiosk run``: the kiosk's parts composed around the rider flow.

Threads, each with one job, meeting only at the flow's input queue:

- **vision**: camera frames through the live face pipeline; posts faces and decisions.
- **board events**: the slot board's notifications into the inventory, and returns,
  removals and re-locks into the flow; when the board comes back or boots, a status refresh.
- **board worker** (``edge.board_worker``): every command to the board, one at a time:
  ejects (an unconfirmed one is asked about again with its request id, never sent twice),
  and the slots' status every few seconds (faster while the board does not answer).
- **flow** (the caller's thread, ``run``): takes one input at a time, feeds the pure state
  machine, and carries out its effects: the rider screen, ejects, events. It also pings
  the systemd watchdog, so a stuck flow restarts the service.
- **rider page**: uvicorn serving ``edge.ui`` on the configured local port.

Neither vision nor the board ever runs on the flow's thread, so the screen stays responsive
while a face is encoded or the serial line retries. An eject is sent only once its intent,
and room for the event that will settle it, are in the ledger (``edge.rentals``): a full
outbox takes the kiosk out of service instead. Intents nobody follows any more (the kiosk
was stopped mid-eject, or the board never confirmed) are settled from the slots' status.
SIGTERM lets a rental under way finish (bounded by the flow's own timeouts) before the
process exits.
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

from cloud_sync.errors import OutboxError, OutboxFullError
from cloud_sync.outbox import Outbox
from edge import flow as f
from edge import systemd
from edge.board_worker import BoardWorker, Refreshed
from edge.claim_step import ClaimStep, ClaimVerified, NeedsClaim, checked, claims_of, default_policy
from edge.ops.metrics import KioskMetrics
from edge.rentals import Ledger, refusal
from edge.service import CameraHealth
from edge.slots import Inventory, SlotState
from edge.ui.server import ScreenHub
from edge.vault.store import Rider, RosterStore
from edge.vision.claim import ClaimLockout, VerifyPolicy
from edge.vision.consensus import DecisionRecord
from edge.vision.live import LivePipeline
from edge.vision.setup import gallery_of
from hardware.board import BoardEvent, BoardOnline, SlotBoard
from hardware.cameras import Camera
from hardware.errors import HardwareError
from hardware.messages import Booted, Inserted, Relocked, Removed

log = structlog.get_logger("edge.runtime")

#: Slot states in which a powerbank is (still, or again) locked in: its eject did not happen.
_KEPT = (SlotState.CHARGING, SlotState.READY, SlotState.DISABLED, SlotState.FAULT)


@dataclass(frozen=True)
class Decided:
    """The vision thread's accepted decision, turned into ``flow.Recognised`` by the flow thread."""

    at: float
    record: DecisionRecord


@dataclass(frozen=True)
class Recheck:
    """Something the service check looks at changed (the camera): check now."""

    at: float


@dataclass(frozen=True)
class Stop:
    at: float


@dataclass(frozen=True)
class Call:
    """Run ``fn`` on the flow's thread, between two inputs (remote commands)."""

    at: float
    fn: Callable[[], None]


Item = f.Input | Decided | Refreshed | Recheck | Stop | Call | NeedsClaim | ClaimVerified


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
        camera_health: CameraHealth | None = None,
        claim_policy: VerifyPolicy | None = None,
        claim_lockout: ClaimLockout | None = None,
        status_every_s: float = 5.0,
        status_offline_every_s: float = 1.0,
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
        self.camera_health = camera_health
        self._clock = clock
        self.inputs: queue.Queue[Item] = queue.Queue()
        self.worker = BoardWorker(
            board,
            inventory,
            self.inputs.put,
            every_s=status_every_s,
            offline_every_s=status_offline_every_s,
            confirm_s=flow.timeouts.confirm_s,
            clock=clock,
        )
        self._stop = threading.Event()
        self._riders: dict[str, Rider] = {}
        self._roster_version = -1
        self._maybe_reload_roster()  # the one decrypt at start: riders and gallery together
        self.claims = ClaimStep(
            claim_policy or default_policy(),
            claim_lockout or ClaimLockout(),
            lambda: (self.pipeline.gallery, claims_of(self._riders)),
            self.inputs.put,
            clock,
        )
        hub.on_claim(lambda code: self.inputs.put(f.ClaimEntered(self._clock(), code)))
        self._threads: list[threading.Thread] = []
        self._board_seen = False  # the board answered a status request since the start
        self._let_go: set[str] = set()  # rentals the flow released unconfirmed
        self.decisions: list[DecisionRecord] = []
        self.metrics = KioskMetrics(kiosk_id, _version(), outbox_stats=outbox.stats)
        self.hold: str | None = None  # out of service while a remote command runs
        if camera_health is not None:
            camera_health.listen(lambda: self.inputs.put(Recheck(self._clock())))

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
                    self.metrics.decided(record.accepted, record.reason, record.latency_s)
                    log.info("face.decision", **record.as_dict())
                    if record.accepted:
                        self.inputs.put(Decided(now, record))
                    elif outcome.claim is not None:
                        self.inputs.put(NeedsClaim(now, outcome.claim))
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
        """Notifications into the inventory and the flow. An eject's own outcome (presented,
        jammed) reaches the flow from the board worker only, never twice."""
        while not self._stop.is_set():
            event = self._board_events(0.2)
            if event is None:
                continue
            try:
                self.inventory.apply(event)
            except Exception as exc:  # the inventory must never stop the board's events
                log.error("inventory.failed", error=str(exc), event=type(event).__name__)
            now = self._clock()
            if isinstance(event, Booted):
                self.worker.booted()
            elif isinstance(event, BoardOnline):
                self.worker.refresh_soon()
            elif isinstance(event, Removed):
                self.inputs.put(f.Taken(now, event.slot))
            elif isinstance(event, Relocked):
                self.inputs.put(f.NotTaken(now, event.slot))
            elif isinstance(event, Inserted):
                self.inputs.put(f.Returned(now, event.slot, event.powerbank_id, event.charge))

    # -- the flow's thread ---------------------------------------------------------------------

    def _recognised(self, decided: Decided) -> f.Recognised | f.NotRecognised:
        return self._eligible(decided.at, decided.record.person_id)

    def _eligible(self, at: float, person: str | None) -> f.Recognised | f.NotRecognised:
        self._maybe_reload_roster()  # a rider deleted on disk a moment ago may not rent
        rider = self._riders.get(person or "")
        if rider is None or person is None:  # deleted between the decision and now
            return f.NotRecognised(at, "unknown")
        first_name = rider.display_name.split()[0] if rider.display_name.strip() else person
        renting = self.flow.mode == "rental"
        open_rentals = self.ledger.open_count(person) if renting else 0
        today = datetime.now(UTC).date()
        why = refusal(rider.entitlements, open_rentals, today, mode=self.flow.mode)
        slot = self.inventory.choose() if why is None and renting else None
        return f.Recognised(at, person, first_name, refusal=why, slot=slot)

    def _carry_out(self, effects: list[f.Effect]) -> None:
        eject = next((effect for effect in effects if isinstance(effect, f.Eject)), None)
        if eject is not None and not self._begin(eject):
            effects = self.flow.handle(f.EjectAborted(self._clock(), eject.slot, "outbox_full"))
        for effect in effects:
            if isinstance(effect, f.Show):
                self.hub.publish(effect.screen)
            elif isinstance(effect, f.Eject):
                self.worker.eject(effect)
            elif isinstance(effect, f.Record):
                self._record(effect)
            elif isinstance(effect, f.Unsettled):
                self.worker.abandon(effect.rental_id)
                self._let_go.add(effect.rental_id)
                log.warning("rental.unsettled", slot=effect.slot, rental_id=effect.rental_id)
            elif isinstance(effect, f.VerifyClaim):
                self.claims.verify(effect.code)
        if self.flow.phase != f.Phase.CLAIM:
            self.claims.forget()  # the face is held for the claim step only

    def _begin(self, eject: f.Eject) -> bool:
        """The intent (with room for its outcome) in the ledger; False: do not eject."""
        held = self.inventory.slot(eject.slot).powerbank_id
        try:
            self.ledger.begin(eject.rental_id, eject.person_id, eject.slot, held)
        except OutboxFullError as exc:
            log.error("rental.summary", outcome="refused", reason="outbox_full", error=str(exc))
            return False
        return True

    def _record(self, effect: f.Record) -> None:
        try:
            self._store(effect)
        except OutboxFullError as exc:  # only a return or a boarding: rentals hold room
            log.error("event.unrecorded", type=effect.type, error=str(exc), **effect.as_dict())
            self.inputs.put(Recheck(self._clock()))

    def _store(self, effect: f.Record) -> None:
        data = effect.as_dict()
        if effect.type == "rental.started":
            self.ledger.started(str(data["rental_id"]), str(data["powerbank_id"]))
            self.metrics.rentals.labels("started").inc()
            log.info(
                "rental.summary", outcome="started", slot=data["slot"], rental_id=data["rental_id"]
            )
        elif effect.type == "rental.failed":
            self.ledger.failed(str(data["rental_id"]), str(data["reason"]))
            self.metrics.rentals.labels("failed").inc()
            log.info("rental.summary", outcome="failed", slot=data["slot"], reason=data["reason"])
        elif effect.type == "rental.returned":
            charge = data.get("charge")
            closed = self.ledger.returned(
                int(data["slot"] or 0),
                str(data["powerbank_id"]),
                None if charge is None else int(charge),
            )
            log.info("rental.returned", slot=data["slot"], closed=closed is not None)
            self.metrics.returns.inc()
        else:
            self.outbox.append(effect.type, **data)

    @property
    def loaded_roster_version(self) -> int:
        """The roster version the face pipeline and the eligibility checks use now."""
        return self._roster_version

    def _maybe_reload_roster(self) -> None:
        """Swap in the roster on disk when it changed: one decrypt, riders and gallery from
        the same version."""
        if self.roster.version == self._roster_version:
            return
        loaded = self.roster.load()
        self._riders = loaded.riders
        self.pipeline.swap_gallery(gallery_of(loaded, self.model_version))
        self._roster_version = loaded.version
        log.info("roster.reloaded", version=loaded.version, riders=len(self._riders))

    def _settle_unsettled(self) -> int:
        """Rentals whose eject nobody follows any more, settled from the slots' status.

        Those are intents left by a kiosk stopped mid-eject, and ejects the board never
        confirmed. Judged only once the board has answered a status request since the
        start: a slot that is empty gave its powerbank to the rider (``rental.started``); a
        slot that holds it never ejected or re-locked (``rental.failed``); a powerbank still
        moving or standing out waits for the board to say. Returns how many remain.
        """
        intents = self.ledger.unsettled()
        if not self._board_seen:
            return len(intents)
        followed = {self.worker.current}
        if self.flow.rental is not None:
            followed.add(self.flow.rental.rental_id)
        waiting = 0
        for intent in intents:
            state = self.inventory.slot(intent.slot).state
            if intent.rental_id in followed or state not in (SlotState.EMPTY, *_KEPT):
                waiting += 1
                continue
            try:
                if state == SlotState.EMPTY:
                    self.ledger.started(intent.rental_id, intent.powerbank_id or "unknown")
                    outcome = "started"
                else:
                    reason = "no_answer" if intent.rental_id in self._let_go else "interrupted"
                    self.ledger.failed(intent.rental_id, reason)
                    outcome = "failed"
            except OutboxFullError as exc:  # an intent from before reservations
                log.error("rental.unsettled", rental_id=intent.rental_id, error=str(exc))
                waiting += 1
                continue
            self._let_go.discard(intent.rental_id)
            log.info("rental.settled", rental_id=intent.rental_id, outcome=outcome)
        return waiting

    def _reason(self) -> str | None:
        """Why the kiosk may not rent now (the service check, then the board)."""
        board = None if self.inventory.board_online else "board_offline"
        return self.hold or self._service_check() or board

    def stop(self) -> None:
        self.inputs.put(Stop(self._clock()))

    def run(self, watchdog_s: float | None = None) -> None:
        """Start the threads and run the flow until ``stop`` (SIGTERM) and any rental ends."""
        try:
            self.outbox.append("kiosk.started", version=_version(), mode=self.flow.mode)
        except OutboxError as exc:
            log.error("event.unrecorded", type="kiosk.started", error=str(exc))
        unsettled = len(self.ledger.unsettled())
        self._spawn(self._board_loop, "board-events")
        self._spawn(self.worker.run, "board-worker")
        self._spawn(self._vision, "vision")
        self._carry_out(self.flow.handle(f.Service(self._clock(), self._reason())))
        systemd.notify("READY=1", "STATUS=renting")
        ping_every = (watchdog_s or 0) / 3
        last_ping = last_check = self._clock()
        stopping = False
        busy = (f.Phase.EJECTING, f.Phase.CONFIRMING, f.Phase.TAKE)
        while True:
            try:
                item: Item = self.inputs.get(timeout=0.2)
            except queue.Empty:
                item = f.Tick(self._clock())
            now = self._clock()
            self.metrics.seen(item)
            if isinstance(item, Call):
                item.fn()
                item = f.Tick(now) if stopping else f.Service(now, self._reason())
            if isinstance(item, Stop):
                stopping = True
                systemd.notify("STOPPING=1", "STATUS=finishing the rental under way")
                item = f.Service(now, "stopping")
            elif isinstance(item, Decided):
                item = self._recognised(item)
            elif isinstance(item, NeedsClaim):
                item = self.claims.ask(item)
            elif isinstance(item, ClaimVerified):
                item = checked(item, self._eligible)
            elif isinstance(item, Refreshed):
                self._board_seen = self._board_seen or item.ok
                if unsettled:
                    unsettled = self._settle_unsettled()
                item = f.Tick(now) if stopping else f.Service(now, self._reason())
            elif isinstance(item, Recheck):
                item = f.Tick(now) if stopping else f.Service(now, self._reason())
            rental_id = str(ULID()) if isinstance(item, f.Recognised | f.ClaimChecked) else None
            self._carry_out(self.flow.handle(item, rental_id=rental_id))
            if stopping and self.flow.phase not in busy:
                break
            if ping_every and now - last_ping >= ping_every:
                systemd.notify("WATCHDOG=1")
                last_ping = now
            if now - last_check >= 1.0 and not stopping:
                last_check = now
                self._maybe_reload_roster()
                unsettled = self._settle_unsettled() if unsettled or self._let_go else 0
                self._carry_out(self.flow.handle(f.Service(now, self._reason())))
        self.close()

    def close(self) -> None:
        self._stop.set()
        self.worker.stop()
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
        "camera_down": None if runtime.camera_health is None else runtime.camera_health.down,
        "unsettled_rentals": len(runtime.ledger.unsettled()),
    }
