"""One pass of the sync daemon: every pending event sent once, what fails narrowed, the
events that fail alone counted, so that no event holds the others back.

What each answer does (the table in ``docs/sync.md``):

- accepted and duplicate ids: marked sent; an answer naming another ``batch_id``, or an id
  the batch did not hold, is not trusted at all (nothing marked sent, the pass stops);
- a 422 that names rejected events: those are quarantined with the reason, the rest go in
  the next batch; except a seq conflict (the cloud stores another event under that seq):
  the event is renumbered above the cloud's highest seq for this kiosk, keeping its id,
  and goes in the next batch (``cloud_sync.outbox_seq``); an event renumbered
  ``_MAX_RENUMBER`` times in one pass ends the pass in error, still pending;
- another 400, 413, 415 or 422 in the API's error shape, or any 413 to a batch of several
  events: the batch is split in
  halves until the offending event is alone, which is quarantined. A redirect (never
  followed), another 4xx (a missing route) or a page that is not the API's judges no event:
  the pass stops as for a cloud that cannot be reached;
- a failure that what was sent may cause (a 5xx, 408, a read timeout, a connection reset
  mid-request): the batch is narrowed the same way, so every event that goes through goes
  through. An event that fails alone is held for the rest of the pass and, from then on,
  sent alone after the other batches. Each time it fails alone *and a later request of
  the same pass succeeds* (another event, or a probe: an event the cloud already has, sent
  again, which it answers "duplicate") its failure count goes up; at ``quarantine_after``
  it is quarantined with the cloud's answer as the reason. It stays in the outbox;
  ``kiosk sync requeue`` sends it again;
- a refused signature (401/403), a connection that never opens, 429, an answer that is not
  the API, or failures in a row that no success interrupts (``FailureStreak``: the cloud
  is down): the pass stops, the error is recorded for ``kiosk sync status``, and no event
  is counted against.

A pass that leaves an event held ends in error too (``CloudUnavailableError`` naming it),
so the daemon backs off before the next try and ``kiosk sync now`` exits 7.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from ulid import ULID

from cloud_sync.batching import BatchLimits, FailureStreak, halves
from cloud_sync.client import CloudClient
from cloud_sync.errors import (
    CloudAuthError,
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
)
from cloud_sync.events import BatchResponse
from cloud_sync.outbox import Outbox
from cloud_sync.outbox_schema import Pending, Quarantined
from cloud_sync.outbox_seq import parse_conflict

log = structlog.get_logger("cloud_sync.daemon")

#: At most this many held events are named in the pass's error.
_NAMED = 3
#: An event renumbered this many times in one pass ends the pass (the cloud keeps moving).
_MAX_RENUMBER = 3


@dataclass(frozen=True)
class FailedAlone:
    """An event that failed alone in this pass and stays pending.

    ``counted``: a later request succeeded, so the failure counted against the event
    (``failures`` is its count so far); else the cloud may be down and nothing was counted.
    """

    seq: int
    id: str
    type: str
    reason: str
    counted: bool = False
    failures: int = 0


@dataclass
class PassResult:
    """What one pass did."""

    batches: int = 0
    accepted: int = 0
    duplicate: int = 0
    quarantined: int = 0
    renumbered: int = 0  # events given a new seq after a seq conflict
    acknowledged: int = 0  # ids the cloud answered for, whether or not still pending here
    error: str | None = None
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)
    failure: CloudUnavailableError | CloudAuthError | None = field(default=None, repr=False)
    held: list[FailedAlone] = field(default_factory=list)  # failed alone, still pending
    set_aside: list[Quarantined] = field(default_factory=list)  # quarantined in this pass

    @property
    def sent(self) -> int:
        return self.accepted + self.duplicate


class SyncPass:
    """One pass over one outbox (use once: ``run``)."""

    def __init__(
        self,
        outbox: Outbox,
        client: CloudClient,
        limits: BatchLimits,
        live_window_s: float,
        quarantine_after: int,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        if quarantine_after < 1:
            raise ValueError("quarantine_after must be at least 1")
        self.outbox = outbox
        self.client = client
        self.limits = limits
        self.live_window_s = live_window_s
        self.quarantine_after = quarantine_after
        self.stopping = stopping
        self.result = PassResult()
        self._held: dict[int, FailedAlone] = {}
        self._unconfirmed: list[Pending] = []  # held, and no success since they failed
        self._streak = FailureStreak()
        self._last_failure: CloudUnavailableError | None = None
        self._renumbered: dict[str, int] = {}  # event id -> times renumbered in this pass

    def run(self) -> PassResult:
        """Send batches until nothing is pending, then the events that failed alone, one by
        one; transient failures end the pass (the events stay pending)."""
        result = self.result
        started = time.perf_counter()
        try:
            self._batches()
            self._alone()
            if self._unconfirmed:
                self._probe()  # does the cloud take anything? then the failures count
            if self._held:
                raise self._held_error()
        except (CloudUnavailableError, CloudAuthError) as exc:
            result.error = str(exc)
            result.failure = exc
            self.outbox.record_attempt(str(exc))
            log.warning(
                "sync.failed", error=str(exc), sent=result.sent, status=getattr(exc, "status", None)
            )
        else:
            if result.batches:
                self.outbox.record_attempt(None)
        result.held = list(self._held.values())
        result.seconds = time.perf_counter() - started
        if result.batches or result.error:
            log.info(
                "sync.pass",
                batches=result.batches,
                accepted=result.accepted,
                duplicate=result.duplicate,
                quarantined=result.quarantined,
                renumbered=result.renumbered,
                held=len(result.held),
                error=result.error,
                seconds=round(result.seconds, 3),
            )
        return result

    # -- the two phases ----------------------------------------------------------------------

    def _batches(self) -> None:
        while not self.stopping():
            batch = self.outbox.next_batch(self.limits, self.live_window_s, self._held.keys())
            if not batch:
                return
            before = self._progress()
            self._send(batch)
            if self._progress() == before:
                raise CloudUnavailableError(
                    f"{self.client.base_url}: the cloud acknowledged none of "
                    f"{len(batch)} events; will retry"
                )

    def _alone(self) -> None:
        """The events that failed alone in earlier passes, each alone, oldest first."""
        for event in self.outbox.failing_pending(self.limits.max_events, self._held.keys()):
            if self.stopping():
                return
            self._send([event])

    def _progress(self) -> int:
        result = self.result
        return result.acknowledged + result.quarantined + result.renumbered + len(self._held)

    # -- sending and narrowing ------------------------------------------------------------------

    def _send(self, batch: Sequence[Pending]) -> None:
        if self._post(batch) and len(batch) > 1:
            self._narrow(batch)

    def _narrow(self, batch: Sequence[Pending]) -> None:
        """Both halves first (each one's success tells about the other's failure), then
        the halves that failed, the same way, down to single events."""
        failed = [half for half in halves(batch) if self._post(half)]
        for half in failed:
            if len(half) > 1:
                self._narrow(half)

    def _post(self, batch: Sequence[Pending]) -> bool:
        """Send one batch; True when it failed in a way its content may cause."""
        batch_id = str(ULID())
        try:
            answer = self.client.post_batch(
                self.outbox.kiosk_id, batch_id, [item.body for item in batch]
            )
            self._check_answer(answer, batch_id, batch)
        except CloudRejectedError as exc:
            self.result.batches += 1
            self._rejected(batch, exc)
            return False
        except CloudUnavailableError as exc:
            if not exc.reached:
                raise
            self._failed(batch, exc)
            return True
        self.result.batches += 1
        acknowledged = len({*answer.accepted, *answer.duplicate})
        self.result.acknowledged += acknowledged
        self.result.accepted += self.outbox.mark_sent(answer.accepted)
        self.result.duplicate += self.outbox.mark_sent(answer.duplicate)
        if acknowledged:
            self._succeeded()
        return False

    def _check_answer(self, answer: BatchResponse, batch_id: str, batch: Sequence[Pending]) -> None:
        """An answer to another batch, or one acknowledging events this batch did not hold,
        is not trusted at all: nothing is marked sent that the cloud was not sent (a proxy's
        stale answer, a broken cloud). The pass stops with the events kept pending."""
        sent = {item.id for item in batch}
        foreign = [i for i in (*answer.accepted, *answer.duplicate) if i not in sent]
        if answer.batch_id == batch_id and not foreign:
            return
        what = (
            f"answers batch {answer.batch_id[:40]!r}, not the one sent"
            if answer.batch_id != batch_id
            else f"acknowledges {len(foreign)} events this batch of {len(batch)} did not hold"
        )
        raise CloudUnavailableError(
            f"{self.client.base_url}: the answer {what}; not trusted, nothing marked sent "
            "(is something between the kiosk and the cloud answering in its place?)"
        )

    def _rejected(self, batch: Sequence[Pending], exc: CloudRejectedError) -> None:
        """A 4xx: quarantine what it names, else narrow until the offending event is alone."""
        if exc.rejected:
            reasons = {
                batch[index].seq: reason
                for index, reason in exc.rejected.items()
                if 0 <= index < len(batch)
            }
            if reasons:
                self._renumber(batch, reasons)
                if reasons:
                    self._quarantine(reasons)
                return  # the others are still pending and go in the next batch
        if len(batch) > 1:
            for half in halves(batch):
                self._send(half)
            return
        self._quarantine({batch[0].seq: f"{exc.status} {exc.code}: {exc}"})

    def _renumber(self, batch: Sequence[Pending], reasons: dict[int, str]) -> None:
        """Take the seq conflicts out of ``reasons`` and renumber those events."""
        floors: dict[int, int] = {}
        for seq, reason in list(reasons.items()):
            conflict = parse_conflict(reason)
            if conflict is None or conflict.seq != seq:
                continue
            del reasons[seq]
            floors[seq] = conflict.stored_max if conflict.stored_max is not None else seq
        if not floors:
            return
        ids = {item.seq: item.id for item in batch}
        for seq in floors:
            count = self._renumbered.get(ids[seq], 0) + 1
            self._renumbered[ids[seq]] = count
            if count > _MAX_RENUMBER:
                raise CloudUnavailableError(
                    f"{self.client.base_url}: seq {seq} ({ids[seq]}) conflicts with the cloud "
                    f"after {_MAX_RENUMBER} renumberings; kept pending, will retry"
                )
        moved = self.outbox.renumber(floors)
        self.result.renumbered += len(moved)
        log.warning("sync.renumbered", moved=moved, reason="seq already stored in the cloud")

    def _quarantine(self, reasons: dict[int, str]) -> None:
        changed = self.outbox.quarantine(reasons)
        self.result.quarantined += len(changed)
        self.result.set_aside.extend(changed)
        self.result.reasons.extend(event.reason for event in changed)

    # -- telling a bad event from a cloud that is down -------------------------------------------

    def _failed(self, batch: Sequence[Pending], exc: CloudUnavailableError) -> None:
        """A request failed in a way its content may cause: hold a single event, and stop
        the pass when the failures in a row say the cloud is down."""
        self._last_failure = exc
        if len(batch) == 1:
            item = batch[0]
            self._held[item.seq] = FailedAlone(item.seq, item.id, item.type, exc.detail)
            self._unconfirmed.append(item)
        log.info("sync.batch_failed", events=len(batch), error=exc.detail)
        can_probe = self.outbox.last_acknowledged() is not None
        step = self._streak.failure(can_probe)
        if step == "stop" or (step == "probe" and not self._probe()):
            raise exc  # the cloud is down: no event is counted against

    def _probe(self) -> bool:
        """Send again one event the cloud acknowledged: a success ("duplicate") shows the
        cloud takes events, so the failures since the last success were the events' own."""
        event = self.outbox.last_acknowledged()
        if event is None:
            return False
        try:
            batch_id = str(ULID())
            answer = self.client.post_batch(self.outbox.kiosk_id, batch_id, [event.body])
            self._check_answer(answer, batch_id, [event])
        except CloudAuthError:
            raise
        except CloudError as exc:
            log.info("sync.probe", ok=False, error=str(exc))
            return False
        ok = event.id in answer.accepted or event.id in answer.duplicate
        log.info("sync.probe", ok=ok, seq=event.seq)
        if ok:
            self._succeeded()
        return ok

    def _succeeded(self) -> None:
        """The cloud took a request: count a failure against each event held since the last
        success, and quarantine those that reached ``quarantine_after``."""
        self._streak.success()
        for item in self._unconfirmed:
            held = self._held[item.seq]
            failures = self.outbox.record_failure(item.seq, held.reason)
            log.warning(
                "sync.failed_alone",
                seq=item.seq,
                type=item.type,
                failures=failures,
                quarantine_after=self.quarantine_after,
                reason=held.reason,
            )
            if failures == 0:  # no longer pending (requeued or sent by another process)
                del self._held[item.seq]
            elif failures >= self.quarantine_after:
                del self._held[item.seq]
                self._quarantine(
                    {
                        item.seq: f"{held.reason} (failed alone {failures} times while the "
                        "cloud took other events)"
                    }
                )
            else:
                self._held[item.seq] = FailedAlone(
                    item.seq, item.id, item.type, held.reason, True, failures
                )
        self._unconfirmed.clear()

    def _held_error(self) -> CloudUnavailableError:
        held = list(self._held.values())
        named = [self._describe(event) for event in held[:_NAMED]]
        if len(held) > _NAMED:
            named.append(f"{len(held) - _NAMED} more")
        noun = "event" if len(held) == 1 else "events"
        message = f"{len(held)} {noun} not taken by the cloud, kept pending: {'; '.join(named)}"
        last = self._last_failure
        return CloudUnavailableError(
            message,
            None if last is None else last.status,
            None if last is None else last.retry_after,
            detail=message,
        )

    def _describe(self, event: FailedAlone) -> str:
        if event.counted:
            return (
                f"#{event.seq} {event.type} failed alone ({event.reason}), "
                f"{event.failures} of {self.quarantine_after} failures before quarantine"
            )
        return (
            f"#{event.seq} {event.type} failed alone ({event.reason}) and the cloud took "
            "nothing after it: not counted (the cloud may be down)"
        )
