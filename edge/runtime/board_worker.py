"""The runtime's one thread that asks the slot board for things: ejects and slot status.

Every command the runtime gives the board runs here, one at a time, so the flow's thread
(and the rider page's) never waits on the serial line:

- **ejects**: through ``edge.cabinet.slots.eject_slot``; the outcome is posted to the flow as its
  inputs, each naming the rental id, so a late answer about an eject the flow already gave
  up on never moves the rental that followed it. This path alone reports an eject's
  outcome, jams included (the board's ``Jammed`` notification only updates the inventory).
- **unconfirmed ejects**: a timeout or a damaged exchange after the board may have
  accepted the eject posts ``EjectUnconfirmed`` (the rider sees "please wait"), then asks
  the board again with the **same** request id, which never ejects twice
  (docs/slot-protocol.md, section 4), until it answers or ``confirm_s`` runs out
  (``EjectUnsettled``: the ledger settles the rental from the slot's status later). After
  the board rebooted (it forgets request ids) or once the flow let the rider go, it stops
  asking, so a late eject never pushes a powerbank out to nobody.
- **contradicted ejects**: an answer that contradicts the eject (``ContradictionError``:
  another slot, request id or powerbank) is never a confirmation and the board is not
  asked again: ``EjectUnconfirmed`` then ``EjectUnsettled`` at once, and the ledger
  settles the rental from the slot's status.
- **slot status**: ``inventory.refresh`` every ``every_s`` (``offline_every_s`` while the
  board does not answer), and soon after ``refresh_soon`` (the board came back or booted);
  each posts ``Refreshed``, then gives the board the technician's disabled flags it lacks
  (``kiosk slots disable`` runs in another process, which cannot reach the board).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from edge import flow as f
from edge.cabinet.slots import Inventory, SlotState, eject_slot
from hardware.board import EjectResult, SlotBoard
from hardware.errors import (
    BoardError,
    BoardRefusedError,
    ContradictionError,
    SlotJammedError,
    SlotRangeError,
)
from hardware.messages import EjectOutcome

log = structlog.get_logger("edge.board")


@dataclass(frozen=True)
class Refreshed:
    """The board's slot status was asked for: ``ok`` when it answered."""

    at: float
    ok: bool


Post = Callable[[f.Input | Refreshed], None]
_REFRESH = "refresh"


