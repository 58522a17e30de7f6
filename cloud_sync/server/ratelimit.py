"""Lockouts after wrong credentials, and per-kiosk request limits, shared by every replica.

The counters are rows of ``rate_limits`` (migration 4) in the database the replicas
already share, so a limit holds however requests are spread over API processes. A row is
one bucket: ``(bucket, window_start, hits, blocked_until)``, times in Unix milliseconds.
A window starts at a bucket's first hit and lasts its rule's length; one UPSERT counts a
hit (a new window once the old one is over) and returns the count.

- Wrong credentials (an operator's bearer token, the app's, a provisioning token, a kiosk
  signature)
  count against two buckets: the source address (an IPv6 address by its /64) and the
  credential presented (the token, or the kiosk id named). ``max_failures`` within the
  window lock that bucket out for ``lockout_s``: every request of that kind from that
  source, or presenting that credential, is answered ``429 locked_out`` before its
  credential is even looked at, so a correct one is refused too until the lockout ends.
  The one exception is a kiosk id, which is no secret: its lockout refuses only
  signatures that fail, so forgeries in a kiosk's name never lock the real kiosk out.
- A kiosk that signed its request correctly, with a nonce not used before, counts one hit
  against its ``batch`` bucket (``POST /v1/events:batch``) or its ``pull`` bucket
  (``GET /v1/roster`` and ``GET /v1/rentals:closed``); past the limit it is answered
  ``429 rate_limited`` until the window ends. A replay (``401 replayed``) or a signature
  that fails never counts there, so nobody but the kiosk can spend its limit.

Every 429 carries ``Retry-After`` (whole seconds, at least 1) and the usual error body.
Buckets are named by a SHA-256 of what they count, so no input reaches the database as
text. Rows whose window and lockout are over are deleted once a minute per process.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cloud_sync.events import ErrorBody
from cloud_sync.server.db import Database, Tx
from cloud_sync.server.problems import Problem

Credential = Literal["admin", "app", "provision", "kiosk"]
Scope = Literal["batch", "pull"]
PRUNE_EVERY_S = 60.0

#: The OpenAPI description of a 429, for the ``responses`` of every limited route.
TOO_MANY_REQUESTS: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Too many requests: locked_out (too many wrong credentials from this "
        "address or for this credential) or rate_limited (this kiosk's request limit); "
        "retry after Retry-After seconds.",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }
}


def limited_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a limited route: ``ErrorBody`` for each of ``codes``,
    and the 429 with its ``Retry-After``."""
    found: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in codes}
    found.update(TOO_MANY_REQUESTS)
    return found


@dataclass(frozen=True)
class Rule:
    """At most ``limit`` hits per ``window_s``; ``lockout_s`` > 0 makes it a lockout."""

    limit: int
    window_s: float
    lockout_s: float = 0.0

    @property
    def window_ms(self) -> int:
        return max(1, int(self.window_s * 1000))


@dataclass(frozen=True)
class RatePolicy:
    """Every rule, as the settings set them (see ``CloudSettings``)."""

    failures: dict[Credential, Rule]
    requests: dict[Scope, Rule]

    @classmethod
    def from_settings(cls, settings: Any) -> RatePolicy:
        def lockout(limit: int) -> Rule:
            return Rule(limit, settings.auth_failure_window_s, settings.auth_lockout_s)

        window = settings.kiosk_rate_window_s
        return cls(
            failures={
                "admin": lockout(settings.auth_max_failures),
                "app": lockout(settings.auth_max_failures),
                "provision": lockout(settings.auth_max_failures),
                "kiosk": lockout(settings.kiosk_auth_max_failures),
            },
            requests={
                "batch": Rule(settings.kiosk_batch_limit, window),
                "pull": Rule(settings.kiosk_pull_limit, window),
            },
        )

    @property
    def longest_ms(self) -> int:
        rules = [*self.failures.values(), *self.requests.values()]
        return max(rule.window_ms for rule in rules)


# -- pure ---------------------------------------------------------------------------------------


