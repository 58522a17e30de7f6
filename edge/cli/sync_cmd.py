"""``kiosk sync``: the sync daemon (``run``), one pass now (``now``) and the outbox's state.

``run`` is the systemd service: it drains the outbox into ``sync.cloud_url`` every
``sync.interval_s``, backs off with full jitter while the cloud is away, wakes at once on
SIGUSR1 and stops cleanly on SIGTERM or SIGINT. On a kiosk with a pinned roster key it
also pulls the roster at start, every ``sync.roster_interval_s`` and when woken, and
fetches the rentals the cloud closed (returned at another kiosk), even while its pushes
back off. An event the cloud cannot take holds back no other: a failing batch is narrowed
and the event quarantined after ``sync.quarantine_after`` failures alone (see
``cloud_sync.sync_pass``). ``now`` runs one pass in this process, then fetches the closed
rentals, and says what both did. ``status`` never needs the network: it reads the outbox
(with the last fetch of closed rentals) and the roster's pull state. What both print is
in ``sync_report``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from cloud_sync.closed_pull import read_fetch_state
from cloud_sync.config import shown_url
from cloud_sync.errors import CloudError, ConfigError, OutboxMissingError, RosterError
from cloud_sync.outbox import Outbox
from cloud_sync.signing import kiosk_key, public_key_text
from edge.cli.context import state
from edge.cli.signals import SignalRelay
from edge.cli.sync_report import (
    age_text,
    fetch_line,
    last_error_line,
    print_pass,
    problems,
    roster_line,
    roster_status,
    set_aside_line,
)
from edge.settings import Settings
from edge.vault.files import read_pull_state
from edge.vault.store import RosterStore

if TYPE_CHECKING:  # the HTTP stack loads only for the commands that talk to the cloud
    from cloud_sync.daemon import SyncDaemon

log = structlog.get_logger("edge.cli.sync")

app = typer.Typer(
    help="Run the sync daemon, sync now, or show the sync status.", no_args_is_help=True
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def open_outbox(settings: Settings) -> Outbox:
    return Outbox(settings.outbox_path, settings.kiosk.id, max_bytes=settings.outbox.max_bytes)


def open_cloud_roster(settings: Settings) -> RosterStore:
    """The kiosk's own roster, for deltas from the cloud; ``ConfigError`` without a pinned
    roster key, ``KeyFileError`` when the kiosk's keys are missing or too open."""
    from edge.vault.live import open_roster

    if not settings.roster.cloud_roster_key:
        raise ConfigError(
            "roster.cloud_roster_key is not set: pin the cloud's roster key "
            "(`kiosk-cloud keys init` prints it) to receive the roster"
        )
    return open_roster(
        settings.roster_path,
        settings.keys_dir,
        settings.kiosk.id,
        settings.roster.cloud_roster_key,
        erase_wait_s=settings.roster.erase_wait_s,
    )


def build_daemon(
    settings: Settings, outbox: Outbox, roster: RosterStore | None = None
) -> SyncDaemon:
    """The daemon for these settings; ``ConfigError`` when no cloud URL is set."""
    from cloud_sync.backoff import BackoffPolicy
    from cloud_sync.batching import BatchLimits
    from cloud_sync.client import CloudClient
    from cloud_sync.daemon import SyncDaemon
    from edge.cabinet.rentals import Ledger

    sync = settings.sync
    if sync.cloud_url is None:
        raise ConfigError(
            "sync.cloud_url is not set: set it in the settings file or KIOSK_SYNC__CLOUD_URL"
        )
    client = CloudClient(
        str(sync.cloud_url),
        settings.kiosk.id,
        kiosk_key(settings.kiosk.state_dir, sync.key_filename),
        timeout_s=sync.timeout_s,
        gzip_min_bytes=sync.gzip_min_bytes,
        ca_file=sync.ca_file,
        deadline_s=sync.request_deadline_s,
        roster_max_bytes=sync.roster_max_bytes,
    )
    return SyncDaemon(
        outbox,
        client,
        BatchLimits(sync.batch_max_events, sync.batch_max_bytes, sync.live_share),
        live_window_s=settings.outbox.live_window_s,
        interval_s=sync.interval_s,
        backoff=BackoffPolicy(sync.backoff_base_s, sync.backoff_max_s, sync.retry_after_max_s),
        keep_sent_s=settings.outbox.keep_sent_s,
        roster=roster,
        roster_interval_s=sync.roster_interval_s,
        close_rentals=Ledger(outbox).close_confirmed,  # returned at another kiosk
        quarantine_after=sync.quarantine_after,
    )


