"""The runtime's books: the flow's rentals and events into the ledger and the outbox.

``Bookkeeper`` writes, on the flow's thread:

- an eject's intent, with room reserved for the event that will settle it, before the board
  is asked (``begin``); when there is no room (in the outbox's budget or on the disk), the
  eject is not sent;
- the flow's ``Record`` effects: a rental started or failed, a return, any other event;
- the settling of intents nobody follows any more (``settle``): left by a kiosk (or a
  ``kiosk eject``) stopped mid-eject, or ejects the board never confirmed, judged from the
  slots' status by ``edge.cabinet.settle``, the same settlement for every kind of eject.
"""

from __future__ import annotations

import structlog

from cloud_sync.errors import OutboxFullError
from cloud_sync.outbox import Outbox
from edge import flow as f
from edge.cabinet.rentals import Ledger
from edge.cabinet.settle import settle_orphans
from edge.cabinet.slots import Inventory
from edge.ops.metrics import KioskMetrics

log = structlog.get_logger("edge.runtime")


class Bookkeeper:
    """Rentals and events into the ledger and outbox; one writer, the flow's thread."""

    def __init__(
        self, ledger: Ledger, outbox: Outbox, inventory: Inventory, metrics: KioskMetrics
    ) -> None:
        self.ledger = ledger
        self.outbox = outbox
        self.inventory = inventory
        self.metrics = metrics
        self.released: set[str] = set()  # rentals the flow released unconfirmed

    def begin(self, eject: f.Eject) -> str | None:
        """The intent (with room for its outcome) in the ledger; None, or why not to eject:
        ``disk_full`` when the file system refused the write, ``outbox_full`` otherwise."""
        held = self.inventory.slot(eject.slot).powerbank_id
        try:
            self.ledger.begin(eject.rental_id, eject.person_id, eject.slot, held)
        except OutboxFullError as exc:
            reason = "disk_full" if self.outbox.disk_full else "outbox_full"
            log.error("rental.summary", outcome="refused", reason=reason, error=str(exc))
            return reason
        return None

    def store(self, effect: f.Record) -> None:
        """One ``Record`` effect into the ledger or outbox; raises ``OutboxFullError``."""
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

    def settle(self, followed: set[str | None]) -> int:
        """Intents not in ``followed``, settled from the slots' status; how many remain.

        Only call once the board has answered a status request since the start: a slot that
        is empty gave its powerbank out (``rental.started``, or ``slot.ejected`` for a
        technician's or remote eject); a slot that holds it never ejected or re-locked
        (``rental.failed``, ``slot.ejected`` with outcome ``failed``); a powerbank still
        moving or standing out waits for the board to say.
        """
        settled, waiting = settle_orphans(self.ledger, self.inventory, followed, self.released)
        for intent in settled:
            self.released.discard(intent.request_id)
        return waiting