class BoardWorker:
    """Ejects and status refreshes on one thread; ``run`` is the thread's target."""

    def __init__(
        self,
        board: SlotBoard,
        inventory: Inventory,
        post: Post,
        *,
        every_s: float = 5.0,
        offline_every_s: float = 1.0,
        confirm_s: float = 30.0,
        retry_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.board = board
        self.inventory = inventory
        self._post = post
        self.every_s = every_s
        self.offline_every_s = offline_every_s
        self.confirm_s = confirm_s
        self.retry_s = retry_s
        self._clock = clock
        self._jobs: queue.Queue[f.Eject | str | None] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._refresh_queued = False
        self._abandoned: set[str] = set()
        self._boots = 0
        self.current: str | None = None  # the rental id of the eject under way, if any

    # -- called from other threads -------------------------------------------------------

    def eject(self, command: f.Eject) -> None:
        self._jobs.put(command)

    def refresh_soon(self) -> None:
        """Re-read every slot as soon as the eject under way (if any) is done."""
        with self._lock:
            if self._refresh_queued:
                return
            self._refresh_queued = True
        self._jobs.put(_REFRESH)

    def booted(self) -> None:
        """The board restarted: it no longer remembers earlier request ids."""
        with self._lock:
            self._boots += 1
        self.refresh_soon()

    def abandon(self, rental_id: str) -> None:
        """The flow let the rider go: never ask the board about this eject again."""
        with self._lock:
            self._abandoned.add(rental_id)

    def stop(self) -> None:
        self._stop.set()
        self._jobs.put(None)

    # -- the thread ----------------------------------------------------------------------

    def interval(self) -> float:
        return self.every_s if self.inventory.board_online else self.offline_every_s

    def run(self) -> None:
        due = self._clock()  # a first refresh at once: the slots as the board has them now
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=max(0.0, due - self._clock()))
            except queue.Empty:
                job = _REFRESH
            if job is None:
                return
            if isinstance(job, f.Eject):
                self._eject(job)
                continue
            with self._lock:
                self._refresh_queued = False
            self._refresh()
            due = self._clock() + self.interval()

    def _refresh(self) -> None:
        try:
            self.inventory.refresh(self.board)
        except BoardError as exc:
            log.debug("board.status_failed", error=str(exc))
            self._post(Refreshed(self._clock(), ok=False))
            return
        except Exception as exc:  # the inventory's storage: never stop the board's thread
            log.error("inventory.refresh_failed", error=str(exc))
            return
        self._post(Refreshed(self._clock(), ok=True))
        self._pass_on_flags()

    def _pass_on_flags(self) -> None:
        """Give the board the technician's flag where its own differs: ``kiosk slots
        disable|enable`` ran while this process held the board, or the board restarted and
        forgot it. The board's next status shows it taken."""
        for slot in self.inventory.slots():
            if slot.disabled == slot.board_disabled:
                continue
            try:
                self.board.set_enabled(slot.number, not slot.disabled)
            except BoardError as exc:  # the kiosk's own flag holds: asked again next time
                log.warning("slot.flag_not_passed_on", slot=slot.number, error=str(exc))
                continue
            log.info("slot.flag_passed_on", slot=slot.number, disabled=slot.disabled)

    def _eject(self, command: f.Eject) -> None:
        slot, rental_id = command.slot, command.rental_id
        with self._lock:
            boots = self._boots
        self.current = rental_id
        try:
            try:
                result = eject_slot(self.board, self.inventory, slot, rental_id)
            except SlotJammedError:
                self._post(f.EjectFailed(self._clock(), slot, "jammed", rental_id))
                return
            except (BoardRefusedError, SlotRangeError) as exc:  # answered: nothing ejected
                log.warning("eject.refused", slot=slot, error=str(exc))
                self._post(f.EjectFailed(self._clock(), slot, "board_fault", rental_id))
                return
            except ContradictionError as exc:  # its answers cannot be trusted: never ask again
                log.warning("eject.contradicted", slot=slot, rental_id=rental_id, error=str(exc))
                self._post(f.EjectUnconfirmed(self._clock(), slot, rental_id))
                self._post(f.EjectUnsettled(self._clock(), slot, rental_id))
                return
            except BoardError as exc:  # the board may have accepted it: find out
                log.warning("eject.unconfirmed", slot=slot, rental_id=rental_id, error=str(exc))
                self._post(f.EjectUnconfirmed(self._clock(), slot, rental_id))
                confirmed = self._confirm(slot, rental_id, boots)
                if confirmed is None:
                    return
                result = confirmed
            self._presented(result, rental_id)
        finally:
            self.current = None

    def _confirm(self, slot: int, rental_id: str, boots: int) -> EjectResult | None:
        """Ask again with the same request id until the board answers; None if it did not."""
        deadline = self._clock() + self.confirm_s
        while not self._stop.wait(self.retry_s):
            with self._lock:
                abandoned = rental_id in self._abandoned
                rebooted = self._boots != boots
            if abandoned:
                return None
            if rebooted or self._clock() >= deadline:
                why = "the board restarted" if rebooted else "no answer"
                log.warning("eject.unsettled", slot=slot, rental_id=rental_id, reason=why)
                self._post(f.EjectUnsettled(self._clock(), slot, rental_id))
                return None
            try:
                result = self.board.eject(slot, rental_id)
            except SlotJammedError as exc:
                self.inventory.eject_failed(slot, exc)
                self._post(f.EjectFailed(self._clock(), slot, "jammed", rental_id))
                return None
            except (BoardRefusedError, ContradictionError) as exc:  # the slot must tell
                log.warning("eject.unsettled", slot=slot, rental_id=rental_id, error=str(exc))
                self._post(f.EjectUnsettled(self._clock(), slot, rental_id))
                return None
            except BoardError:
                continue
            self.inventory.ejected(result)
            log.info("eject.confirmed", slot=slot, rental_id=rental_id, duplicate=result.duplicate)
            return result
        return None

    def _presented(self, result: EjectResult, rental_id: str) -> None:
        now, slot = self._clock(), result.slot
        self._post(f.Ejected(now, slot, result.powerbank_id, rental_id))
        taken = result.outcome == EjectOutcome.TAKEN
        if taken or self.inventory.slot(slot).state == SlotState.EMPTY:
            self._post(f.Taken(now, slot, rental_id))  # taken already, before this reply
        elif result.outcome == EjectOutcome.RELOCKED:
            self._post(f.NotTaken(now, slot, rental_id))
