"""The sync daemon: drains the outbox into the cloud API, live events first.

One pass (``sync_once``) sends batches until the outbox has nothing pending:

- the answer lists accepted and duplicate ids: both are marked sent;
- a 422 that names rejected events: those are quarantined with the reason, the rest of the
  batch goes again at once;
- another 4xx (other than 401/403/408/429): the batch is split in halves until the
  offending event is alone, which is then quarantined; the queue never blocks on it;
- a transient failure (network, timeout, TLS, 408, 429, 5xx) or a refused signature
  (401/403): the pass stops, the error is recorded for ``kiosk sync status``, and the
  events stay pending.

``run`` repeats passes every ``interval_s`` and, after a failure, retries with tenacity:
exponential backoff with full jitter, capped, never sooner than a ``Retry-After``. ``wake``
(``kiosk sync now`` sends SIGUSR1) cuts any wait short; ``stop`` ends the loop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception_type
from ulid import ULID

from cloud_sync.backoff import BackoffPolicy, wait_full_jitter
from cloud_sync.batching import BatchLimits
from cloud_sync.client import CloudClient
from cloud_sync.errors import CloudAuthError, CloudRejectedError, CloudUnavailableError
from cloud_sync.outbox import Outbox
from cloud_sync.outbox_schema import Pending

log = structlog.get_logger("cloud_sync.daemon")

_RETRIED = (CloudUnavailableError, CloudAuthError)


@dataclass
class PassResult:
    """What one pass did."""

    batches: int = 0
    accepted: int = 0
    duplicate: int = 0
    quarantined: int = 0
    acknowledged: int = 0  # ids the cloud answered for, whether or not still pending here
    error: str | None = None
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)
    failure: CloudUnavailableError | CloudAuthError | None = field(default=None, repr=False)

    @property
    def sent(self) -> int:
        return self.accepted + self.duplicate


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
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.limits = limits
        self.live_window_s = live_window_s
        self.interval_s = interval_s
        self.backoff = backoff or BackoffPolicy()
        self.keep_sent_s = keep_sent_s
        self._wake = threading.Event()
        self._stop = threading.Event()

    # -- control ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Sync now: end the current wait (interval or backoff)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()
        if self._stop.is_set():
            raise _Stop

    # -- one pass -----------------------------------------------------------------------------

    def sync_once(self) -> PassResult:
        """Send batches until nothing is pending; transient failures end the pass."""
        result = PassResult()
        started = time.perf_counter()
        try:
            while not self._stop.is_set():
                batch = self.outbox.next_batch(self.limits, self.live_window_s)
                if not batch:
                    break
                before = result.acknowledged + result.quarantined
                self._send(batch, result)
                if result.acknowledged + result.quarantined == before:
                    raise CloudUnavailableError(
                        f"{self.client.base_url}: the cloud acknowledged none of "
                        f"{len(batch)} events; will retry"
                    )
        except _RETRIED as exc:
            result.error = str(exc)
            result.failure = exc
            self.outbox.record_attempt(str(exc))
            log.warning(
                "sync.failed", error=str(exc), sent=result.sent, status=getattr(exc, "status", None)
            )
        else:
            if result.batches:
                self.outbox.record_attempt(None)
        result.seconds = time.perf_counter() - started
        if result.batches or result.error:
            log.info(
                "sync.pass",
                batches=result.batches,
                accepted=result.accepted,
                duplicate=result.duplicate,
                quarantined=result.quarantined,
                error=result.error,
                seconds=round(result.seconds, 3),
            )
        return result

    def _send(self, batch: list[Pending], result: PassResult) -> None:
        """Send one batch; quarantine what the cloud refuses; raise on transient failures."""
        try:
            answer = self.client.post_batch(
                self.outbox.kiosk_id, str(ULID()), [item.body for item in batch]
            )
        except CloudRejectedError as exc:
            result.batches += 1
            if exc.rejected:
                reasons = {
                    batch[index].seq: reason
                    for index, reason in exc.rejected.items()
                    if 0 <= index < len(batch)
                }
                if reasons:
                    result.quarantined += self.outbox.quarantine(reasons)
                    result.reasons.extend(reasons.values())
                    return  # the others are still pending and go in the next batch
            if len(batch) > 1:
                half = len(batch) // 2
                self._send(batch[:half], result)
                self._send(batch[half:], result)
                return
            reason = f"{exc.status} {exc.code}: {exc}"
            result.quarantined += self.outbox.quarantine({batch[0].seq: reason})
            result.reasons.append(reason)
            return
        result.batches += 1
        result.acknowledged += len(answer.accepted) + len(answer.duplicate)
        result.accepted += self.outbox.mark_sent(answer.accepted)
        result.duplicate += self.outbox.mark_sent(answer.duplicate)

    # -- the service ----------------------------------------------------------------------------

    def sync_with_retry(self) -> PassResult:
        """Passes until one succeeds, waiting with backoff between failed ones."""

        def attempt() -> PassResult:
            result = self.sync_once()
            if result.failure is not None:
                raise result.failure
            return result

        retrying = Retrying(
            sleep=self._sleep,
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
        log.info("sync.started", cloud=self.client.base_url, interval_s=self.interval_s)
        last_prune = 0.0
        try:
            while not self._stop.is_set():
                self.sync_with_retry()
                if time.monotonic() - last_prune > 600:
                    self.outbox.prune_sent(self.keep_sent_s)
                    last_prune = time.monotonic()
                self._sleep(self.interval_s)
        except _Stop:
            pass
        log.info("sync.stopped")
