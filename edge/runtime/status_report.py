"""The kiosk's periodic ``kiosk.status`` event: how the cloud knows the fleet.

Every ``sync.status_interval_s`` (0: never; the first soon after the start, once the board
had a moment to answer) the flow's thread writes one ``kiosk.status`` into the outbox: the
software and roster versions, how many events wait to be sent, whether the board answers,
why the kiosk does not rent (if it does not) and each slot: state, powerbank, charge,
temperature and battery health (``edge.cabinet.battery``). The sync daemon carries it like
any event, signed and idempotent.

It is a ``telemetry`` event, so it never crowds out money events: the outbox drops it
first when its disk budget runs out, and a new one is not written while the last is still
unsent (an offline kiosk keeps one status, not one per interval; the cloud keeps the newest
it receives). ``status_fields`` is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from cloud_sync.errors import OutboxError
from edge.cabinet.battery import Flag
from edge.cabinet.slots import Slot

if TYPE_CHECKING:
    from edge.runtime.loop import Runtime

log = structlog.get_logger("edge.runtime")

FIRST_AFTER_S = 5.0  # the board's first status answer comes within a second or two


def status_fields(
    *,
    version: str,
    roster_version: int,
    backlog: int,
    board_online: bool,
    out_of_service: str | None,
    slots: Iterable[Slot],
    flags: Mapping[str, Flag],
) -> dict[str, Any]:
    """The payload of a ``kiosk.status`` from plain values."""
    return {
        "version": version,
        "roster_version": max(0, roster_version),
        "backlog": backlog,
        "board_online": board_online,
        "out_of_service": out_of_service,
        "slots": [
            {
                "number": slot.number,
                "state": slot.state.value,
                "powerbank_id": slot.powerbank_id,
                "charge": slot.charge,
                "temperature": slot.temperature,
                "health": None
                if slot.powerbank_id is None or slot.powerbank_id not in flags
                else flags[slot.powerbank_id].reason,
            }
            for slot in slots
        ],
    }


class StatusReporter:
    """Writes the runtime's ``kiosk.status`` when it is due; called on the flow's thread."""

    def __init__(self, runtime: Runtime, interval_s: float, started: float) -> None:
        self.runtime = runtime
        self.interval_s = interval_s
        self.due = started + min(interval_s, FIRST_AFTER_S)

    def tick(self, now: float) -> bool:
        """Write a status if one is due and the last was sent; True when one was written."""
        if self.interval_s <= 0 or now < self.due:
            return False
        self.due = now + self.interval_s
        rt = self.runtime
        try:
            if rt.outbox.pending_of("kiosk.status"):
                log.debug("status.unsent_kept")
                return False
            fields = status_fields(
                version=rt.metrics.version,
                roster_version=rt.roster.version,
                backlog=rt.outbox.count("pending"),
                board_online=rt.inventory.board_online,
                out_of_service=rt.flow.out_of_service,
                slots=rt.inventory.slots(),
                flags=rt.inventory.battery.flags(),
            )
            return rt.outbox.append("kiosk.status", **fields) is not None
        except OutboxError as exc:
            log.error("event.unrecorded", type="kiosk.status", error=str(exc))
            return False
