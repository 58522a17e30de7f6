"""The sync daemon: drains the outbox into the cloud API, live events first.

One pass (``sync_once``, ``cloud_sync.sync_pass``) sends batches until the outbox has
nothing pending: accepted and duplicate ids are marked sent; events the cloud refuses
(a 4xx naming them, or found by splitting the batch) are quarantined; a batch that fails
in a way its content may cause (a 5xx, a timeout, a reset) is narrowed, so the other
events go through, and an event that keeps failing alone while the cloud takes others is
quarantined after ``quarantine_after`` failures. A cloud that is down (a refused
connection, 401/403, 429, failures that no success interrupts) ends the pass with the
error recorded for ``kiosk sync status``; the events stay pending and none is counted
against. No event holds the others back.

``run`` repeats passes every ``interval_s`` and, after a failure, retries with tenacity:
exponential backoff with full jitter, capped, never sooner than a ``Retry-After``. ``wake``
(SIGUSR1, which the MQTT ``sync-now`` command sends) cuts any wait short and asks for both
pulls below at once; ``stop`` ends the loop. ``kiosk sync now`` runs a pass of its own.

With a roster attached, ``run`` also pulls the roster at start, every
``roster_interval_s`` and when woken (``pull_roster``; one pull is ``roster_pull``: the
delta since the version held, checked whole by the store before anything changes, a full
snapshot when the delta does not follow, ``roster.applied`` in the outbox, the old roster
kept with the error remembered for ``kiosk sync status`` when anything is refused). The pull
keeps its own schedule (``pull_schedule``): during a backoff wait of the pushes it is
still tried when due, so a rider deleted in the cloud leaves this kiosk's roster even
while its uploads fail. Its own failures back it off (full jitter, at least 1 s, no later
than ``roster_interval_s``, but never sooner than a ``Retry-After``).

With a ``close_rentals`` callback (the kiosk's ledger), ``run`` also asks the cloud which of
this kiosk's rentals it has closed (returned at another kiosk) since the cursor kept in the
outbox's ``meta`` table, hands their ids to the callback and then advances the cursor
(``pull_closed``). It does so after a successful pass, at most every ``interval_s``, and
at once when woken. It is a different endpoint from the batches, so it too keeps its own
schedule while the pushes back off: during a backoff wait it is still tried when due, so a
rider whose powerbank went back elsewhere is freed even while the kiosk's uploads fail
(a slow link that times out on big batches, a cloud whose ingest is down). Its own
failures back it off like the pushes (full jitter, capped, at least 1 s, ``Retry-After``
honoured). Every fetch leaves its time, the rentals it closed and its error in the outbox for
``kiosk sync status``; a failure leaves the ledger and the cursor as they were.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from cloud_sync import roster_pull
from cloud_sync.backoff import BackoffPolicy, wait_full_jitter
from cloud_sync.batching import BatchLimits
from cloud_sync.client import CloudClient
from cloud_sync.closed_pull import ClosedPull, pull_closed
from cloud_sync.errors import CloudAuthError, CloudUnavailableError
from cloud_sync.outbox import Outbox
from cloud_sync.pull_schedule import PullSchedule
from cloud_sync.roster_pull import RosterPull, RosterTarget
from cloud_sync.sync_pass import FailedAlone, PassResult, SyncPass

__all__ = ["FailedAlone", "PassResult", "SyncDaemon"]

log = structlog.get_logger("cloud_sync.daemon")

_RETRIED = (CloudUnavailableError, CloudAuthError)


class _Stop(Exception):
    """Internal: the daemon was asked to stop during a wait."""


class SyncDaemon:
    """Moves events from one outbox to one cloud API."""

    def __init__(
        self,
        outbox: Outbox,
        client: CloudClient,
        limits: BatchLimits,
        live_window_s: float = 60.0,
        interval_s: float = 10.0,
        backoff: BackoffPolicy | None = None,
        keep_sent_s: float = 7 * 86400,
        roster: RosterTarget | None = None,
        roster_interval_s: float = 300.0,
        close_rentals: Callable[[list[str]], int] | None = None,
        quarantine_after: int = 5,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.limits = limits
        self.live_window_s = live_window_s
        self.interval_s = interval_s
        self.backoff = backoff or BackoffPolicy()
        self.keep_sent_s = keep_sent_s
        self.roster = roster
        self.roster_interval_s = roster_interval_s
        self.close_rentals = close_rentals
        self.quarantine_after = quarantine_after
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._roster_schedule = PullSchedule(self.backoff, retry_within_interval=True)
        self._closed_schedule = PullSchedule(self.backoff)

    # -- control ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Sync now: end the current wait (interval or backoff), pull the roster and fetch
        the rentals closed elsewhere."""
        self._roster_schedule.want()
        self._closed_schedule.want()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _sleep(self, seconds: float) -> bool:
        """Wait; True when woken before the time was up. Raises ``_Stop`` when stopping."""
        woken = self._wake.wait(seconds)
        if woken:  # cleared only when seen: a wake that comes as the time runs out stays
            self._wake.clear()
        if self._stop.is_set():
            raise _Stop
        return woken

    # -- one pass -----------------------------------------------------------------------------

    def sync_once(self) -> PassResult:
        """Send batches until nothing is pending; transient failures end the pass."""
        return SyncPass(
            self.outbox,
            self.client,
            self.limits,
            self.live_window_s,
            self.quarantine_after,
            self._stop.is_set,
        ).run()

    # -- the roster -----------------------------------------------------------------------------

    def pull_roster(self) -> RosterPull:
        """Pull and apply the roster delta since the version held, and plan the next pull:
        in ``roster_interval_s``, or after a backoff when this one failed. Never raises for
        a refused delta or an unreachable cloud (the old roster stays, the error is kept)."""
        if self.roster is None:
            raise RuntimeError("no roster is attached to this daemon")
        self._roster_schedule.started()
        result = roster_pull.pull_roster(self.client, self.roster, self.outbox)
        self._roster_schedule.finished(
            time.monotonic(),
            self.roster_interval_s,
            result.error is not None,
            random.random(),
            result.retry_after,
        )
        log.info(
            "roster.pull",
            from_version=result.from_version,
            to_version=result.to_version,
            full=result.full,
            upserts=result.upserts,
            deletions=result.deletions,
            terms=result.terms,
            fleet=result.fleet,
            error=result.error,
            seconds=round(result.seconds, 3),
        )
        return result

    # -- rentals closed elsewhere -----------------------------------------------------------------

    def pull_closed(self) -> ClosedPull:
        """Close in the ledger the rentals the cloud says are closed (``closed_pull``), and
        plan the next fetch: in ``interval_s``, or after a backoff when this one failed."""
        if self.close_rentals is None:
            raise RuntimeError("no rental ledger is attached to this daemon")
        self._closed_schedule.started()
        result = pull_closed(self.outbox, self.client, self.close_rentals, self._stop.is_set)
        self._closed_schedule.finished(
            time.monotonic(),
            self.interval_s,
            result.error is not None,
            random.random(),
            result.retry_after,
        )
        return result

    # -- both pulls -----------------------------------------------------------------------------

    def _roster_is_due(self) -> bool:
        return self.roster is not None and self._roster_schedule.is_due(time.monotonic())

    def _closed_is_due(self) -> bool:
        return self.close_rentals is not None and self._closed_schedule.is_due(time.monotonic())

    def _next_pull_in(self) -> float:
        """Seconds until the next pull that is attached is due (infinite without any)."""
        now = time.monotonic()
        waits = [float("inf")]
        if self.roster is not None:
            waits.append(self._roster_schedule.seconds_left(now))
        if self.close_rentals is not None:
            waits.append(self._closed_schedule.seconds_left(now))
        return min(waits)

    def _backoff_sleep(self, seconds: float) -> None:
        """The wait between failed passes. The roster pull and the fetch of closed rentals
        keep their own schedules meanwhile; a wake (sync now) ends the wait."""
        deadline = time.monotonic() + seconds
        while True:
            if self._roster_is_due():
                self.pull_roster()
            if self._closed_is_due():
                self.pull_closed()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._sleep(min(left, self._next_pull_in())):
                return

    # -- the service ----------------------------------------------------------------------------

    def sync_with_retry(self) -> PassResult:
        """Passes until one succeeds, waiting with backoff between failed ones."""

        def attempt() -> PassResult:
            result = self.sync_once()
            if result.failure is not None:
                raise result.failure
            return result

        retrying = Retrying(
            sleep=self._backoff_sleep,
            wait=wait_full_jitter(self.backoff),
            retry=retry_if_exception_type(_RETRIED),
            before_sleep=self._log_backoff,
            reraise=True,
        )
        return retrying(attempt)

    def _log_backoff(self, state: RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action else None
        log.info("sync.backoff", attempt=state.attempt_number, wait_s=round(wait or 0, 2))

    def run(self) -> None:
        """The long-running service: passes every ``interval_s`` until ``stop``."""
        log.info(
            "sync.started",
            cloud=self.client.base_url,
            interval_s=self.interval_s,
            roster=self.roster is not None,
        )
        last_prune = 0.0
        try:
            while not self._stop.is_set():
                # The roster first (due at start), so its roster.applied goes out in this pass.
                if self._roster_is_due():
                    self.pull_roster()
                self.sync_with_retry()
                if self._closed_is_due():
                    self.pull_closed()
                if time.monotonic() - last_prune > 600:
                    self.outbox.prune_sent(self.keep_sent_s)
                    last_prune = time.monotonic()
                self._sleep(min(self.interval_s, self._next_pull_in()))
        except _Stop:
            pass
        log.info("sync.stopped")
