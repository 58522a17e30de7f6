"""One schema for SQLite and PostgreSQL, as named, numbered migrations.

Each migration runs in its own transaction together with its row in
``schema_migrations``; several API processes starting at once are safe (PostgreSQL: an
advisory lock; SQLite: ``BEGIN IMMEDIATE``). Never edit a released migration: add one.
Times are stored as fixed-width UTC text (``2026-01-02T03:04:05.000000Z``), which sorts
the same in both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cloud_sync.server.db import Tx

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "kiosks, provisioning tokens, nonces, events, rentals, returns",
        """
        CREATE TABLE kiosks (
            kiosk_id TEXT PRIMARY KEY,
            public_key TEXT NOT NULL,
            site TEXT NOT NULL DEFAULT '',
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE provisioning_tokens (
            token_hash TEXT PRIMARY KEY,
            kiosk_id TEXT,
            site TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT,
            used_by TEXT
        );
        CREATE TABLE nonces (
            kiosk_id TEXT NOT NULL,
            nonce TEXT NOT NULL,
            seen_at BIGINT NOT NULL,
            PRIMARY KEY (kiosk_id, nonce)
        );
        CREATE INDEX nonces_seen ON nonces (seen_at);
        CREATE TABLE events (
            id TEXT PRIMARY KEY,
            kiosk_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            type TEXT NOT NULL,
            occurred_at TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            payload TEXT NOT NULL,
            digest TEXT NOT NULL,
            batch_id TEXT NOT NULL,
            received_at TEXT NOT NULL,
            UNIQUE (kiosk_id, seq)
        );
        CREATE INDEX events_type ON events (type, occurred_at);
        CREATE TABLE rentals (
            kiosk_id TEXT NOT NULL,
            rental_id TEXT NOT NULL,
            powerbank_id TEXT NOT NULL,
            person_id TEXT NOT NULL,
            slot INTEGER,
            started_at TEXT NOT NULL,
            start_event_id TEXT NOT NULL,
            status TEXT NOT NULL,
            returned_at TEXT,
            return_event_id TEXT,
            return_kiosk_id TEXT,
            PRIMARY KEY (kiosk_id, rental_id)
        );
        CREATE INDEX rentals_powerbank ON rentals (powerbank_id, started_at);
        CREATE INDEX rentals_status ON rentals (status, started_at);
        CREATE TABLE returns (
            event_id TEXT PRIMARY KEY,
            powerbank_id TEXT NOT NULL,
            kiosk_id TEXT NOT NULL,
            slot INTEGER NOT NULL,
            returned_at TEXT NOT NULL,
            rental_kiosk_id TEXT,
            rental_id TEXT,
            flag TEXT
        );
        CREATE INDEX returns_powerbank ON returns (powerbank_id, returned_at)
        """,
    ),
    (
        2,
        "kiosk box keys, the encrypted roster: riders, tombstones, roster state",
        """
        ALTER TABLE kiosks ADD COLUMN box_public_key TEXT;
        CREATE TABLE roster_state (
            id INTEGER PRIMARY KEY,
            version BIGINT NOT NULL,
            key_id TEXT,
            key_version BIGINT NOT NULL,
            tombstone_floor BIGINT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE roster_riders (
            person_id TEXT PRIMARY KEY,
            version BIGINT NOT NULL,
            key_id TEXT NOT NULL,
            models TEXT NOT NULL,
            sealed TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX roster_riders_version ON roster_riders (version);
        CREATE TABLE roster_tombstones (
            person_id TEXT PRIMARY KEY,
            version BIGINT NOT NULL,
            deleted_at TEXT NOT NULL
        );
        CREATE INDEX roster_tombstones_version ON roster_tombstones (version);
        CREATE INDEX roster_tombstones_deleted ON roster_tombstones (deleted_at)
        """,
    ),
    (
        3,
        "rentals: closed_seq, the order in which the cloud closed each kiosk's rentals",
        """
        ALTER TABLE rentals ADD COLUMN closed_seq BIGINT;
        UPDATE rentals SET closed_seq = (
            SELECT COUNT(*) FROM rentals AS earlier
            WHERE earlier.kiosk_id = rentals.kiosk_id AND earlier.status = 'closed'
            AND earlier.rental_id <= rentals.rental_id
        ) WHERE status = 'closed';
        CREATE UNIQUE INDEX rentals_closed ON rentals (kiosk_id, closed_seq)
        """,
    ),
    (
        4,
        "rate_limits: lockouts after wrong credentials and per-kiosk request counts",
        """
        CREATE TABLE rate_limits (
            bucket TEXT PRIMARY KEY,
            window_start BIGINT NOT NULL,
            hits INTEGER NOT NULL,
            blocked_until BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX rate_limits_window ON rate_limits (window_start)
        """,
    ),
    (
        5,
        "a fleet: due, overdue and lost rentals, powerbank custody, riders' terms and fleet "
        "state, kiosk status",
        """
        ALTER TABLE rentals ADD COLUMN due_at TEXT;
        ALTER TABLE rentals ADD COLUMN overdue_at TEXT;
        ALTER TABLE rentals ADD COLUMN lost_at TEXT;
        ALTER TABLE rentals ADD COLUMN review TEXT;
        CREATE INDEX rentals_person ON rentals (person_id, status);
        CREATE INDEX rentals_due ON rentals (status, due_at);
        CREATE TABLE powerbanks (
            powerbank_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            kiosk_id TEXT,
            slot INTEGER,
            rental_kiosk_id TEXT,
            rental_id TEXT,
            person_id TEXT,
            seen_at TEXT NOT NULL,
            event_id TEXT NOT NULL,
            health TEXT,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX powerbanks_state ON powerbanks (state);
        CREATE TABLE custody_flags (
            flag_id TEXT PRIMARY KEY,
            powerbank_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            event_ids TEXT NOT NULL,
            detail TEXT NOT NULL,
            flagged_at TEXT NOT NULL,
            resolved_at TEXT
        );
        CREATE INDEX custody_flags_powerbank ON custody_flags (powerbank_id, flagged_at);
        CREATE TABLE rider_terms (
            person_id TEXT PRIMARY KEY,
            version BIGINT NOT NULL,
            key_id TEXT NOT NULL,
            sealed TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX rider_terms_version ON rider_terms (version);
        CREATE TABLE rider_fleet (
            person_id TEXT PRIMARY KEY,
            version BIGINT NOT NULL,
            open_rentals TEXT NOT NULL,
            overdue INTEGER NOT NULL,
            lost INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX rider_fleet_version ON rider_fleet (version);
        CREATE TABLE kiosk_status (
            kiosk_id TEXT PRIMARY KEY,
            reported_at TEXT NOT NULL,
            received_at TEXT NOT NULL,
            event_id TEXT NOT NULL,
            status TEXT NOT NULL
        )
        """,
    ),
    (
        6,
        "custody_events: where each event saw a powerbank, and slots and kiosks out of service",
        """
        CREATE TABLE custody_events (
            event_id TEXT PRIMARY KEY,
            powerbank_id TEXT,
            kind TEXT NOT NULL,
            kiosk_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            slot INTEGER,
            occurred_at TEXT NOT NULL,
            rental_id TEXT,
            person_id TEXT,
            out_of_service INTEGER
        );
        CREATE INDEX custody_events_powerbank ON custody_events (powerbank_id, occurred_at);
        CREATE INDEX custody_events_place ON custody_events (kiosk_id, kind, occurred_at);
        INSERT INTO custody_events (event_id, powerbank_id, kind, kiosk_id, seq, slot,
            occurred_at, rental_id, person_id)
        SELECT r.start_event_id, r.powerbank_id, 'rented', r.kiosk_id, e.seq, r.slot,
            r.started_at, r.rental_id, r.person_id
        FROM rentals AS r JOIN events AS e ON e.id = r.start_event_id
        WHERE e.type = 'rental.started';
        INSERT INTO custody_events (event_id, powerbank_id, kind, kiosk_id, seq, slot,
            occurred_at)
        SELECT t.event_id, t.powerbank_id, 'returned', t.kiosk_id, e.seq, t.slot, t.returned_at
        FROM returns AS t JOIN events AS e ON e.id = t.event_id
        """,
    ),
    (
        7,
        "consent texts and riders' consent records, operators and their roles, the audit log",
        """
        CREATE TABLE consent_texts (
            version TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL,
            text TEXT NOT NULL,
            added_at TEXT NOT NULL,
            added_by TEXT NOT NULL
        );
        CREATE TABLE consents (
            consent_id TEXT PRIMARY KEY,
            person_id TEXT NOT NULL,
            text_version TEXT NOT NULL REFERENCES consent_texts (version),
            given_at TEXT NOT NULL,
            channel TEXT NOT NULL,
            taken_by TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            recorded_by TEXT NOT NULL,
            withdrawn_at TEXT,
            withdrawn_by TEXT
        );
        CREATE INDEX consents_person ON consents (person_id, recorded_at);
        CREATE TABLE operators (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            revoked_at TEXT,
            revoked_by TEXT
        );
        CREATE TABLE audit_log (
            entry_id TEXT PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL,
            request_id TEXT
        );
        CREATE INDEX audit_log_at ON audit_log (at);
        CREATE INDEX audit_log_actor ON audit_log (actor, at)
        """,
    ),
    (
        8,
        "erasure: deletions by rider hash, kiosks' receipts, pseudonyms waiting on open rentals, "
        "riders' last activity",
        """
        CREATE TABLE erasures (
            person_hash TEXT PRIMARY KEY,
            pseudonym TEXT NOT NULL,
            roster_version BIGINT NOT NULL,
            deleted_at TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE TABLE erasure_receipts (
            person_hash TEXT NOT NULL,
            kiosk_id TEXT NOT NULL,
            roster_version BIGINT NOT NULL,
            erased_at TEXT NOT NULL,
            event_id TEXT NOT NULL,
            PRIMARY KEY (person_hash, kiosk_id)
        );
        CREATE TABLE erasure_pending (
            person_id TEXT PRIMARY KEY,
            pseudonym TEXT NOT NULL,
            since TEXT NOT NULL
        );
        CREATE TABLE rider_activity (
            person_id TEXT PRIMARY KEY,
            last_active_at TEXT NOT NULL
        );
        CREATE INDEX rider_activity_last ON rider_activity (last_active_at)
        """,
    ),
    (
        9,
        "automatic sets: riders' home kiosks, each kiosk's set and its version",
        """
        CREATE TABLE rider_homes (
            person_id TEXT PRIMARY KEY,
            kiosk_id TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX rider_homes_kiosk ON rider_homes (kiosk_id);
        CREATE TABLE kiosk_auto_sets (
            kiosk_id TEXT NOT NULL,
            person_id TEXT NOT NULL,
            PRIMARY KEY (kiosk_id, person_id)
        );
        CREATE TABLE auto_set_versions (
            kiosk_id TEXT PRIMARY KEY,
            version BIGINT NOT NULL,
            digest TEXT NOT NULL,
            members INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX rentals_kiosk_started ON rentals (kiosk_id, started_at)
        """,
    ),
    (
        10,
        "learned templates: each template.proposed event's outcome (no template)",
        """
        CREATE TABLE template_learning (
            event_id TEXT PRIMARY KEY,
            kiosk_id TEXT NOT NULL,
            person_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL,
            roster_version BIGINT,
            decided_at TEXT NOT NULL
        );
        CREATE INDEX template_learning_person ON template_learning (person_id, decided_at)
        """,
    ),
    (
        11,
        "erased riders' home kiosks: deletion left them behind until now",
        """
        DELETE FROM rider_homes WHERE person_id NOT IN (SELECT person_id FROM roster_riders)
        """,
    ),
)

LATEST = MIGRATIONS[-1][0]


def utc_text(moment: datetime) -> str:
    """``2026-01-02T03:04:05.000000Z``: fixed width, so text order is time order."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return text + "Z"


def migrate(database: Any) -> list[int]:
    """Apply the migrations this database lacks; return the versions applied."""
    applied: list[int] = []
    with database.transaction() as tx:
        tx.lock("kiosk-cloud:migrations")
        tx.run(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
    for version, name, script in MIGRATIONS:
        with database.transaction() as tx:
            tx.lock("kiosk-cloud:migrations")
            if tx.rows("SELECT 1 FROM schema_migrations WHERE version = ?", [version]):
                continue
            _apply(tx, script)
            tx.run(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                [version, name, utc_text(datetime.now(UTC))],
            )
            applied.append(version)
    return applied


def _apply(tx: Tx, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            tx.run(statement)


def current_version(database: Any) -> int:
    with database.transaction() as tx:
        rows = tx.rows("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    return int(rows[0][0])
