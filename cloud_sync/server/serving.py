"""How ``kiosk-cloud serve`` runs uvicorn: its options from the settings, and an HTTP
protocol that gives a request's headers a deadline.

uvicorn closes a connection that stays idle after an answer (``timeout_keep_alive``) but
has no deadline for the headers of a request: a client that opens connections and sends
a few bytes of headers now and then holds each one for ever (a slow-loris), until the
process runs out of file descriptors. ``HeaderDeadline`` is uvicorn's h11 protocol with
two rules added: a connection must deliver a request's complete headers within
``header_timeout_s`` of being opened or of its previous answer, or it is closed; and a
connection past ``limit_concurrency`` is answered 503 and closed as soon as it is
accepted (uvicorn itself would hold it until its headers came, using up descriptors). The
body has its own deadline (``bodies.read_body``: 408).

When the process does run out of descriptors, asyncio reports every failed accept (once
per connection waiting in the listen backlog, every second: hundreds of megabytes of log
in a minute). ``new_event_loop`` gives uvicorn a loop that logs that once a minute, with
the count since.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

from cloud_sync.server.config import CloudSettings

log = structlog.get_logger("cloud_sync.server")
#: The headers' deadline of this process (``configure``; the setting's default until then).
_header_timeout_s: float = CloudSettings.model_fields["header_timeout_s"].default


def configure(settings: CloudSettings) -> None:
    """Take this process's header deadline from ``settings`` (each worker does)."""
    global _header_timeout_s
    _header_timeout_s = settings.header_timeout_s


#: File descriptors a process keeps beside its connections (database, logs, listening
#: sockets, the event loop's own).
SPARE_FILES = 64


def concurrency(settings: CloudSettings, open_files: int) -> int:
    """``limit_concurrency``, lowered to fit ``open_files`` (the process's open-file limit)
    less ``SPARE_FILES``: a process that runs out of descriptors can accept nothing, not
    even a 503, and asyncio logs every failed accept."""
    return max(10, min(settings.limit_concurrency, open_files - SPARE_FILES))


def uvicorn_options(settings: CloudSettings, open_files: int) -> dict[str, Any]:
    """What ``uvicorn.run`` is given, besides the app, by ``kiosk-cloud serve``."""
    configure(settings)
    return {
        "host": settings.host,
        "port": settings.port,
        "http": HeaderDeadline,
        "loop": f"{__name__}:new_event_loop",
        "limit_concurrency": concurrency(settings, open_files),
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
    }


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 19\r\n\r\nService Unavailable"
)


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are late."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) >= limit:  # as uvicorn counts
            # answered and closed at once: held connections never use up the descriptors
            transport.write(_BUSY)
            transport.close()
            return
        self._arm()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        # armed first: a pipelined request that the answer lets through disarms it; a
        # request body left unread after an early answer is late like headers are
        self._arm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(_header_timeout_s, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class AcceptErrors:
    """An event loop's exception handler: asyncio's "out of system resource" on accept is
    logged at most once per ``every_s`` (with how many there were); anything else as
    asyncio would."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self.clock = clock
        self.last: float | None = None
        self.count = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            loop.default_exception_handler(context)
            return
        self.count += 1
        now = self.clock()
        if self.last is not None and now - self.last < self.every_s:
            return
        log.error(
            "cloud.out_of_file_descriptors",
            failed_accepts=self.count,
            error=str(context.get("exception")),
            hint="raise the open-file limit or lower KIOSK_CLOUD_LIMIT_CONCURRENCY",
        )
        self.last = now
        self.count = 0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's event loop (``loop=``), with ``AcceptErrors`` as its exception handler."""
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(AcceptErrors())
    return loop
