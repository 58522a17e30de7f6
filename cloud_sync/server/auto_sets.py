"""Each kiosk's automatic set: the riders it may recognise without a claim.

The face policy decides automatically only up to the roster size it was calibrated for
(about 400 riders); past that every rider confirms a claim. A city's rider base is larger,
but the riders who walk up to one kiosk are few: the cloud chooses, for each kiosk, the
riders most likely there, and the kiosk decides automatically among those only; everyone
else still rents through the claim step (code and face, 1:few over the whole roster).

The set of kiosk K holds at most ``auto_set_size`` riders still in the roster, chosen by
the rule in ``cloud_sync.auto_set_rule`` (home kiosk; the riders whose usual kiosk K is,
over the rentals of the last ``auto_set_days``; K's regulars; riders usual at K's site).
``refresh`` recomputes every kiosk's set (the sweep runs it) and stores a set that changed
under a new roster version, so the kiosk's next delta carries its new membership: a list
of person ids, never a template. Setting ``auto_set_size`` to 0 turns sets off: deltas
carry none and kiosks decide over the whole roster, as before.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from cloud_sync.auto_set_rule import Seen, sets
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


def visits(tx: Tx, since: datetime) -> dict[str, dict[str, Seen]]:
    """Per rider still in the roster: per kiosk, what they did there since ``since``."""
    after = utc_text(since)
    rows = tx.rows(
        "SELECT person_id, kiosk, COUNT(*), MAX(at) FROM ("
        "SELECT person_id, kiosk_id AS kiosk, started_at AS at FROM rentals "
        "WHERE started_at >= ? UNION ALL "
        "SELECT person_id, return_kiosk_id AS kiosk, returned_at AS at FROM rentals "
        "WHERE returned_at >= ? AND return_kiosk_id IS NOT NULL) AS seen "
        "WHERE person_id IN (SELECT person_id FROM roster_riders) GROUP BY person_id, kiosk",
        [after, after],
    )
    found: dict[str, dict[str, Seen]] = {}
    for person, kiosk, count, latest in rows:
        found.setdefault(str(person), {})[str(kiosk)] = Seen(int(str(count)), str(latest))
    return found


def _sets(
    tx: Tx, size: int, kiosks: list[tuple[str, str]], seen: dict[str, dict[str, Seen]]
) -> dict[str, list[str]]:
    """The set of each of ``kiosks`` (id, site) by the rule of ``cloud_sync.auto_set_rule``."""
    in_roster = "person_id IN (SELECT person_id FROM roster_riders)"
    homes: dict[str, list[str]] = {}
    for person, kiosk in tx.rows(
        f"SELECT person_id, kiosk_id FROM rider_homes WHERE {in_roster} "  # noqa: S608
        "ORDER BY updated_at DESC, person_id"
    ):
        homes.setdefault(str(kiosk), []).append(str(person))
    sites: dict[str, set[str]] = {}
    for kiosk, site in tx.rows("SELECT kiosk_id, site FROM kiosks WHERE site <> ''"):
        sites.setdefault(str(site), set()).add(str(kiosk))
    mates = {kiosk: (sites.get(site, set()) - {kiosk}) if site else set() for kiosk, site in kiosks}
    return sets(mates, homes, seen, size)


def refresh(tx: Tx, size: int, days: float, now: datetime) -> int:
    """Recompute every kiosk's set; store the ones that changed under one new roster
    version. How many changed."""
    if size <= 0:
        return 0
    since = now - timedelta(days=days)
    changed: list[tuple[str, list[str], str]] = []
    kiosks = [
        (str(kiosk_id), str(site or ""))
        for kiosk_id, site in tx.rows("SELECT kiosk_id, site FROM kiosks WHERE disabled = 0")
    ]
    for kiosk_id, members in _sets(tx, size, kiosks, visits(tx, since)).items():
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
