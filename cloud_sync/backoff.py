"""The retry policy of the sync daemon: exponential backoff with full jitter, capped,
honouring a server's ``Retry-After``. Pure, apart from the tenacity adapter at the end,
which only reads the attempt number and the failure.

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the n-th wait is a
uniform random value in ``[0, min(cap, base * 2^(n-1))]``, which spreads a fleet of kiosks
that lost the cloud at the same moment instead of letting them return in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from tenacity import RetryCallState
from tenacity.wait import wait_base


@dataclass(frozen=True)
class BackoffPolicy:
    base_s: float = 1.0
    cap_s: float = 300.0
    retry_after_cap_s: float = 3600.0

    def ceiling(self, attempt: int) -> float:
        """The largest wait after the ``attempt``-th failure (1-based)."""
        exponent = min(max(attempt, 1) - 1, 64)
        return float(min(self.cap_s, self.base_s * 2**exponent))

    def delay(self, attempt: int, rand: float, retry_after: float | None = None) -> float:
        """Seconds to wait; ``rand`` in [0, 1). Never sooner than the server asked."""
        wait = rand * self.ceiling(attempt)
        if retry_after is not None:
            wait = max(wait, min(max(retry_after, 0.0), self.retry_after_cap_s))
        return wait


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds (ASCII digits) or an HTTP
    date; else None (garbage is ignored, never raised: ``²`` is a digit to ``isdigit``)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text[:12]))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class wait_full_jitter(wait_base):  # named like tenacity's own waits
    """tenacity wait: ``BackoffPolicy.delay``, reading ``retry_after`` from the failure."""

    def __init__(self, policy: BackoffPolicy, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.rand = rand

    def __call__(self, retry_state: RetryCallState) -> float:
        retry_after = None
        if retry_state.outcome is not None and retry_state.outcome.failed:
            retry_after = getattr(retry_state.outcome.exception(), "retry_after", None)
        return self.policy.delay(retry_state.attempt_number, self.rand(), retry_after)
