"""The rider's flow at the kiosk: a pure state machine, and the values it takes and returns.

- ``machine``: the dispatch (``Flow.handle``), looking at faces, the claim step, the inputs
  valid in every phase; the phases are drawn in its docstring;
- ``state``: what the flow remembers between two inputs, and its moves between phases;
- ``rental``: a recognised rider to the end of the rental;
- ``values``: the inputs (what happened, and when) and the effects (what to do).

Nothing here reads a clock, a camera, a board or a database (a test reads the imports).
The flow's public names are re-exported here, so the runtime writes ``from edge import flow
as f`` and ``f.Flow``, ``f.FaceSeen``, ``f.Show``.
"""

from __future__ import annotations

from edge.flow.machine import Flow
from edge.flow.state import Phase
from edge.flow.values import (
    ClaimAsked,
    ClaimCancelled,
    ClaimChecked,
    ClaimEntered,
    Effect,
    Eject,
    EjectAborted,
    Ejected,
    EjectFailed,
    EjectUnconfirmed,
    EjectUnsettled,
    FaceGone,
    FaceSeen,
    Input,
    Mode,
    NotRecognised,
    NotTaken,
    Recognised,
    Record,
    Returned,
    Screen,
    Service,
    Show,
    Taken,
    Tick,
    Timeouts,
    Unsettled,
    VerifyClaim,
    record,
)

__all__ = [
    "ClaimAsked",
    "ClaimCancelled",
    "ClaimChecked",
    "ClaimEntered",
    "Effect",
    "Eject",
    "EjectAborted",
    "EjectFailed",
    "EjectUnconfirmed",
    "EjectUnsettled",
    "Ejected",
    "FaceGone",
    "FaceSeen",
    "Flow",
    "Input",
    "Mode",
    "NotRecognised",
    "NotTaken",
    "Phase",
    "Recognised",
    "Record",
    "Returned",
    "Screen",
    "Service",
    "Show",
    "Taken",
    "Tick",
    "Timeouts",
    "Unsettled",
    "VerifyClaim",
    "record",
]
