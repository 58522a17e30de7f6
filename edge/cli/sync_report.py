"""What ``kiosk sync now`` and ``kiosk sync status`` print: a pass's summary (events sent,
quarantined, failing alone; rentals closed elsewhere) and the status's lines and problems,
from plain values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from cloud_sync.closed_pull import ClosedPull, FetchState
from cloud_sync.outbox_schema import Stats
from edge.settings import Settings
from edge.vault.values import PullState

if TYPE_CHECKING:  # the HTTP stack loads only for the commands that talk to the cloud
    from cloud_sync.sync_pass import PassResult


def set_aside_line(result: PassResult) -> str:
    money = sum(event.money for event in result.set_aside)
    line = (
        f"{len(result.set_aside)} quarantined (the cloud would not take them; kept in the "
        "outbox: kiosk sync status shows why, kiosk sync requeue sends them again)"
    )
    if money:
        line += f"; {money} are money events the cloud has no record of: see docs/operations.md"
    return line


def print_pass(result: PassResult, closed: ClosedPull, left: int, as_json: bool) -> None:
    if as_json:
        data = {
            "accepted": result.accepted,
            "duplicate": result.duplicate,
            "quarantined": result.quarantined,
            "renumbered": result.renumbered,
            "batches": result.batches,
            "pending": left,
            "error": result.error,
            "seconds": round(result.seconds, 3),
            "quarantined_events": [
                {"seq": e.seq, "id": e.id, "type": e.type, "reason": e.reason}
                for e in result.set_aside
            ],
            "failing": [
                {
                    "seq": e.seq,
                    "id": e.id,
                    "type": e.type,
                    "reason": e.reason,
                    "counted": e.counted,
                    "failures": e.failures,
                }
                for e in result.held
            ],
            "closed_rentals": {
                "closed": closed.closed,
                "confirmed": closed.confirmed,
                "cursor": closed.to_cursor,
                "error": closed.error,
            },
        }
        typer.echo(json.dumps(data))
        return
    typer.echo(
        f"sent {result.sent} events ({result.accepted} new, {result.duplicate} already there) "
        f"in {result.batches} batches, {result.quarantined} quarantined, {left} still pending"
    )
    if result.renumbered:
        typer.echo(
            f"renumbered {result.renumbered} events past the cloud's highest seq "
            "(the cloud held their numbers for other events); ids kept, sent again"
        )
    for event in result.set_aside:
        typer.echo(f"quarantined #{event.seq} {event.type}: {event.reason}")
    for held in result.held:
        times = "time" if held.failures == 1 else "times"
        count = (
            f"failed alone {held.failures} {times} so far"
            if held.counted
            else "not counted: the cloud took nothing after it"
        )
        typer.echo(f"failing alone #{held.seq} {held.type} ({count}): {held.reason}")
    if closed.error is not None and not closed.confirmed:
        typer.echo("rentals returned at another kiosk: not fetched, the ledger is unchanged")
        return
    line = (
        f"closed {rentals(closed.closed)} returned at another kiosk "
        f"({closed.confirmed} confirmed by the cloud, cursor {closed.to_cursor})"
    )
    if closed.error is not None:
        line += ", then the fetch failed"
    typer.echo(line)


def rentals(count: int) -> str:
    return f"{count} rental" if count == 1 else f"{count} rentals"


def problems(
    settings: Settings, stats: Stats, pulled: PullState | None, fetched: FetchState
) -> list[str]:
    problems = []
    if settings.sync.cloud_url is None:
        problems.append("sync.cloud_url is not set: events are kept but never sent")
    if stats.quarantined_money:
        problems.append(
            f"WARNING: {stats.quarantined_money} money events (rentals, returns, ejects) are "
            "quarantined: the cloud has no record of them; fix the cause, then "
            "kiosk sync requeue (docs/operations.md, quarantined events)"
        )
    if stats.failing:
        problems.append(
            f"{stats.failing} events fail alone while the cloud takes others; quarantined after "
            f"{settings.sync.quarantine_after} failures"
        )
    if stats.last_error:
        problems.append(stats.last_error)
    if pulled is not None and pulled.error:
        problems.append(f"roster pull: {pulled.error} (the previous roster is kept)")
    if fetched.error:
        problems.append(
            f"closed rentals fetch: {fetched.error} "
            "(rentals returned at another kiosk stay open here)"
        )
    return problems


def when(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def roster_status(pulled: PullState | None) -> dict[str, Any] | None:
    if pulled is None:
        return None
    return {
        "version": pulled.version,
        "last_pull_at": when(pulled.checked_at),
        "last_error": pulled.error,
        "last_error_at": when(pulled.error_at),
    }


def roster_line(settings: Settings, pulled: PullState | None) -> str:
    if not settings.roster.cloud_roster_key:
        return "not pulled (roster.cloud_roster_key is not pinned)"
    if pulled is None:
        return "not pulled yet"
    line = f"version {pulled.version}, last pull {when(pulled.checked_at) or 'never'}"
    if pulled.error:
        line += f", error: {pulled.error} (at {when(pulled.error_at)})"
    return line


def fetch_line(fetched: FetchState) -> str:
    """The last fetch of rentals closed in the cloud (returned at another kiosk)."""
    if fetched.fetched_at is None:
        return "never (rentals returned at another kiosk)"
    line = f"{fetched.fetched_at}: {rentals(fetched.closed)} closed, cursor {fetched.cursor}"
    if fetched.error:
        line += f", error: {fetched.error} (last success {fetched.success_at or 'never'})"
    return line


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def last_error_line(error: str | None, when: str | None) -> str:
    if not error:
        return "none"
    return f"{error} (at {when})" if when else error