@app.command("run")
def run(ctx: typer.Context) -> None:
    """Run the sync daemon until stopped (the kiosk-sync systemd service)."""
    settings = state(ctx).settings()
    outbox = open_outbox(settings)
    roster = None
    if settings.roster.cloud_roster_key:
        try:
            roster = open_cloud_roster(settings)
        except RosterError as exc:  # events still flow; the roster waits for a fix
            log.error("roster.unavailable", error=str(exc))
    daemon = build_daemon(settings, outbox, roster)

    stop = _stop_within(daemon, settings.sync.stop_grace_s)
    relay = SignalRelay(
        {
            signal.SIGTERM: stop,
            signal.SIGINT: stop,
            signal.SIGUSR1: daemon.wake,  # sync now
        }
    )
    try:
        daemon.run()
    finally:
        relay.close()
        daemon.client.close()
        outbox.close()
        if roster is not None:
            roster.close()


def _stop_within(daemon: SyncDaemon, grace_s: float) -> Callable[[], None]:
    """The stop of ``kiosk sync run``: the daemon ends after its pass; a pass still waiting on
    the cloud ``grace_s`` later (an answer that drips, up to ``sync.request_deadline_s``)
    ends with the process, which a kill would do anyway: nothing is marked sent before the
    cloud's answer, and SQLite keeps every commit."""

    def forced() -> None:
        log.warning(
            "sync.stop_forced",
            waited_s=grace_s,
            detail="an exchange with the cloud was still running; its events stay pending",
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def stop() -> None:
        if daemon.stopping:
            return
        daemon.stop()
        timer = threading.Timer(grace_s, forced)
        timer.daemon = True
        timer.start()

    return stop


@app.command("now")
def now(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Send every pending event now, once, then close the rentals the cloud closed
    (returned at another kiosk); exit 7 if the cloud could not be reached for either, if
    an event failed alone (it stays pending) or if events were quarantined."""
    settings = state(ctx).settings()
    outbox = open_outbox(settings)
    try:
        daemon = build_daemon(settings, outbox)
        try:
            result = daemon.sync_once()
            closed = daemon.pull_closed()  # its own endpoint: tried even when the push failed
        finally:
            daemon.client.close()
        left = outbox.stats().pending_total
    finally:
        outbox.close()
    print_pass(result, closed, left, as_json)
    failures = []
    if result.error is not None:
        failures.append(f"sync failed: {result.error} (the events are kept)")
    if result.set_aside:
        failures.append(set_aside_line(result))
    if closed.error is not None:
        failures.append(
            f"closed rentals not fetched: {closed.error} "
            "(rentals returned at another kiosk stay open here)"
        )
    if failures:
        raise CloudError("; ".join(failures))


@app.command("status")
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the outbox: pending events per class, oldest age, quarantined events (money
    ones flagged) and events failing alone, last success and error, the roster's last pull
    and the last fetch of rentals closed in the cloud."""
    from edge.ops.outbox_read import open_outbox_read_only

    settings = state(ctx).settings()
    outbox = open_outbox_read_only(settings)
    try:
        stats = outbox.stats()
        quarantined = outbox.quarantined(limit=5)
        failing = outbox.failing(limit=5)
        fetched = read_fetch_state(outbox)
    finally:
        outbox.close()
    pulled = read_pull_state(settings.roster_path) if settings.roster.cloud_roster_key else None
    data: dict[str, Any] = {
        "kiosk_id": settings.kiosk.id,
        "cloud_url": shown_url(str(settings.sync.cloud_url)) if settings.sync.cloud_url else None,
        "pending": stats.pending,
        "pending_total": stats.pending_total,
        "oldest_pending_age_s": (
            None if stats.oldest_pending_age_s is None else round(stats.oldest_pending_age_s, 1)
        ),
        "sent_kept": stats.sent,
        "quarantined": stats.quarantined,
        "quarantined_money": stats.quarantined_money,
        "failing": stats.failing,
        "quarantine_after": settings.sync.quarantine_after,
        "dropped": stats.dropped,
        "bytes_used": stats.bytes_used,
        "max_bytes": stats.max_bytes,
        "last_seq": stats.last_seq,
        "last_success_at": stats.last_success_at,
        "last_error": stats.last_error,
        "last_error_at": stats.last_error_at,
        "roster": roster_status(pulled),
        "closed_rentals": {
            "cursor": fetched.cursor,
            "last_fetch_at": fetched.fetched_at,
            "closed": fetched.closed,
            "last_success_at": fetched.success_at,
            "last_error": fetched.error,
            "last_error_at": fetched.error_at,
        },
        "problems": problems(settings, stats, pulled, fetched),
        "quarantined_examples": [
            {"seq": q.seq, "id": q.id, "type": q.type, "money": q.money, "reason": q.reason}
            for q in quarantined
        ],
        "failing_examples": [
            {
                "seq": f.seq,
                "id": f.id,
                "type": f.type,
                "failures": f.failures,
                "last_failure": f.last_failure,
            }
            for f in failing
        ],
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    pending = ", ".join(f"{name} {count}" for name, count in stats.pending.items())
    lines = [
        f"kiosk        {data['kiosk_id']}",
        f"cloud        {data['cloud_url'] or '(not set)'}",
        f"pending      {stats.pending_total} ({pending})",
        f"oldest       {age_text(stats.oldest_pending_age_s)}",
        f"quarantined  {stats.quarantined}"
        + (f" ({stats.quarantined_money} money)" if stats.quarantined_money else ""),
        f"failing      {stats.failing} (sent alone; quarantined after "
        f"{settings.sync.quarantine_after} failures alone)",
        f"dropped      telemetry {stats.dropped['telemetry']}, ops {stats.dropped['ops']}",
        f"disk         {stats.bytes_used:,} of {stats.max_bytes:,} bytes",
        f"last success {stats.last_success_at or 'never'}",
        f"last error   {last_error_line(stats.last_error, stats.last_error_at)}",
        f"roster       {roster_line(settings, pulled)}",
        f"closed fetch {fetch_line(fetched)}",
    ]
    lines += [f"problem      {problem}" for problem in data["problems"]]
    lines += [
        f"  quarantined #{q['seq']} {q['type']}{' (money)' if q['money'] else ''}: {q['reason']}"
        for q in data["quarantined_examples"]
    ]
    lines += [
        f"  failing #{f['seq']} {f['type']}: {f['failures']} of "
        f"{settings.sync.quarantine_after} failures, last: {f['last_failure']}"
        for f in data["failing_examples"]
    ]
    typer.echo("\n".join(lines))


@app.command("key")
def key(
    ctx: typer.Context,
    box: Annotated[
        bool,
        typer.Option(
            "--box",
            help="Print the X25519 key the roster is wrapped for instead (created with the "
            "kiosk's key pair when missing).",
        ),
    ] = False,
) -> None:
    """Print this kiosk's public signing key (base64), to register it with the cloud."""
    settings = state(ctx).settings()
    if box:
        import base64

        from cloud_sync.sealing import raw_public
        from edge.vault.keys import device_keys

        keys = device_keys(settings.keys_dir, create=True)
        typer.echo(base64.b64encode(raw_public(keys.box.public_key())).decode())
        return
    typer.echo(public_key_text(kiosk_key(settings.kiosk.state_dir, settings.sync.key_filename)))


@app.command("requeue")
def requeue(
    ctx: typer.Context,
    seq: Annotated[
        list[int] | None,
        typer.Option(
            "--seq", help="Only this event (repeat for more); default: all.", min=1, max=2**63 - 1
        ),
    ] = None,
) -> None:
    """Send quarantined events again (after the cloud or the kiosk was fixed); their count
    of failures alone starts again from zero."""
    settings = state(ctx).settings()
    if not settings.outbox_path.is_file():  # nothing to send again: make no outbox for it
        raise OutboxMissingError(
            f"{settings.outbox_path}: no outbox yet (nothing was recorded here; "
            "`kiosk run` makes it)"
        )
    outbox = open_outbox(settings)
    try:
        count = outbox.requeue(seq or None)
    finally:
        outbox.close()
    typer.echo(
        f"{count} events back to pending at {datetime.now(UTC).isoformat(timespec='seconds')}"
    )
