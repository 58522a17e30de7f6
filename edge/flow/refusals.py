"""Refusals of recognised riders, counted per rider and reason (pure).

A rider the kiosk recognised but turned away (account on hold, membership expired, too
many open rentals, not allowed here, no charged powerbank) leaves a ``rider.refused``
event: the person id, a reason code and a count, never a picture or a template. A rider
who stands there and is refused again and again must not write one event per look:
the first refusal of a (rider, reason) is recorded at once with ``count`` 1; further ones
within ``window_s`` are only counted, and recorded as one event (``count`` = how many)
when the window closes (``due``) or the kiosk stops (``drain``). The counts of a rider's
events add up to the times they were refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.flow.values import Record, record

REFUSED = "rider.refused"


@dataclass
class _Window:
    opened: float
    pending: int = 0


@dataclass
class RefusalTally:
    window_s: float = 60.0
    _open: dict[tuple[str, str], _Window] = field(default_factory=dict)

    def refused(self, at: float, person_id: str, reason: str) -> list[Record]:
        """One refusal: its event now when it opens a window, else counted for later."""
        out = self._flush_old(at)
        key = (person_id, reason)
        window = self._open.get(key)
        if window is None:
            self._open[key] = _Window(at)
            out.append(record(REFUSED, person_id=person_id, reason=reason, count=1))
        else:
            window.pending += 1
        return out

    def due(self, at: float) -> list[Record]:
        """The counted refusals of every window that closed by ``at``."""
        return self._flush_old(at)

    def drain(self) -> list[Record]:
        """Every refusal counted and not yet recorded (the kiosk is stopping)."""
        out = [_summary(key, window) for key, window in self._open.items() if window.pending]
        self._open.clear()
        return out

    def _flush_old(self, at: float) -> list[Record]:
        out = []
        for key, window in list(self._open.items()):
            if at - window.opened >= self.window_s:
                del self._open[key]
                if window.pending:
                    out.append(_summary(key, window))
        return out


def _summary(key: tuple[str, str], window: _Window) -> Record:
    person_id, reason = key
    return record(REFUSED, person_id=person_id, reason=reason, count=window.pending)
