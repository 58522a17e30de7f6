"""Serve an ASGI app from a background thread for as long as a block runs.

The rider page beside ``kiosk run`` and the loopback cloud API of ``kiosk demo`` both need
a uvicorn server that starts before the caller goes on, reports the port it really got
(``port = 0`` asks the system for a free one) and stops when the block ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from edge.errors import EdgeError


@contextmanager
def serve_in_thread(
    app: Any,
    host: str,
    port: int,
    name: str,
    start_timeout_s: float = 20.0,
    limit_concurrency: int | None = 64,
) -> Iterator[str]:
    """Serve ``app`` on ``host:port`` while the block runs; yields ``http://host:port/``.

    At most ``limit_concurrency`` connections at once (uvicorn answers more with 503 at
    once), so clients holding connections open cannot use up the kiosk's file handles.
    ``EdgeError`` names ``name`` and the address when the server cannot listen.
    """
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            limit_concurrency=limit_concurrency,
        )
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise EdgeError(f"the {name} cannot listen on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    try:
        yield f"http://{host}:{bound}/"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
