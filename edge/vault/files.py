"""The roster file: its tables, opening it, and looking at it without writing.

Tables: ``riders`` (person id, version, data-key id, the models its templates use, and the
sealed record), ``data_keys`` (data keys wrapped for this kiosk's X25519 key) and ``meta``
(roster version, encoder model, source, when it changed, how the last pull went); from a
fleet's cloud also ``rider_terms`` (sealed terms), ``rider_fleet`` (rentals still out) and
``auto_set`` (the person ids this kiosk may recognise without a claim).
Nothing else is stored.

Commands that only look (``kiosk roster info``, ``kiosk status``, ``kiosk sync status``)
open the roster with ``open_read_only``: nothing is created, neither the file nor a
``-wal``/``-shm`` beside it (see ``cloud_sync.private_files.connect_read_only``), and a
file that is missing, empty or another database is said to be so by name.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from cloud_sync.private_files import connect_read_only, not_holding, open_private_db
from edge.vault import erasure
from edge.vault.errors import RosterMissingError, StoreError
from edge.vault.values import PullState

MISSING_ROSTER_FIX = (
    "enrol riders with `kiosk enroll`, or pull the cloud's roster with `kiosk roster pull`"
)

#: The tables (sqlite-utils column types): one sealed row per rider, the wrapped data keys,
#: and the roster's metadata. Only ``sealed`` and ``wrapped`` hold anything personal or
#: secret, and both are ciphertext.
TABLES: dict[str, tuple[dict[str, type], str]] = {
    "riders": (
        {"person_id": str, "version": int, "key_id": str, "models": str, "sealed": bytes},
        "person_id",
    ),
    "data_keys": ({"key_id": str, "wrapped": str, "added_at": float}, "key_id"),
    "meta": ({"key": str, "value": str}, "key"),
}


#: Tables a roster holds once it has taken a delta from a fleet's cloud (made when it is
#: opened for writing; a roster written before them reads as having none): riders' terms
#: changed without their records (sealed as they arrived) and riders' fleet state (their
#: rentals still out across the fleet: person id, rental ids and counts, nothing else).
FLEET_TABLES: dict[str, tuple[dict[str, type], str]] = {
    "rider_terms": (
        {"person_id": str, "version": int, "key_id": str, "sealed": bytes},
        "person_id",
    ),
    "rider_fleet": (
        {"person_id": str, "version": int, "open_rentals": str, "overdue": int, "lost": int},
        "person_id",
    ),
    "auto_set": ({"person_id": str}, "person_id"),
}


#: Consent records of riders enrolled on this kiosk (``kiosk enroll --consent``): which
#: consent text version the rider agreed to, when, through which channel and who took it;
#: the newest per rider. Nothing biometric; kept when the rider is deleted, as proof.
CONSENT_TABLES: dict[str, tuple[dict[str, type], str]] = {
    "consents": (
        {
            "person_id": str,
            "text_version": str,
            "given_at": str,
            "channel": str,
            "taken_by": str,
        },
        "person_id",
    ),
}


#: One rider's row, written as it will be read: sealed, with its id, version and key id.
INSERT_ROW = (
    "INSERT OR REPLACE INTO riders (person_id, version, key_id, models, sealed)"
    " VALUES (?, ?, ?, ?, ?)"
)


def create_tables(db: sqlite_utils.Database) -> None:
    """Create the roster's tables where they do not exist yet."""
    for name, (columns, pk) in {**TABLES, **FLEET_TABLES, **CONSENT_TABLES}.items():
        db.table(name).create(columns, pk=pk, not_null=set(columns), if_not_exists=True)


def record_consent(
    path: Path, person_id: str, version: str, channel: str, taken_by: str, given_at: str
) -> None:
    """Keep a rider's consent record in the roster at ``path`` (replacing an older one)."""
    db = open_db(path)
    try:
        db.execute(
            "INSERT OR REPLACE INTO consents (person_id, text_version, given_at, channel, "
            "taken_by) VALUES (?, ?, ?, ?, ?)",
            (person_id, version, given_at, channel, taken_by),
        )
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot record the consent ({exc})") from None
    finally:
        db.close()


