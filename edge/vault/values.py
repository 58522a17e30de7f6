"""What the roster store hands out: plain values, nothing personal written anywhere.

``Rider`` and ``LoadedRoster`` exist only in memory (the decrypted roster); ``RosterInfo``
and ``PullState`` hold counts, versions and times, never a rider's data (as does
``cloud_sync.roster_wire.ApplyResult``, what applying an answer changed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cloud_sync.roster_wire import Entitlements, FleetView


@dataclass(frozen=True)
class Rider:
    """A rider as the kiosk needs it in memory (never written anywhere)."""

    person_id: str
    version: int
    display_name: str
    entitlements: Entitlements
    claim_hash: str | None
    lookalike: bool = False  # enrolled close to another rider: always confirms a claim
    fleet: FleetView = field(default_factory=FleetView)

    def __repr__(self) -> str:
        return f"Rider({self.person_id!r}, v{self.version})"


@dataclass
class LoadedRoster:
    """The decrypted roster: riders, and templates grouped by encoder model."""

    version: int
    riders: dict[str, Rider] = field(default_factory=dict)
    templates: dict[str, list[tuple[str, npt.NDArray[np.float32]]]] = field(default_factory=dict)
    #: the riders this kiosk may recognise without a claim (its automatic set from the
    #: cloud); None when the cloud sent none
    auto_set: frozenset[str] | None = None


@dataclass(frozen=True)
class RosterInfo:
    """Counts and versions: nothing personal."""

    path: str
    version: int
    source: str
    riders: int
    templates_by_model: dict[str, int]
    encoder_model: str
    needs_reenrolment: int
    data_key_id: str | None
    changed_at: float | None
    age_s: float | None


@dataclass(frozen=True)
class PullState:
    """How the last roster pulls from the cloud went (nothing personal)."""

    version: int
    checked_at: float | None  # the last pull that reached the cloud and was not refused
    error: str | None  # the last pull's error, None once a pull succeeds again
    error_at: float | None
