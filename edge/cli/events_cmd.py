"""``kiosk events tail | export``: the events in the outbox, for people and for scripts.

``tail`` prints the last events (``--follow`` keeps printing new ones); ``export`` writes
every event in a time range as JSON lines or CSV, with a progress bar on a terminal.
Each JSON line is the event as stored (id, kiosk_id, seq, type, occurred_at, schema,
payload) with its outbox ``state`` added.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from cloud_sync.errors import InputError
from cloud_sync.outbox import Outbox
from edge.cli.context import state
from edge.cli.output_paths import check_output
from edge.cli.progress import bar
from edge.ops import event_log
from edge.ops.outbox_read import open_outbox_read_only
from edge.settings import Settings

app = typer.Typer(help="Tail or export the events in the outbox.", no_args_is_help=True)


def _open(settings: Settings) -> Outbox:
    """The outbox, read-only: a missing one is an error, never created here."""
    return open_outbox_read_only(settings)


def _line(event: dict[str, Any]) -> str:
    payload = event.get("payload", {})
    shown = " ".join(f"{key}={value}" for key, value in payload.items() if value is not None)
    when = str(event.get("occurred_at", ""))[:19].replace("T", " ")
    return f"{event.get('seq', '?'):>7} {when} {event.get('state', ''):<11} {event.get('type', '')} {shown}"


@app.command("tail")
def tail(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("-n", "--lines", min=1, max=100_000, help="How many.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one event each.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, max=60, help="--follow: seconds between looks.")
    ] = 1.0,
) -> None:
    """The last events (oldest first); --follow keeps printing new ones until Ctrl-C."""
    settings = state(ctx).settings()
    outbox = _open(settings)
    show = (lambda e: json.dumps(e, separators=(",", ":"))) if as_json else _line
    try:
        events = event_log.tail(outbox, count)
        last = int(events[-1]["seq"]) if events else 0
        for event in events:
            typer.echo(show(event))
        while follow:
            sys.stdout.flush()
            time.sleep(interval)
            for event in event_log.after(outbox, last):
                typer.echo(show(event))
                last = int(event["seq"])
    except KeyboardInterrupt:
        pass
    finally:
        outbox.close()


@app.command("export")
def export(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", help="From (2025-06-01, 2025-06-01T08:00, 24h, 7d).")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Until, not included.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
) -> None:
    """Every event that occurred in [--since, --until), as JSON lines or CSV."""
    if fmt not in ("jsonl", "csv"):
        raise InputError("--format must be jsonl or csv")
    low = event_log.parse_when(since) if since else None
    high = event_log.parse_when(until) if until else None
    if low and high and low >= high:
        raise InputError("--since must be before --until")
    settings = state(ctx).settings()
    if output is not None:
        check_output(output, (settings.kiosk.state_dir, settings.keys_dir), "--output")
    outbox = _open(settings)
    try:
        total = event_log.count_between(outbox, low, high)
        if output is None:
            written = _write(outbox, low, high, fmt, sys.stdout, total)
        else:
            try:
                with output.open("w", encoding="utf-8", newline="") as handle:
                    written = _write(outbox, low, high, fmt, handle, total)
            except OSError as exc:
                raise InputError(f"{output}: cannot write ({exc.strerror})") from None
    finally:
        outbox.close()
    print(f"kiosk: exported {written} events", file=sys.stderr)


def _write(outbox: Outbox, low: Any, high: Any, fmt: str, handle: TextIO, total: int) -> int:
    writer = csv.writer(handle) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(event_log.CSV_COLUMNS)
    progress = bar("exporting", total, min_total=1000)
    written = 0
    with progress:
        task = progress.add_task("export", total=total)
        for event in event_log.between(outbox, low, high):
            if writer is not None:
                writer.writerow(event_log.csv_row(event))
            else:
                handle.write(json.dumps(event, separators=(",", ":")) + "\n")
            written += 1
            if written % 200 == 0:
                progress.update(task, completed=written)
        progress.update(task, completed=written)
    return written
