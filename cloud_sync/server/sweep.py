"""The rentals sweep: open rentals past their due time turn ``overdue``, then ``lost``.

One sweep is one transaction: rentals still ``open`` whose ``due_at`` has passed become
``overdue`` (``overdue_at`` is the sweep's time), and rentals ``open`` or ``overdue`` more
than ``lost_after`` past due become ``lost`` (``lost_at``); the powerbanks out on them
follow, and the riders whose rentals moved get their fleet state refreshed under a new
roster version, so every kiosk hears it at its next pull. A return still closes an overdue
or lost rental (``overdue_at`` and ``lost_at`` stay, as history).

Safe with several API replicas: on PostgreSQL the sweep first tries a transaction-scoped
advisory lock and, when another replica holds it, skips this round (``Sweep.ran`` is
false); on SQLite the transaction starts with ``BEGIN IMMEDIATE`` (one writer). Each API
process runs it every ``sweep_interval_s`` in a background thread (``Sweeper``) started
and stopped with the app; ``kiosk-cloud rentals sweep`` runs it once, e.g. from cron.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from cloud_sync.errors import StoreError
from cloud_sync.server import auto_sets, erasure, rider_fleet
from cloud_sync.server.config import CloudSettings
from cloud_sync.server.custody_replay import RENTED_STATE
from cloud_sync.server.db import Database, Tx
from cloud_sync.server.migrations import utc_text

if TYPE_CHECKING:
    from cloud_sync.server.roster import CloudRoster

log = structlog.get_logger("cloud_sync.server")
LOCK_KEY = "kiosk-cloud:rentals-sweep"
AUTO_SETS_LOCK = "kiosk-cloud:auto-sets"


@dataclass(frozen=True)
class Sweep:
    """What one sweep did; ``ran`` is false when another replica was sweeping."""

    ran: bool
    overdue: int = 0
    lost: int = 0
    riders: int = 0


def start_sweeper(
    settings: CloudSettings, database: Database, roster: CloudRoster | None = None
) -> Sweeper | None:
    """The background sweep of an API process, or None when ``sweep_interval_s`` is 0. It
    also runs the privacy sweep (``erasure.privacy_sweep``: pseudonyms that waited on open
    rentals, and retention when ``rider_retention_s`` is set)."""
    if settings.sweep_interval_s <= 0:
        return None
    keep = timedelta(seconds=settings.rider_retention_s) if settings.rider_retention_s else None
    return Sweeper(
        database,
        timedelta(seconds=settings.rental_due_s),
        timedelta(seconds=settings.rental_lost_after_s),
        settings.sweep_interval_s,
        privacy=lambda now: erasure.privacy_sweep(database, roster, keep, now),
        sets=lambda now: refresh_auto_sets(database, settings, now),
    ).start()


def refresh_auto_sets(database: Database, settings: CloudSettings, now: datetime) -> int:
    """Every kiosk's automatic set (``auto_sets``), one replica at a time; how many changed."""
    if settings.auto_set_size <= 0:
        return 0
    with database.transaction() as tx:
        if tx.dialect == "postgres":
            rows = tx.rows(
                "SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0))", [AUTO_SETS_LOCK]
            )
            if not rows[0][0]:
                return 0
        return auto_sets.refresh(tx, settings.auto_set_size, settings.auto_set_days, now)


