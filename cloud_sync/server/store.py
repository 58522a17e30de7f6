"""What the cloud API keeps: the kiosk registry, provisioning tokens, nonces and events.

Every method is one transaction. Ingest is idempotent by event id: an event already
stored with the same content is reported as a duplicate; the same id or the same
``(kiosk_id, seq)`` with other content, one seq twice in a batch, and a second
``rental.started`` of one rental (in the batch or stored) are rejected, each event with its
reason, and the whole batch rolls back. A signed request's nonce is spent when it is
admitted (``record_nonce``, in the transaction that counts the request against the
kiosk's limit, ``ratelimit``), whatever happens to the request after: a replay is refused
by every replica and counts against nothing. On PostgreSQL the batches of one kiosk are
serialised by an advisory lock, so any number of API processes can share the database.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud_sync.events import Event, Rejection, RentalStarted
from cloud_sync.outbox_seq import conflict_reason
from cloud_sync.server import erasure, fleet_status, rider_fleet
from cloud_sync.server.closed import ClosedRental, number_closed
from cloud_sync.server.db import Database, Tx
from cloud_sync.server.migrations import utc_text
from cloud_sync.server.problems import Problem
from cloud_sync.server.reconcile import reconcile


@dataclass(frozen=True)
class IngestResult:
    accepted: list[str]
    duplicate: list[str]


@dataclass(frozen=True)
class KioskRecord:
    kiosk_id: str
    public_key: str
    site: str
    disabled: bool
    created_at: str
    box_public_key: str | None = None


EVENT_COLUMNS = (
    ("id", "text"),
    ("kiosk_id", "text"),
    ("seq", "bigint"),
    ("type", "text"),
    ("occurred_at", "text"),
    ("schema_version", "integer"),
    ("payload", "text"),
    ("digest", "text"),
    ("batch_id", "text"),
    ("received_at", "text"),
)


def _digest(event: Event) -> str:
    return hashlib.sha256(event.to_json().encode()).hexdigest()


def _highest_seq(tx: Any, kiosk_id: str) -> int:
    (row,) = tx.rows("SELECT COALESCE(MAX(seq), 0) FROM events WHERE kiosk_id = ?", [kiosk_id])
    return int(row[0])


def _started_rentals(where: str, args: list[Any]) -> tuple[str, list[Any]]:
    """The statement naming which of a kiosk's rentals a stored ``rental.started`` began,
    and its event: ``(rental_id, start_event_id)``. A row a ``rental.failed`` made before
    its start arrived has no powerbank yet; the start that follows may fill it."""
    return (
        "SELECT rental_id, start_event_id FROM rentals "  # noqa: S608
        f"WHERE kiosk_id = ? AND {where} AND powerbank_id <> ''",
        args,
    )


def _id_taken(event: Event, stored_kiosk: str, stored_seq: int) -> str:
    """Why an id stored with other content is refused: the kiosk's own event is named by
    its seq; another kiosk's is not described at all (a kiosk learns nothing about it)."""
    if stored_kiosk == event.kiosk_id:
        return f"id: {event.id} is already stored with other content (seq {stored_seq})"
    return f"id: {event.id} is already used by another event"


def _conflict(
    event: Event,
    batch_seqs: dict[int, str],
    batch_starts: dict[str, str],
    stored_starts: dict[str, str],
) -> str | None:
    """Why a new event conflicts with an earlier new event of its batch (its seq; a second
    ``rental.started`` of one rental) or with a stored start of its rental, or None, in
    which case the event is noted in ``batch_seqs`` and ``batch_starts``. A rental's
    ``rental.failed`` or return beside its start is no conflict: only a second start is."""
    first = batch_seqs.get(event.seq)
    if first is not None:
        return f"seq: {event.seq} appears twice in this batch (event {first} has it too)"
    if isinstance(event.payload, RentalStarted):
        rental = event.payload.rental_id
        stored = stored_starts.get(rental)
        if stored is not None and stored != event.id:
            return (
                f"payload.rental_id: rental {rental} is already started by event {stored}; "
                "a rental starts once"
            )
        if rental in batch_starts:
            return (
                f"payload.rental_id: rental {rental} is started twice in this batch "
                f"(event {batch_starts[rental]} starts it first)"
            )
        batch_starts[rental] = event.id
    batch_seqs[event.seq] = event.id
    return None


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now_text() -> str:
    return utc_text(datetime.now(UTC))


