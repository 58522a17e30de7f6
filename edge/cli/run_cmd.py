"""``kiosk run``: the kiosk service (systemd's kiosk-edge.service)."""

from __future__ import annotations

import signal
from collections.abc import Callable

import structlog
import typer

from edge.cli.context import state
from edge.cli.signals import SignalRelay
from edge.runtime import systemd

log = structlog.get_logger("edge.run")


def run(ctx: typer.Context) -> None:
    """Run the kiosk: camera, face pipeline, rental flow, slot board, outbox, rider page."""
    from edge.ops.wiring import start_ops
    from edge.runtime.assemble import assemble, rider_page

    settings = state(ctx).settings()
    parts = assemble(settings)
    runtime = parts.runtime  # its board worker reads the slots' status at once

    def stop(name: str) -> Callable[[], None]:
        def action() -> None:
            log.info("kiosk.stopping", signal=name)
            runtime.stop()

        return action

    relay = SignalRelay({signal.SIGTERM: stop("SIGTERM"), signal.SIGINT: stop("SIGINT")})
    ops = start_ops(settings, runtime)  # runtime.json, MQTT: both return at once
    try:
        with rider_page(parts.hub, settings, runtime) as url:
            log.info("kiosk.running", rider_page=url, mode=settings.kiosk.mode)
            typer.echo(f"rider page: {url}", err=True)
            runtime.run(watchdog_s=systemd.watchdog_seconds())
    finally:
        ops.stop()
        parts.board.close()
        runtime.outbox.close()
        relay.close()
    log.info("kiosk.stopped")