def sweep(database: Database, due: timedelta, lost_after: timedelta, now: datetime) -> Sweep:
    """Mark the rentals overdue or lost as of ``now``, once, in one transaction."""
    with database.transaction() as tx:
        if not _try_lock(tx):
            return Sweep(ran=False)
        _fill_due(tx, due)
        now_text = utc_text(now)
        lost_before = utc_text(now - lost_after)
        candidates = tx.rows(
            "SELECT powerbank_id FROM rentals WHERE status IN ('open', 'overdue') AND due_at <= ?",
            [now_text],
        )
        if not candidates:
            return Sweep(ran=True)
        tx.lock_many(sorted({f"powerbank:{row[0]}" for row in candidates}))
        lost = tx.rows(
            "UPDATE rentals SET status = 'lost', lost_at = ?, "
            "overdue_at = COALESCE(overdue_at, ?) "
            "WHERE status IN ('open', 'overdue') AND due_at <= ? "
            "RETURNING kiosk_id, rental_id, person_id",
            [now_text, now_text, lost_before],
        )
        overdue = tx.rows(
            "UPDATE rentals SET status = 'overdue', overdue_at = ? "
            "WHERE status = 'open' AND due_at <= ? RETURNING kiosk_id, rental_id, person_id",
            [now_text, now_text],
        )
        for status, rows in (("lost", lost), ("overdue", overdue)):
            tx.many(
                "UPDATE powerbanks SET state = ?, updated_at = ? "
                "WHERE rental_kiosk_id = ? AND rental_id = ? AND state IN (?, ?, ?)",
                [
                    [RENTED_STATE[status], now_text, kiosk, rental, *RENTED_STATE.values()]
                    for kiosk, rental, _ in rows
                ],
            )
        riders = {str(row[2]) for row in (*lost, *overdue)}
        rider_fleet.refresh(tx, riders, now)
    return Sweep(ran=True, overdue=len(overdue), lost=len(lost), riders=len(riders))


def _try_lock(tx: Tx) -> bool:
    """PostgreSQL: this replica's turn, or None while another one sweeps. SQLite: the
    transaction already is the only writer."""
    if tx.dialect != "postgres":
        return True
    rows = tx.rows("SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0))", [LOCK_KEY])
    return bool(rows[0][0])


def _fill_due(tx: Tx, due: timedelta) -> None:
    """Give a due time to open rentals stored before rentals had one."""
    rows = tx.rows(
        "SELECT kiosk_id, rental_id, started_at FROM rentals "
        "WHERE due_at IS NULL AND status = 'open'"
    )
    tx.many(
        "UPDATE rentals SET due_at = ? WHERE kiosk_id = ? AND rental_id = ?",
        [[utc_text(_parse(started) + due), kiosk, rental] for kiosk, rental, started in rows],
    )


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)


class Sweeper:
    """The sweep every ``interval_s`` in a daemon thread, until ``stop``."""

    def __init__(
        self,
        database: Database,
        due: timedelta,
        lost_after: timedelta,
        interval_s: float,
        privacy: Callable[[datetime], erasure.PrivacySweep] | None = None,
        sets: Callable[[datetime], int] | None = None,
    ) -> None:
        self._args = (database, due, lost_after)
        self._privacy = privacy
        self._sets = sets
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rentals-sweep", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                done = sweep(*self._args, datetime.now(UTC))
            except StoreError as exc:  # the database is away: try again next round
                log.warning("rentals.sweep_failed", error=str(exc))
                continue
            except Exception:  # a defect: said in the log, and the thread lives on
                log.exception("rentals.sweep_crashed")
                continue
            if done.overdue or done.lost:
                log.info("rentals.swept", overdue=done.overdue, lost=done.lost, riders=done.riders)
            if self._privacy is not None:
                try:
                    kept = self._privacy(datetime.now(UTC))
                except StoreError as exc:
                    log.warning("privacy.sweep_failed", error=str(exc))
                    continue
                except Exception:
                    log.exception("privacy.sweep_crashed")
                    continue
                if kept.pseudonymised or kept.retired:
                    log.info(
                        "privacy.swept", pseudonymised=kept.pseudonymised, retired=len(kept.retired)
                    )
            if self._sets is not None:
                try:
                    changed = self._sets(datetime.now(UTC))
                except StoreError as exc:
                    log.warning("auto_sets.refresh_failed", error=str(exc))
                    continue
                except Exception:
                    log.exception("auto_sets.refresh_crashed")
                    continue
                if changed:
                    log.info("auto_sets.refreshed", kiosks=changed)
