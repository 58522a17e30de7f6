"""``kiosk run``: the kiosk's parts composed around the rider flow.

Threads, each with one job, meeting only at the flow's input queue:

- **vision** (``edge.runtime.feeds``): camera frames through the live face pipeline; posts faces
  and decisions.
- **board events** (``edge.runtime.feeds``): the slot board's notifications into the inventory, and
  returns, removals and re-locks into the flow; when the board comes back or boots, a
  status refresh.
- **board worker** (``edge.runtime.board_worker``): every command to the board, one at a time:
  ejects (an unconfirmed one is asked about again with its request id, never sent twice),
  and the slots' status every few seconds (faster while the board does not answer).
- **flow** (the caller's thread, ``run``): takes one input at a time, feeds the pure state
  machine, and carries out its effects: the rider screen, ejects, events. It also pings
  the systemd watchdog, so a stuck flow restarts the service.
- **rider page**: uvicorn serving ``edge.ui`` on the configured local port.

Neither vision nor the board ever runs on the flow's thread, so the screen stays responsive
while a face is encoded or the serial line retries. An eject is sent only once its intent,
and room for the event that will settle it, are in the eject journal (``edge.cabinet.ejects``,
through the rental ledger ``edge.cabinet.rentals``): a full outbox takes the kiosk out of service
instead. Intents nobody follows any more (this kiosk or a ``kiosk eject`` was stopped
mid-eject, or the board never confirmed), rentals and technician or remote ejects alike,
are settled from the slots' status (``edge.runtime.bookkeeping`` writes both).
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
from cloud_sync.roster_owed import record_owed
from edge import flow as f
from edge.cabinet.rentals import Ledger, refusal
from edge.cabinet.slots import Inventory
from edge.ops.metrics import KioskMetrics
from edge.runtime import systemd
from edge.runtime.board_worker import BoardWorker, Refreshed
from edge.runtime.bookkeeping import Bookkeeper
from edge.runtime.claim_step import (
    ClaimStep,
    ClaimVerified,
    NeedsClaim,
    checked,
    claims_of,
    default_policy,
    open_tries,
)
from edge.runtime.claim_tries import ClaimTries
from edge.runtime.feeds import Decided, watch_board, watch_camera
from edge.runtime.learning import TemplateLearner
from edge.runtime.service import CameraHealth
from edge.runtime.status_report import StatusReporter
from edge.ui.preview import PreviewFrames
from edge.ui.server import ScreenHub
from edge.vault.store import RosterStore
from edge.vault.values import Rider
from edge.vision.claim import ClaimLockout, VerifyPolicy
from edge.vision.consensus import DecisionRecord
from edge.vision.live import LivePipeline
from edge.vision.matcher import Gallery
from edge.vision.policy import automatic_limit
from edge.vision.setup import beyond_automatic, gallery_of
from hardware.board import BoardEvent, SlotBoard
from hardware.cameras import Camera, CameraStatus

log = structlog.get_logger("edge.runtime")


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


PURGE_CHECK_S = 60.0  # how often (at most) the runtime asks whether the roster went silent


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
        fuse_templates: bool = True,
        service_check: Callable[[], str | None] = lambda: None,
        camera_health: CameraHealth | None = None,
        claim_policy: VerifyPolicy | None = None,
        claim_lockout: ClaimLockout | None = None,
        claim_tries: ClaimTries | None = None,
        status_every_s: float = 5.0,
        status_offline_every_s: float = 1.0,
        preview: PreviewFrames | None = None,
        clock: Callable[[], float] = time.monotonic,
        status_interval_s: float = 0.0,
        purge_after_s: float = 0.0,
        learner: TemplateLearner | None = None,
    ) -> None:
        self.kiosk_id = kiosk_id
        self.learner = learner  # proposes verified visits' encodings (edge.runtime.learning)
        self.flow = flow
        self.camera = camera
        self.pipeline = pipeline
        self.board = board
        self._board_events = board_events
        self.inventory = inventory
        self.outbox = outbox
        self.ledger = Ledger(outbox)
        self.journal = self.ledger.journal  # every eject's intent, whoever asked for it
        self.roster = roster
        self.hub = hub
        self.model_version = model_version
        self.fuse_templates = fuse_templates
        self._service_check = service_check
        self.camera_health = camera_health
        self.preview = preview  # the rider page's camera preview (ui.preview), or None
        self._clock = clock
        self.status_interval_s = status_interval_s  # kiosk.status events (0: none)
        self.purge_after_s = purge_after_s  # roster.purge_after_h (0: never)
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
        self._claim_gallery = Gallery([])
        self._roster_version = -1
        self._maybe_reload_roster()  # the one decrypt at start: riders and gallery together
        lockout = claim_lockout or ClaimLockout()
        self.claims = ClaimStep(
            claim_policy or default_policy(),
            lockout,
            lambda: (self._claim_gallery, claims_of(self._riders)),
            self.inputs.put,
            clock,
            # the state folder is the outbox's (claims.sqlite beside outbox.sqlite)
            claim_tries or open_tries(outbox.path.parent, lockout),
        )
        hub.on_claim(lambda code: self.inputs.put(f.ClaimEntered(self._clock(), code)))
        hub.on_cancel(lambda: self.inputs.put(f.ClaimCancelled(self._clock())))
        self._threads: list[threading.Thread] = []
        self._board_seen = False  # the board answered a status request since the start
        self.decisions: list[DecisionRecord] = []
        self.metrics = KioskMetrics(kiosk_id, _version(), outbox_stats=outbox.stats)
        self.books = Bookkeeper(self.ledger, outbox, inventory, self.metrics)
        self.hold: str | None = None  # out of service while a remote command runs
        if camera_health is not None:
            camera_health.listen(lambda: self.inputs.put(Recheck(self._clock())))

    # -- threads ---------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch_camera(self) -> None:
        """The vision thread. When it stops on a failure (a replayed video that turned
        unreadable, an error of the pipeline), the camera is reported given up, so the
        kiosk goes out of service (``camera_lost``) rather than renting blind."""
        failed = watch_camera(
            self.camera,
            self.pipeline,
            self.inputs.put,
            clock=self._clock,
            stopped=self._stop,
            metrics=self.metrics,
            decisions=self.decisions,
            preview=self.preview,
        )
        if failed is not None and self.camera_health is not None and not self._stop.is_set():
            self.camera_health.update(CameraStatus("gave up", failed))

    def _watch_board(self) -> None:
        watch_board(
            self._board_events,
            self.inventory,
            self.worker,
            self.inputs.put,
            clock=self._clock,
            stopped=self._stop,
        )

    # -- the flow's thread ---------------------------------------------------------------------

    def _recognised(self, decided: Decided) -> f.Recognised | f.NotRecognised:
        return self._eligible(decided.at, decided.record.person_id)

    def _eligible(self, at: float, person: str | None) -> f.Recognised | f.NotRecognised:
        self._maybe_reload_roster()  # a rider deleted on disk a moment ago may not rent
        rider = self._riders.get(person or "")
        if rider is None or person is None:  # deleted between the decision and now
            return f.NotRecognised(at, "unknown")
        first_name = rider.display_name.split()[0] if rider.display_name.strip() else ""
        renting = self.flow.mode == "rental"
        # this kiosk's own rentals from its ledger, the rest of the fleet's from the roster
        here = self.ledger.open_count(person) if renting else 0
        open_rentals = here + rider.fleet.elsewhere(self.kiosk_id)
        today = datetime.now(UTC).date()
        why = refusal(
            rider.entitlements, open_rentals, today, mode=self.flow.mode, fleet=rider.fleet
        )
        slot = self.inventory.choose() if why is None and renting else None
        return f.Recognised(at, person, first_name, refusal=why, slot=slot)

    def _learn(self, item: Decided | ClaimVerified) -> None:
        """Propose a verified visit's encoding as a template (``edge.runtime.learning``);
        never in the way of the rental."""
        if self.learner is None or not item.encodings:
            return
        try:
            if isinstance(item, Decided):
                rider = self._riders.get(item.record.person_id or "")
                self.learner.after_decision(rider, item.record, item.encodings)
            elif item.person_id is not None:
                rider = self._riders.get(item.person_id)
                self.learner.propose(rider, item.encodings, "claim_verified", item.distance, None)
        except Exception as exc:  # an outbox error, a key that does not open
            log.error("template.unproposed", error=type(exc).__name__)

    def _carry_out(self, effects: list[f.Effect]) -> None:
        eject = next((effect for effect in effects if isinstance(effect, f.Eject)), None)
        refused = None if eject is None else self.books.begin(eject)
        if eject is not None and refused is not None:
            effects = self.flow.handle(f.EjectAborted(self._clock(), eject.slot, refused))
        for effect in effects:
            if isinstance(effect, f.Show):
                self.hub.publish(effect.screen)
            elif isinstance(effect, f.Eject):
                self.worker.eject(effect)
            elif isinstance(effect, f.Record):
                self._record(effect)
            elif isinstance(effect, f.Unsettled):
                self.worker.abandon(effect.rental_id)
                self.books.released.add(effect.rental_id)
                log.warning("rental.unsettled", slot=effect.slot, rental_id=effect.rental_id)
            elif isinstance(effect, f.VerifyClaim):
                self.claims.verify(effect.code)
        if self.flow.phase != f.Phase.CLAIM:
            self.claims.forget()  # the face is held for the claim step only

    def _record(self, effect: f.Record) -> None:
        try:
            self.books.store(effect)
        except OutboxFullError as exc:  # only a return or a boarding: rentals hold room
            log.error("event.unrecorded", type=effect.type, error=str(exc), **effect.as_dict())
            self.inputs.put(Recheck(self._clock()))

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
        everyone = gallery_of(loaded, self.model_version, self.fuse_templates)
        self._claim_gallery = everyone  # the claim step checks a code over every rider
        self._roster_version = loaded.version
        log.info("roster.reloaded", version=loaded.version, riders=len(self._riders))
        limit = automatic_limit(self.pipeline.policy)
        beyond = beyond_automatic(len(self._riders), limit) is not None
        chosen = loaded.auto_set
        if beyond and chosen is not None and (limit is None or len(chosen) <= limit):
            # past the calibrated size: decide automatically among this kiosk's automatic
            # set only; any other face is offered the claim step (docs/fleet.md)
            only = gallery_of(loaded, self.model_version, self.fuse_templates, only=chosen)
            self.pipeline.swap_gallery(only, roster=everyone)
            log.info("roster.automatic_set", riders=len(self._riders), automatic=len(chosen))
            return
        self.pipeline.swap_gallery(everyone)
        if beyond:
            log.warning("roster.claim_for_everyone", riders=len(self._riders), limit=limit)

    def _settle_unsettled(self) -> int:
        """Ejects nobody follows any more (rentals, technician and remote ejects), settled
        from the slots' status once the board has answered a status request since the
        start. Returns how many remain."""
        if not self._board_seen:
            return len(self.journal.unsettled())
        followed = {self.worker.current}
        if self.flow.rental is not None:
            followed.add(self.flow.rental.rental_id)
        return self.books.settle(followed)

    def _purge_if_silent(self) -> None:
        """Delete the roster when the cloud has not been heard for ``purge_after_s``
        (``roster.purge_after_h``), and record it (``roster.purged``): a kiosk switched off
        or stolen keeps no template past that time. A local roster is never purged. Also
        records the roster's events a cut left owed (``cloud_sync.roster_owed``)."""
        record_owed(self.roster, self.outbox)
        if self.purge_after_s <= 0:
            return
        silent = self.roster.silent_for()
        if silent is None or silent < self.purge_after_s or self.roster.version == 0:
            return  # heard from lately, never from the cloud, or purged already
        self.roster.purge("silent", round(silent, 1))  # owes its roster.purged
        record_owed(self.roster, self.outbox)
        self._maybe_reload_roster()

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
        unsettled = len(self.journal.unsettled())
        self._purge_if_silent()  # a kiosk switched on after too long away holds no template
        last_purge_check = self._clock()
        self._spawn(self._watch_board, "board-events")
        self._spawn(self.worker.run, "board-worker")
        self._spawn(self._watch_camera, "vision")
        self._carry_out(self.flow.handle(f.Service(self._clock(), self._reason())))
        systemd.notify("READY=1", "STATUS=renting")
        ping_every = (watchdog_s or 0) / 3
        last_ping = last_check = self._clock()
        reporter = StatusReporter(self, self.status_interval_s, last_check)
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
                self._learn(item)
                item = self._recognised(item)
            elif isinstance(item, NeedsClaim):
                item = self.claims.ask(item)
            elif isinstance(item, ClaimVerified):
                self._learn(item)
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
                self._carry_out(self.flow.drain())  # refusals counted, not yet recorded
                break
            if ping_every and now - last_ping >= ping_every:
                systemd.notify("WATCHDOG=1")
                last_ping = now
            if now - last_check >= 1.0 and not stopping:
                last_check = now
                if now - last_purge_check >= min(PURGE_CHECK_S, self.purge_after_s / 10):
                    last_purge_check = now
                    self._purge_if_silent()
                self._maybe_reload_roster()
                unsettled = self._settle_unsettled()  # one indexed read when none wait
                self._carry_out(self.flow.handle(f.Service(now, self._reason())))
                reporter.tick(now)
        self.close()

    def close(self) -> None:
        self._stop.set()
        self.worker.stop()
        self.camera.close()
        for thread in self._threads:
            thread.join(timeout=3)
        self.claims.tries.close()


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
