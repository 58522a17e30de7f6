"""One roster pull: ask the cloud for what changed since the version held, and apply it.

``pull_roster`` asks for the delta since the roster's version and hands the answer, with
the nonce of its request, to the store (``apply_answer``: the store checks signature,
recipient, nonce, versions and every row first, and changes nothing otherwise). When the
delta does not follow the version held, it asks for a full snapshot. It tells the store how
the pull ended for ``kiosk sync status``, then records in the outbox the events the store
owes (``roster.applied`` when the version moved, ``roster.erased`` for each rider removed,
``roster.purged`` for a wipe; owed in the store's own transaction, so a cut before they
reach the outbox leaves them owed for the next pull: ``cloud_sync.roster_owed``). A refused answer or an unreachable cloud leaves the old
roster in place and comes back as the result's ``error``; it never raises for those. When
to pull is the daemon's business (``cloud_sync.daemon``, ``pull_schedule``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from cloud_sync.client import CloudClient
from cloud_sync.errors import CloudError, RosterError, SyncError, VersionGapError
from cloud_sync.outbox import Outbox
from cloud_sync.roster_owed import Debtor, record_owed
from cloud_sync.roster_wire import ApplyResult, RosterAnswer

log = structlog.get_logger("cloud_sync.daemon")


class RosterTarget(Debtor, Protocol):
    """Where pulled deltas go: the kiosk's roster store (``edge.vault.store.RosterStore``),
    handed to the daemon by the kiosk. It speaks the shared core's terms: it returns an
    ``ApplyResult`` and raises ``RosterError`` (``VersionGapError`` for a delta that does not
    follow the version held)."""

    @property
    def version(self) -> int: ...

    def apply_answer(self, answer: RosterAnswer) -> ApplyResult: ...

    def record_pull(self, error: str | None) -> None: ...


@dataclass
class RosterPull:
    """What one roster pull did."""

    from_version: int
    to_version: int
    full: bool = False
    upserts: int = 0
    deletions: int = 0
    terms: int = 0  # riders' terms changed without their records
    fleet: int = 0  # riders' fleet state (rentals out elsewhere, overdue, lost)
    erased: tuple[str, ...] = ()  # riders removed from the roster (receipts follow)
    wiped: bool = False  # the cloud revoked this kiosk and it wiped its roster
    error: str | None = None
    retry_after: float | None = None  # the cloud's Retry-After, when it failed with one
    seconds: float = 0.0
    failure: SyncError | RosterError | None = field(default=None, repr=False)

    @property
    def changed(self) -> bool:
        return self.error is None and self.to_version != self.from_version


def pull_roster(client: CloudClient, roster: RosterTarget, outbox: Outbox) -> RosterPull:
    """Pull and apply the roster delta since ``roster``'s version (see the module docstring)."""
    started = time.perf_counter()
    held = roster.version
    result = RosterPull(held, held)
    try:
        applied = _fetch_and_apply(client, roster, held)
    except (SyncError, RosterError) as exc:
        result.error = str(exc) if isinstance(exc, CloudError) else f"roster refused: {exc}"
        result.retry_after = getattr(exc, "retry_after", None)
        result.failure = exc
    else:
        result.to_version = applied.to_version
        result.full, result.upserts, result.deletions = (
            applied.full,
            applied.upserts,
            applied.deletions,
        )
        result.terms, result.fleet = applied.terms, applied.fleet
        result.erased = applied.erased
        if applied.wiped:  # obeyed; the pull still counts as failed: no roster to serve
            result.wiped = True
            result.error = REVOKED
    result.seconds = time.perf_counter() - started
    try:
        roster.record_pull(result.error)
    except RosterError as exc:
        log.warning("roster.record_failed", error=str(exc))
    record_owed(roster, outbox)  # this pull's events, and any a cut left owed
    return result


REVOKED = (
    "the cloud revoked this kiosk and ordered its roster wiped: done; it stays out of "
    "service until it is provisioned again (kiosk provision)"
)


def _fetch_and_apply(client: CloudClient, roster: RosterTarget, held: int) -> ApplyResult:
    try:
        return roster.apply_answer(client.get_roster(held))
    except VersionGapError as exc:
        log.info("roster.version_gap", error=str(exc))
    return roster.apply_answer(client.get_roster(0))  # a full snapshot
