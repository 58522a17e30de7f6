"""When the sync daemon's pulls run: the roster and the rentals closed elsewhere.

Each pull is its own endpoint, so each keeps its own schedule, apart from the pushes and
from each other: it is due at start, when its interval has passed since the last try, and
at once when wanted (the daemon's wake: SIGUSR1, the MQTT ``sync-now`` command). After a
failure it backs off on its own: full jitter on the daemon's ``BackoffPolicy``, at least
1 s, optionally no later than its interval, and never sooner than the cloud's
``Retry-After`` (capped by the policy).

Pure: the caller passes the time (``time.monotonic()``) and the random draw.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud_sync.backoff import BackoffPolicy

MIN_RETRY_S = 1.0  # a failed pull is never tried again sooner than this


@dataclass
class PullSchedule:
    """The next time one pull is due, and how many of its tries failed in a row."""

    backoff: BackoffPolicy
    retry_within_interval: bool = False  # a failure's jittered wait never exceeds the interval
    due: float = 0.0  # monotonic time of the next try; 0.0 is due at once
    wanted: bool = False  # asked for now (a wake), whatever ``due`` says
    failures: int = 0

    def want(self) -> None:
        self.wanted = True

    def is_due(self, now: float) -> bool:
        return self.wanted or now >= self.due

    def seconds_left(self, now: float) -> float:
        return 0.0 if self.wanted else max(0.0, self.due - now)

    def started(self) -> None:
        """A try begins: a wake from now on asks for another one."""
        self.wanted = False

    def finished(
        self,
        now: float,
        interval_s: float,
        failed: bool,
        rand: float,
        retry_after: float | None = None,
    ) -> float:
        """Plan the next try after this one; returns the seconds until it."""
        if not failed:
            self.failures = 0
            wait = interval_s
        else:
            self.failures += 1
            wait = max(self.backoff.delay(self.failures, rand), MIN_RETRY_S)
            if self.retry_within_interval:
                wait = min(wait, interval_s)
            if retry_after is not None:  # the cloud's wish wins, up to the policy's cap
                wait = max(wait, self.backoff.delay(self.failures, 0.0, retry_after))
        self.due = now + wait
        return wait
