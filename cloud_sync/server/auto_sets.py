"""Each kiosk's automatic set: the riders it may recognise without a claim.

The face policy decides automatically only up to the roster size it was calibrated for
(about 400 riders); past that every rider confirms a claim. A city's rider base is larger,
but the riders who walk up to one kiosk are few: the cloud chooses, for each kiosk, the
riders most likely there, and the kiosk decides automatically among those only; everyone
else still rents through the claim step (code and face, 1:few over the whole roster).

The set of kiosk K, at most ``auto_set_size`` riders still in the roster, in this order:

1. riders whose home kiosk is K (set by an operator or the riders' app);
2. riders who started or returned a rental at K within ``auto_set_days``, most recent first;
3. riders active at other kiosks of K's site in that window, most recent first.

``refresh`` recomputes every kiosk's set (the sweep runs it) and stores a set that changed
under a new roster version, so the kiosk's next delta carries its new membership: a list
of person ids, never a template. Setting ``auto_set_size`` to 0 turns sets off: deltas carry
none and kiosks decide over the whole roster, as before.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from cloud_sync.server.db import Tx
from cloud_sync.server.migrations import utc_text
from cloud_sync.server.rider_fleet import bump_roster


def set_home(tx: Tx, person_id: str, kiosk_id: str | None, now: datetime) -> None:
    """The rider's home kiosk (None: none)."""
    if kiosk_id is None:
        tx.run("DELETE FROM rider_homes WHERE person_id = ?", [person_id])
        return
    tx.run(
        "INSERT INTO rider_homes (person_id, kiosk_id, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (person_id) DO UPDATE SET kiosk_id = excluded.kiosk_id, "
        "updated_at = excluded.updated_at",
        [person_id, kiosk_id, utc_text(now)],
    )


def compute(tx: Tx, kiosk_id: str, site: str, size: int, since: datetime) -> list[str]:
    """The set of ``kiosk_id`` (see the module docstring), in person id order."""
    chosen: list[str] = []
    seen: set[str] = set()

    def take(rows: list[tuple[object, ...]]) -> None:
        for row in rows:
            person = str(row[0])
            if person not in seen and len(chosen) < size:
                seen.add(person)
                chosen.append(person)

    in_roster = "person_id IN (SELECT person_id FROM roster_riders)"
    take(
        tx.rows(
            f"SELECT person_id FROM rider_homes WHERE kiosk_id = ? AND {in_roster} "  # noqa: S608
            "ORDER BY updated_at DESC, person_id",
            [kiosk_id],
        )
    )
    after = utc_text(since)
    for kiosks in ("= ?", "IN (SELECT kiosk_id FROM kiosks WHERE site = ? AND site <> '')"):
        where = kiosk_id if kiosks == "= ?" else site
        if len(chosen) >= size or (kiosks != "= ?" and not site):
            break
        take(
            tx.rows(
                "SELECT person_id, MAX(at) AS latest FROM ("  # noqa: S608 (fixed text)
                f"SELECT person_id, started_at AS at FROM rentals WHERE kiosk_id {kiosks} "
                "AND started_at >= ? UNION ALL "
                f"SELECT person_id, returned_at AS at FROM rentals WHERE return_kiosk_id {kiosks} "
                f"AND returned_at >= ?) AS seen WHERE {in_roster} "
                "GROUP BY person_id ORDER BY latest DESC, person_id",
                [where, after, where, after],
            )
        )
    return sorted(chosen)


def refresh(tx: Tx, size: int, days: float, now: datetime) -> int:
    """Recompute every kiosk's set; store the ones that changed under one new roster
    version. How many changed."""
    if size <= 0:
        return 0
    since = now - timedelta(days=days)
    changed: list[tuple[str, list[str], str]] = []
    for kiosk_id, site in tx.rows("SELECT kiosk_id, site FROM kiosks WHERE disabled = 0"):
        members = compute(tx, str(kiosk_id), str(site or ""), size, since)
        digest = hashlib.sha256("\n".join(members).encode()).hexdigest()
        held = tx.rows("SELECT digest FROM auto_set_versions WHERE kiosk_id = ?", [kiosk_id])
        if held and held[0][0] == digest:
            continue
        changed.append((str(kiosk_id), members, digest))
    if not changed:
        return 0
    version = bump_roster(tx, now)
    for kiosk_id, members, digest in changed:
        tx.run("DELETE FROM kiosk_auto_sets WHERE kiosk_id = ?", [kiosk_id])
        tx.many(
            "INSERT INTO kiosk_auto_sets (kiosk_id, person_id) VALUES (?, ?)",
            [[kiosk_id, person] for person in members],
        )
        tx.run(
            "INSERT INTO auto_set_versions (kiosk_id, version, digest, members, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kiosk_id) DO UPDATE SET "
            "version = excluded.version, digest = excluded.digest, "
            "members = excluded.members, updated_at = excluded.updated_at",
            [kiosk_id, version, digest, len(members), utc_text(now)],
        )
    return len(changed)


def for_delta(tx: Tx, kiosk_id: str, since: int) -> tuple[str, ...] | None:
    """The kiosk's set when it changed after roster version ``since`` (0: whenever it has
    one); None when the kiosk has no newer set."""
    rows = tx.rows("SELECT version FROM auto_set_versions WHERE kiosk_id = ?", [kiosk_id])
    if not rows or int(rows[0][0]) <= since:
        return None
    members = tx.rows(
        "SELECT person_id FROM kiosk_auto_sets WHERE kiosk_id = ? ORDER BY person_id",
        [kiosk_id],
    )
    return tuple(str(row[0]) for row in members)
