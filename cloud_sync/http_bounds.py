"""Answers from the cloud within bounds: one deadline for a whole exchange, a cap on a body.

httpx's timeouts are per operation: a server (or anything on the path) that sends a byte
every few seconds keeps a request alive for ever, in its headers as in its body; and
``response.content`` reads a body of any size into memory, inflating whatever
``Content-Encoding`` it names (gzip inside gzip: a bomb). The kiosk's client uses:

- ``DeadlineBackend``: the httpcore network backend of its connection pool. While
  ``until(deadline)`` holds, every socket operation (connect, TLS handshake, each read and
  write) waits at most until the deadline, so the exchange ends by then whatever the
  server does: the operation that would pass it times out (``httpx.TimeoutException``).
- ``read_body``: the body as sent (``iter_raw``), at most ``limit`` bytes, and at most
  ``limit`` once inflated; gzip (one or more members) is the only encoding read, anything
  else is refused (``AnswerError``) rather than parsed or inflated without bound.
"""

from __future__ import annotations

import ssl
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

#: Answers other than the roster are small (a batch's ids, a page of closed rentals).
ANSWER_MAX_BYTES = 1024 * 1024


class AnswerError(Exception):
    """The answer's body is too large or in an encoding the kiosk does not read."""


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, with every wait cut at the deadline ``until`` sets (per
    thread; none outside ``until``)."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()

    @contextmanager
    def until(self, deadline: float) -> Iterator[None]:
        """Within this block, no socket operation of this thread waits past ``deadline``
        (``time.monotonic()``)."""
        self._local.deadline = deadline
        try:
            yield
        finally:
            self._local.deadline = None

    def timeout(self, timeout: float | None, error: type[Exception]) -> float | None:
        """``timeout`` cut to the time left; ``error`` once the deadline has passed."""
        deadline: float | None = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise error("the deadline of the exchange has passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        wait = self.timeout(timeout, httpcore.ConnectTimeout)
        return _Stream(
            self._inner.connect_tcp(host, port, wait, local_address, socket_options), self
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        wait = self.timeout(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, wait, socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, backend: DeadlineBackend) -> None:
        self._stream = stream
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._backend.timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._backend.timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = self._backend.timeout(timeout, httpcore.ConnectTimeout)
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, wait), self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class BoundedTransport(httpx.HTTPTransport):
    """httpx's own transport over a connection pool whose network backend is ``backend``
    (httpx offers no argument for it, so the pool is made here; the rest is httpx's)."""

    def __init__(
        self, ssl_context: ssl.SSLContext, limits: httpx.Limits, backend: DeadlineBackend
    ) -> None:
        super().__init__(verify=ssl_context, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def read_body(response: httpx.Response, limit: int, deadline: float) -> bytes:
    """The body of a streamed ``response``, decoded, within ``limit`` bytes (as sent and
    inflated) and ``deadline``; ``AnswerError`` or ``httpx.ReadTimeout`` otherwise."""
    if response.is_stream_consumed:  # made in memory, read and decoded (tests' transports)
        if len(response.content) > limit:
            raise AnswerError(f"the answer is larger than {limit} bytes")
        return response.content
    encodings = _encodings(response.headers.get_list("Content-Encoding", split_commas=True))
    inflater = _Gunzip(limit) if encodings else None
    size = 0
    parts: list[bytes] = []
    for chunk in response.iter_raw():
        size += len(chunk)
        if size > limit:
            raise AnswerError(f"the answer is larger than {limit} bytes; not read further")
        parts.append(inflater.feed(chunk) if inflater is not None else chunk)
        if time.monotonic() > deadline:  # a transport that is not ours (tests' mocks)
            raise httpx.ReadTimeout("the deadline of the exchange has passed")
    if inflater is not None:
        inflater.finish()
    return b"".join(parts)


def _encodings(values: Sequence[str]) -> list[str]:
    named = [value.strip().lower() for value in values if value.strip().lower() != "identity"]
    if named and named != ["gzip"] and named != ["x-gzip"]:
        raise AnswerError(
            f"the answer is encoded as {', '.join(named)[:80]!r}; the kiosk reads gzip only"
        )
    return named


class _Gunzip:
    """Inflates gzip members one after the other, never past ``limit`` bytes in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._fed = False  # the current member has had input

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data:
            self._fed = True
            try:
                piece = self._member.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                raise AnswerError(f"the answer's gzip body is not valid gzip ({exc})") from None
            self.size += len(piece)
            if self.size > self.limit:
                raise AnswerError(f"the answer inflates past {self.limit} bytes; not read further")
            out.append(piece)
            data = self._member.unconsumed_tail
            if self._member.eof:  # another member may follow
                data = self._member.unused_data + data
                self._member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                self._fed = False
        return b"".join(out)

    def finish(self) -> None:
        if self._fed and not self._member.eof:
            raise AnswerError("the answer's gzip body is truncated")