def source_of(host: str | None) -> str:
    """The source a request's peer address counts as: IPv4 as is, IPv6 by its /64 (one
    host holds a whole /64), anything else (a test client, a Unix socket) as text."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def bucket(kind: str, subject: str) -> str:
    """A bucket's name: its kind and a digest of what it counts (any text, even one that
    cannot be encoded or stored: a lone surrogate or a NUL becomes hex)."""
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{kind}:{digest}"


def failure_buckets(credential: Credential, source: str, presented: str | None) -> list[str]:
    """The buckets one wrong credential counts against: its source and, when one was
    presented, the credential itself (a token, or the kiosk id a signature names)."""
    found = [bucket(f"fail:{credential}:source", source)]
    if presented:
        found.append(bucket(f"fail:{credential}:credential", presented))
    return found


def retry_after_s(until_ms: int, now_ms: int) -> int:
    """Whole seconds from ``now_ms`` to ``until_ms``, at least 1."""
    return max(1, math.ceil((until_ms - now_ms) / 1000))


def locked_out(credential: Credential, retry_after: int) -> Problem:
    return Problem(
        429,
        "locked_out",
        f"too many wrong {_NAMES[credential]} from this address or for this credential; "
        f"every {_NAMES[credential][:-1]} from here is refused for {retry_after} s more",
        headers={"Retry-After": str(retry_after)},
    )


def rate_limited(scope: Scope, kiosk_id: str, rule: Rule, retry_after: int) -> Problem:
    what = "event batches" if scope == "batch" else "roster and closed-rental requests"
    return Problem(
        429,
        "rate_limited",
        f"kiosk {kiosk_id} sent more than {rule.limit} {what} in {rule.window_s:g} s; "
        f"retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


_NAMES: dict[Credential, str] = {
    "admin": "operator tokens",
    "app": "app tokens",
    "provision": "provisioning tokens",
    "kiosk": "kiosk signatures",
}


# -- the store ----------------------------------------------------------------------------------


def _count_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, 1, 0)"] * rows)
    return (
        "INSERT INTO rate_limits (bucket, window_start, hits, blocked_until) "  # noqa: S608
        f"VALUES {values} ON CONFLICT (bucket) DO UPDATE SET "
        "hits = CASE WHEN rate_limits.window_start > ? THEN rate_limits.hits + 1 ELSE 1 END, "
        "window_start = CASE WHEN rate_limits.window_start > ? "
        "THEN rate_limits.window_start ELSE excluded.window_start END "
        "RETURNING bucket, hits, window_start"
    )


def _count(tx: Tx, buckets: Sequence[str], rule: Rule, now_ms: int) -> list[tuple[Any, ...]]:
    """One statement: a hit on each bucket (a fresh window where the old one is over)."""
    params: list[Any] = []
    for name in buckets:
        params += [name, now_ms]
    over = now_ms - rule.window_ms
    return tx.rows(_count_sql(len(buckets)), [*params, over, over])


class RateLimiter:
    """The rules of ``policy`` on the ``rate_limits`` table of ``database``."""

    def __init__(
        self, database: Database, policy: RatePolicy, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = database
        self.policy = policy
        self.clock = clock
        self._last_prune = 0.0

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def check(self, credential: Credential, source: str, presented: str | None) -> None:
        """``429 locked_out`` when the source or the credential presented is locked out;
        call it before looking at the credential."""
        names = failure_buckets(credential, source, presented)
        now = self._now_ms()
        with self.db.transaction() as tx:
            where, args = tx.in_list("bucket", names)
            rows = tx.rows(
                f"SELECT MAX(blocked_until) FROM rate_limits WHERE {where}",  # noqa: S608
                args,
            )
        until = int(rows[0][0] or 0) if rows else 0
        if until > now:
            raise locked_out(credential, retry_after_s(until, now))

    def failed(self, credential: Credential, source: str, presented: str | None) -> None:
        """Count a wrong credential; the hit that reaches the limit starts the lockout
        (the hits start again from zero when it ends)."""
        rule = self.policy.failures[credential]
        names = sorted(set(failure_buckets(credential, source, presented)))
        now = self._now_ms()
        with self.db.transaction() as tx:
            counted = _count(tx, names, rule, now)
            reached = [str(name) for name, hits, _ in counted if int(hits) >= rule.limit]
            if reached:
                where, args = tx.in_list("bucket", reached)
                tx.run(
                    "UPDATE rate_limits SET blocked_until = ?, hits = 0, "  # noqa: S608
                    f"window_start = ? WHERE {where}",
                    [now + int(rule.lockout_s * 1000), now, *args],
                )
        self._prune_now_and_then()

    def hit(self, scope: Scope, kiosk_id: str, first: Callable[[Tx], None] | None = None) -> None:
        """Count one request of an authenticated kiosk; ``429 rate_limited`` past its limit.

        ``first`` runs in the same transaction before the hit is counted (the request's
        nonce is spent there): when it raises, nothing is counted, so a replayed request
        never spends the kiosk's limit."""
        rule = self.policy.requests[scope]
        now = self._now_ms()
        with self.db.transaction() as tx:
            if first is not None:
                first(tx)
            counted = _count(tx, [bucket(scope, kiosk_id)], rule, now)
        _, hits, started = counted[0]
        self._prune_now_and_then()
        if int(hits) > rule.limit:
            retry = retry_after_s(int(started) + rule.window_ms, now)
            raise rate_limited(scope, kiosk_id, rule, retry)

    def prune(self) -> int:
        """Delete the rows whose window and lockout are both over."""
        now = self._now_ms()
        with self.db.transaction() as tx:
            return tx.run(
                "DELETE FROM rate_limits WHERE window_start < ? AND blocked_until < ?",
                [now - self.policy.longest_ms, now],
            )

    def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            self.prune()