class Store:
    def __init__(self, database: Database, rental_due_s: float = 86400.0) -> None:
        self.db = database
        self.rental_due = timedelta(seconds=rental_due_s)

    # -- kiosks -----------------------------------------------------------------------------

    def register_kiosk(
        self, kiosk_id: str, public_key: str, site: str = "", box_public_key: str | None = None
    ) -> bool:
        """Register a kiosk or replace its keys and site; True when it is new. Without a
        ``box_public_key`` a registered kiosk keeps the box key it had."""
        now = _now_text()
        with self.db.transaction() as tx:
            exists = tx.rows("SELECT 1 FROM kiosks WHERE kiosk_id = ?", [kiosk_id])
            _upsert_kiosk(tx, kiosk_id, public_key, box_public_key, site, now)
        return not exists

    def kiosk(self, kiosk_id: str) -> KioskRecord | None:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT kiosk_id, public_key, site, disabled, created_at, box_public_key "
                "FROM kiosks WHERE kiosk_id = ?",
                [kiosk_id],
            )
        if not rows:
            return None
        kid, key, site, disabled, created, box = rows[0]
        return KioskRecord(kid, key, site, bool(disabled), created, box)

    def kiosks(self) -> list[KioskRecord]:
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT kiosk_id, public_key, site, disabled, created_at, box_public_key "
                "FROM kiosks ORDER BY kiosk_id"
            )
        return [KioskRecord(a, b, c, bool(d), e, f) for a, b, c, d, e, f in rows]

    def set_disabled(self, kiosk_id: str, disabled: bool) -> bool:
        with self.db.transaction() as tx:
            changed: int = tx.run(
                "UPDATE kiosks SET disabled = ?, updated_at = ? WHERE kiosk_id = ?",
                [int(disabled), _now_text(), kiosk_id],
            )
        return changed > 0

    # -- provisioning tokens --------------------------------------------------------------------

    def issue_token(
        self, ttl_s: float, kiosk_id: str | None = None, site: str = ""
    ) -> tuple[str, str]:
        """A new one-time token (shown once, stored hashed) and its expiry."""
        token = "kpt_" + secrets.token_urlsafe(24)
        now = datetime.now(UTC)
        expires = utc_text(now + timedelta(seconds=ttl_s))
        with self.db.transaction() as tx:
            tx.run(
                "INSERT INTO provisioning_tokens (token_hash, kiosk_id, site, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?)",
                [_hash_token(token), kiosk_id, site, utc_text(now), expires],
            )
        return token, expires

    def provision(
        self,
        token: str,
        kiosk_id: str,
        public_key: str,
        site: str | None,
        box_public_key: str | None = None,
    ) -> None:
        """Spend a one-time token to register ``kiosk_id`` with its public keys.

        The same request again (the spent token, the kiosk it registered and the very keys
        it registered) succeeds without changing anything: a kiosk whose first answer was
        lost can finish. Any other use of a spent token is refused.
        """
        now = _now_text()
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT kiosk_id, site, expires_at, used_at, used_by FROM provisioning_tokens "
                "WHERE token_hash = ?",
                [_hash_token(token)],
            )
            if not rows:
                raise Problem(401, "bad_token", "unknown provisioning token")
            bound, token_site, expires, used, used_by = rows[0]
            if used is not None:
                held = tx.rows(
                    "SELECT public_key, box_public_key, disabled FROM kiosks WHERE kiosk_id = ?",
                    [kiosk_id],
                )
                same = bool(held) and held[0][0] == public_key and not held[0][2]
                if box_public_key is not None and held:
                    same = same and held[0][1] == box_public_key
                if used_by == kiosk_id and same:
                    return
                raise Problem(401, "bad_token", "this provisioning token was already used")
            if expires <= now:
                raise Problem(401, "bad_token", "this provisioning token has expired")
            if bound is not None and bound != kiosk_id:
                raise Problem(403, "wrong_kiosk", f"this token is for kiosk {bound!r}")
            exists = tx.rows("SELECT disabled FROM kiosks WHERE kiosk_id = ?", [kiosk_id])
            if exists and exists[0][0]:
                raise revoked_kiosk(kiosk_id)
            if exists and bound is None:
                raise Problem(
                    409,
                    "kiosk_exists",
                    f"kiosk {kiosk_id!r} is registered; re-keying needs a token issued for it",
                )
            spent = tx.run(
                "UPDATE provisioning_tokens SET used_at = ?, used_by = ? "
                "WHERE token_hash = ? AND used_at IS NULL",
                [now, kiosk_id, _hash_token(token)],
            )
            if spent != 1:
                raise Problem(401, "bad_token", "this provisioning token was already used")
            _upsert_kiosk(
                tx,
                kiosk_id,
                public_key,
                box_public_key,
                site if site is not None else token_site,
                now,
            )

    # -- nonces ---------------------------------------------------------------------------------

    def use_nonce(self, kiosk_id: str, nonce: str) -> None:
        """Record a nonce on its own (a request that is not admitted: a revoked kiosk's)."""
        with self.db.transaction() as tx:
            record_nonce(tx, kiosk_id, nonce)

    def prune_nonces(self, older_than_s: float) -> int:
        with self.db.transaction() as tx:
            return tx.run("DELETE FROM nonces WHERE seen_at < ?", [int(time.time() - older_than_s)])

    # -- events ---------------------------------------------------------------------------------

    def ingest(self, kiosk_id: str, batch_id: str, events: list[Event]) -> IngestResult:
        """Store a validated batch once; ``Problem`` (and nothing stored) on any conflict.

        The request's nonce was spent when it was admitted (``record_nonce``)."""
        received = _now_text()
        digests = [_digest(event) for event in events]
        started = [e.payload.rental_id for e in events if isinstance(e.payload, RentalStarted)]
        with self.db.transaction() as tx:
            tx.lock(f"kiosk:{kiosk_id}")
            ids, id_args = tx.in_list("id", [event.id for event in events])
            seqs, seq_args = tx.in_list("seq", [event.seq for event in events])
            lookups: list[tuple[str, list[Any]]] = [
                (  # the same ids, or the same seqs of this kiosk
                    f"SELECT id, kiosk_id, seq, digest FROM events "  # noqa: S608
                    f"WHERE {ids} OR (kiosk_id = ? AND {seqs})",
                    [*id_args, kiosk_id, *seq_args],
                )
            ]
            if started:
                rental_ids, rental_args = tx.in_list("rental_id", started)
                lookups.append(_started_rentals(rental_ids, [kiosk_id, *rental_args]))
            found, *more = tx.rows_each(lookups)  # one round trip with the lock (PostgreSQL)
            by_id = {row[0]: row[1:] for row in found}
            by_seq = {row[2]: row[0] for row in found if row[1] == kiosk_id}
            starts: dict[str, str] = {row[0]: row[1] for row in more[0]} if more else {}
            batch_seqs: dict[int, str] = {}
            batch_starts: dict[str, str] = {}
            accepted: list[Event] = []
            duplicate: list[str] = []
            rejected: list[Rejection] = []
            rows: list[list[Any]] = []
            stored_max: int | None = None
            for index, (event, digest) in enumerate(zip(events, digests, strict=True)):
                stored = by_id.get(event.id)
                if stored is not None:
                    if tuple(stored) == (event.kiosk_id, event.seq, digest):
                        duplicate.append(event.id)
                    else:
                        reason = _id_taken(event, stored[0], stored[1])
                        rejected.append(Rejection(index=index, id=event.id, reason=reason))
                    continue
                if event.seq in by_seq:
                    if stored_max is None:  # the kiosk renumbers above it (outbox_seq)
                        stored_max = _highest_seq(tx, kiosk_id)
                    reason = conflict_reason(event.seq, kiosk_id, by_seq[event.seq], stored_max)
                    rejected.append(Rejection(index=index, id=event.id, reason=reason))
                    continue
                conflict = _conflict(event, batch_seqs, batch_starts, starts)
                if conflict is not None:
                    rejected.append(Rejection(index=index, id=event.id, reason=conflict))
                    continue
                accepted.append(event)
                rows.append(
                    [
                        event.id,
                        event.kiosk_id,
                        event.seq,
                        event.type,
                        utc_text(event.occurred_at),
                        event.schema_version,
                        event.payload.model_dump_json(),
                        digest,
                        batch_id,
                        received,
                    ]
                )
            if rejected:
                raise Problem(
                    422,
                    "rejected_events",
                    f"{len(rejected)} events conflict with stored ones or with each other; "
                    "nothing was stored",
                    rejected=rejected,
                )
            tx.insert_many("events", EVENT_COLUMNS, rows)
            reconcile(tx, accepted, self.rental_due)
            number_closed(tx, accepted)
            rider_fleet.refresh(tx, rider_fleet.touched_riders(tx, accepted), datetime.now(UTC))
            fleet_status.record(tx, accepted, received)
            erasure.on_ingest(tx, accepted, datetime.now(UTC))
        return IngestResult([event.id for event in accepted], duplicate)

    def events(
        self, kiosk_id: str | None = None, after_seq: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        where: str = "seq > ?"
        args: list[Any] = [after_seq]
        if kiosk_id is not None:
            where, args = "kiosk_id = ? AND seq > ?", [kiosk_id, after_seq]
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT id, kiosk_id, seq, type, occurred_at, schema_version, payload, "  # noqa: S608
                f"received_at FROM events WHERE {where} ORDER BY kiosk_id, seq LIMIT ?",
                [*args, limit],
            )
        keys = ("id", "kiosk_id", "seq", "type", "occurred_at", "schema", "payload", "received_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def count_events(self, kiosk_id: str | None = None) -> int:
        with self.db.transaction() as tx:
            if kiosk_id is None:
                rows = tx.rows("SELECT COUNT(*) FROM events")
            else:
                rows = tx.rows("SELECT COUNT(*) FROM events WHERE kiosk_id = ?", [kiosk_id])
        return int(rows[0][0])

    def rentals(self, status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT kiosk_id, rental_id, powerbank_id, person_id, slot, started_at, status, "  # noqa: S608
                "returned_at, return_kiosk_id, due_at, overdue_at, lost_at, review "
                f"FROM rentals {where} ORDER BY started_at, kiosk_id, rental_id LIMIT ?",
                [*args, limit],
            )
        keys = (
            "kiosk_id",
            "rental_id",
            "powerbank_id",
            "person_id",
            "slot",
            "started_at",
            "status",
            "returned_at",
            "return_kiosk_id",
            "due_at",
            "overdue_at",
            "lost_at",
            "review",
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def closed_rentals(self, kiosk_id: str, since: int, limit: int) -> list[ClosedRental]:
        """This kiosk's rentals the cloud closed after cursor ``since``, in closing order."""
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT closed_seq, rental_id, returned_at, return_kiosk_id FROM rentals "
                "WHERE kiosk_id = ? AND closed_seq > ? "
                "AND status IN ('closed', 'returned_unrecorded') "
                "ORDER BY closed_seq LIMIT ?",
                [kiosk_id, since, limit],
            )
        return [ClosedRental(int(seq), rid, at, by) for seq, rid, at, by in rows]

    def last_closed_seq(self, kiosk_id: str) -> int:
        with self.db.transaction() as tx:
            rows = tx.rows("SELECT MAX(closed_seq) FROM rentals WHERE kiosk_id = ?", [kiosk_id])
        return int(rows[0][0] or 0)

    def returns(self, flagged_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        where = "WHERE flag IS NOT NULL" if flagged_only else ""
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT event_id, powerbank_id, kiosk_id, slot, returned_at, rental_kiosk_id, "  # noqa: S608
                f"rental_id, flag FROM returns {where} ORDER BY returned_at LIMIT ?",
                [limit],
            )
        keys = (
            "event_id",
            "powerbank_id",
            "kiosk_id",
            "slot",
            "returned_at",
            "rental_kiosk_id",
            "rental_id",
            "flag",
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def ping(self) -> None:
        with self.db.transaction() as tx:
            tx.rows("SELECT 1")


def revoked_kiosk(kiosk_id: str) -> Problem:
    """A revoked kiosk stays revoked for every provisioning token, whoever issued it: only
    an administrator's ``kiosk-cloud register-kiosk`` takes it back."""
    return Problem(
        409,
        "kiosk_revoked",
        f"kiosk {kiosk_id!r} was revoked; a provisioning token does not bring it back "
        "(provision the board under a new kiosk id, or an administrator runs "
        "`kiosk-cloud register-kiosk`)",
    )


def _upsert_kiosk(
    tx: Any, kiosk_id: str, public_key: str, box_public_key: str | None, site: str, now: str
) -> None:
    tx.run(
        "INSERT INTO kiosks (kiosk_id, public_key, box_public_key, site, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kiosk_id) DO UPDATE SET "
        "public_key = excluded.public_key, site = excluded.site, "
        "box_public_key = COALESCE(excluded.box_public_key, kiosks.box_public_key), "
        "updated_at = excluded.updated_at, disabled = 0",
        [kiosk_id, public_key, box_public_key, site, now, now],
    )


def record_nonce(tx: Tx, kiosk_id: str, nonce: str) -> None:
    """Spend a request's nonce in ``tx``; ``401 replayed`` when it was spent before."""
    fresh = tx.run(
        "INSERT INTO nonces (kiosk_id, nonce, seen_at) VALUES (?, ?, ?) "
        "ON CONFLICT (kiosk_id, nonce) DO NOTHING",
        [kiosk_id, nonce, int(time.time())],
    )
    if fresh != 1:
        raise _replayed()


def _replayed() -> Problem:
    return Problem(401, "replayed", "this request's nonce was already used (a replay)")