def open_db(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """The roster at ``path``, set up as every connection to it must be and checked whole
    (``StoreError`` when damaged). Read-write creates the file and its tables (0600, WAL);
    ``read_only`` creates and writes nothing (see ``open_read_only``)."""
    try:
        if read_only:
            db = open_read_only(path)
        else:
            db = open_private_db(path, isolation_level=None, check_same_thread=False)
            refuse_foreign(db, path)
            db.execute("PRAGMA journal_mode=WAL")
        for pragma in (
            "synchronous=FULL",
            "secure_delete=ON",
            "temp_store=MEMORY",
            f"busy_timeout={erasure.BUSY_TIMEOUT_MS}",  # kiosk run, kiosk sync run
        ):
            db.execute(f"PRAGMA {pragma}")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StoreError(
                f"{path}: the roster database is damaged ({check[0] if check else 'no answer'})"
            )
        if not read_only:
            create_tables(sqlite_utils.Database(db))
    except (sqlite3.DatabaseError, OSError) as exc:
        raise StoreError(f"{path}: cannot open the roster database ({exc})") from None
    return db


def refuse_foreign(db: sqlite3.Connection, path: Path) -> None:
    """``StoreError`` (closing ``db``) when the file holds tables a roster does not have: an
    outbox or a slot database given as ``--roster`` is never written into."""
    rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    foreign = sorted(
        name
        for (name,) in rows
        if name not in {**TABLES, **FLEET_TABLES, **CONSENT_TABLES}
        and not name.startswith("sqlite_")
    )
    if foreign:
        db.close()
        raise StoreError(
            f"{path}: not a roster (another kind of database, with a {foreign[0]} table); "
            "nothing was written: give the roster's own path, or a new file"
        )


def check_roster_target(path: Path) -> None:
    """For a command that writes, before it makes a key: ``StoreError`` when the file at
    ``path`` exists but is not SQLite or is another kind of database. A missing or empty
    file is fine (it becomes a roster). Reads only."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    db = connect_read_only(path)
    try:
        refuse_foreign(db, path)
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{path}: not a roster (not an SQLite database: {exc}); nothing was written: "
            "give the roster's own path, or a new file"
        ) from None
    finally:
        db.close()


def open_read_only(path: Path) -> sqlite3.Connection:
    """An existing roster, for reading only; nothing is created (see ``connect_read_only``).

    ``RosterMissingError`` when there is no file, ``StoreError`` when it is not a roster.
    """
    try:
        why = not_holding(path, TABLES)
        if why is None:
            db = connect_read_only(path)
    except FileNotFoundError:
        raise RosterMissingError(f"{path}: no roster here ({MISSING_ROSTER_FIX})") from None
    if why is not None:
        raise StoreError(f"{path}: not a roster ({why}); move it aside, then {MISSING_ROSTER_FIX}")
    db.isolation_level = None
    return db


def check_roster_file(path: Path) -> None:
    """``RosterMissingError`` or ``StoreError`` unless ``path`` is a roster (read-only)."""
    open_read_only(path).close()


def holds_data_keys(path: Path) -> bool:
    """Whether the roster at ``path`` holds a wrapped data key (read without writing)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        db = connect_read_only(path)
        try:
            return db.execute("SELECT 1 FROM data_keys LIMIT 1").fetchone() is not None
        finally:
            db.close()
    except sqlite3.Error:
        return False


def read_pull_state(path: Path) -> PullState | None:
    """The pull state of the roster at ``path``, read without its keys; None if absent."""
    if not path.is_file():
        return None
    try:
        db = connect_read_only(path)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.Error:
        return None

    def number(key: str) -> float | None:
        return float(meta[key]) if meta.get(key) else None

    return PullState(
        version=int(meta.get("version", 0)),
        checked_at=number("pulled_at"),
        error=meta.get("pull_error") or None,
        error_at=number("pull_error_at") if meta.get("pull_error") else None,
    )
