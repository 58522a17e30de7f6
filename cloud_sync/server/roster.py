"""The roster in the cloud: sealed rider rows, tombstones, one global version, deltas.

Every rider row is sealed with the roster data key (AES-256-GCM, ``row_aad`` of its person
id, version and key id) before it is stored, so the database holds nothing personal in
clear: only person ids, versions, key ids and the encoder model names. A row's version is
the roster version at which it last changed; the roster version goes up by one with every
change (add, replace, delete, key rotation), under a lock on the one ``roster_state`` row,
so versions are assigned and committed in order on SQLite and on PostgreSQL alike.

A delta for a kiosk holds the rows changed since the version it names and the tombstones
of riders deleted since then. The sealed rows go out exactly as they are stored (their
associated data is what the kiosk checks), so serving a delta never decrypts anything;
the data key is wrapped for the kiosk's registered X25519 key and the whole delta is
signed with the roster signing key. A full snapshot replaces it when the kiosk holds
nothing yet, when the tombstones it would need were pruned, or when the data key was
rotated after its version. A kiosk that is up to date gets a signed statement saying so
instead. Both carry the nonce of the kiosk's request, so neither can be replayed later.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from cloud_sync.errors import IntegrityError, SigningKeyError
from cloud_sync.roster_wire import (
    Entitlements,
    FleetRow,
    RiderRecord,
    RiderTerms,
    SealedRow,
    build_current,
    build_delta,
    sign_current,
    sign_delta,
)
from cloud_sync.sealing import key_id, open_sealed, raw_public, row_aad, seal
from cloud_sync.server import auto_sets, erasure, rider_fleet, rider_terms
from cloud_sync.server.config import CloudSettings
from cloud_sync.server.db import Database, Tx
from cloud_sync.server.migrations import utc_text
from cloud_sync.server.models import RiderOut, RosterStatus
from cloud_sync.server.problems import Problem
from cloud_sync.server.rider_fleet import bump_roster
from cloud_sync.server.rider_terms import TermsChange
from cloud_sync.server.roster_keys import DataKey, RosterKeyFiles

_STATE = "SELECT version, key_id, key_version, tombstone_floor FROM roster_state WHERE id = 1"


@dataclass(frozen=True)
class RosterState:
    version: int = 0
    key_id: str | None = None
    key_version: int = 0
    tombstone_floor: int = 0


@dataclass(frozen=True)
class RiderSummary:
    """One rider as an operator lists it: never a template."""

    person_id: str
    version: int
    display_name: str
    entitlements: Entitlements
    templates: dict[str, int]
    has_claim: bool
    updated_at: str


@dataclass(frozen=True)
class Delta:
    """A kiosk's answer: the signed delta, or the signed statement that it is up to date."""

    version: int
    body: bytes
    up_to_date: bool = False
    full: bool = False
    upserts: int = 0
    deletions: int = 0
    terms: int = 0
    fleet: int = 0


@dataclass(frozen=True)
class Rotation:
    key_id: str
    version: int
    riders: int


def box_public_key(text: str) -> X25519PublicKey:
    """A kiosk's X25519 key from base64 of its 32 raw bytes; ``ValueError`` otherwise, and
    for a point of low order (see below)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("box public key is not base64") from None
    if len(raw) != 32:
        raise ValueError("box public key must be 32 bytes (X25519), base64-encoded")
    key = X25519PublicKey.from_public_bytes(raw)
    try:  # a low-order point: every agreement with it gives the same all-zero secret
        X25519PrivateKey.generate().exchange(key)
    except ValueError:
        raise ValueError(
            "box public key is a point of low order, which would let anyone read the "
            "roster's data key; use the key `kiosk sync key --box` prints"
        ) from None
    return key


def box_key_id(text: str) -> str:
    return key_id(raw_public(box_public_key(text)))


class CloudRoster:
    """The riders of one cloud and the deltas built from them."""

    def __init__(
        self, database: Database, keys: RosterKeyFiles, model: str, tombstone_keep_s: float
    ) -> None:
        self.db = database
        self.keys = keys
        self.model = model
        self.tombstone_keep_s = tombstone_keep_s

    # -- state ------------------------------------------------------------------------------

    def _read_state(self, tx: Tx, share: bool = False) -> RosterState:
        # FOR SHARE waits for a writer in progress and holds the next one off until this
        # transaction ends, so every later statement reads one consistent version.
        rows = tx.rows(_STATE + (" FOR SHARE" if share and tx.dialect == "postgres" else ""))
        return RosterState(*rows[0]) if rows else RosterState()

    def _bump(self, tx: Tx, now: datetime) -> RosterState:
        """The next roster version, holding the roster's write lock until commit."""
        bump_roster(tx, now)
        return self._read_state(tx)

    def _key(self, tx: Tx, state: RosterState) -> DataKey:
        """The data key the rows are sealed with (adopting the key file on first use)."""
        if state.key_id is not None:
            return self.keys.data_key(state.key_id)
        current = self.keys.data_key()
        tx.run("UPDATE roster_state SET key_id = ? WHERE id = 1", [current.key_id])
        return current

    def state(self) -> RosterState:
        with self.db.transaction() as tx:
            return self._read_state(tx)

    def counts(self) -> tuple[int, int]:
        """``(riders, tombstones)``."""
        with self.db.transaction() as tx:
            riders = tx.rows("SELECT COUNT(*) FROM roster_riders")[0][0]
            tombstones = tx.rows("SELECT COUNT(*) FROM roster_tombstones")[0][0]
        return int(riders), int(tombstones)

    # -- changes ----------------------------------------------------------------------------

    def add(
        self,
        person_id: str,
        record: RiderRecord,
        replace: bool = False,
        also: Callable[[Tx], None] | None = None,
    ) -> int:
        """Store a rider sealed (or replace them, when ``replace``); their new version.
        ``also`` runs in the same transaction (the consent record, the audit entry)."""
        plain = record.to_bytes()
        models = ",".join(sorted({template.model for template in record.templates}))
        now = datetime.now(UTC)
        with self.db.transaction() as tx:
            state = self._bump(tx, now)
            key = self._key(tx, state)
            exists = tx.rows("SELECT 1 FROM roster_riders WHERE person_id = ?", [person_id])
            if exists and not replace:
                raise Problem(
                    409, "rider_exists", f"rider {person_id!r} exists; replace it explicitly"
                )
            sealed = seal(key.material, plain, row_aad(person_id, state.version, key.key_id))
            tx.run(
                "INSERT INTO roster_riders (person_id, version, key_id, models, sealed, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (person_id) DO UPDATE SET version = excluded.version, "
                "key_id = excluded.key_id, models = excluded.models, sealed = excluded.sealed, "
                "updated_at = excluded.updated_at",
                [
                    person_id,
                    state.version,
                    key.key_id,
                    models,
                    base64.b64encode(sealed).decode(),
                    utc_text(now),
                    utc_text(now),
                ],
            )
            tx.run("DELETE FROM roster_tombstones WHERE person_id = ?", [person_id])
            if also is not None:
                also(tx)
        return state.version

    def amend(
        self,
        person_id: str,
        change: Callable[[Tx, RiderRecord], RiderRecord],
        now: datetime,
    ) -> int:
        """Change a rider's record from what is stored, in one transaction: ``change`` gets
        the stored record (with the terms in force) and returns the new one, or raises to
        change nothing. The new record keeps the terms in force: an operator's block set
        after the record is sealed into the new version, never dropped. The new version."""
        with self.db.transaction() as tx:
            state = self._bump(tx, now)
            key = self._key(tx, state)
            rows = tx.rows(
                "SELECT version, key_id, sealed FROM roster_riders WHERE person_id = ?",
                [person_id],
            )
            if not rows:
                raise Problem(404, "unknown_rider", f"no rider {person_id!r} in the roster")
            version, row_key, sealed = rows[0]
            record = RiderRecord.from_bytes(self._open(key, person_id, version, row_key, sealed))
            terms = rider_terms.effective(tx, key, person_id, int(version), record)
            record = replace(record, entitlements=terms.entitlements, claim_hash=terms.claim_hash)
            new = change(tx, record)
            models = ",".join(sorted({template.model for template in new.templates}))
            again = seal(
                key.material, new.to_bytes(), row_aad(person_id, state.version, key.key_id)
            )
            tx.run(
                "UPDATE roster_riders SET version = ?, key_id = ?, models = ?, sealed = ?, "
                "updated_at = ? WHERE person_id = ?",
                [
                    state.version,
                    key.key_id,
                    models,
                    base64.b64encode(again).decode(),
                    utc_text(now),
                    person_id,
                ],
            )
        return state.version

    def delete(
        self,
        person_id: str,
        also: Callable[[Tx], None] | None = None,
        reason: str = "operator",
    ) -> int:
        """Delete a rider, leaving a tombstone for the kiosks; the new roster version.
        ``also`` runs in the same transaction (a consent withdrawal, the audit entry);
        ``reason`` is kept with the deletion (``erasure``: operator, consent, retention)."""
        now = datetime.now(UTC)
        with self.db.transaction() as tx:
            version = self.delete_in(tx, person_id, now, reason)
            if also is not None:
                also(tx)
        return version

    def delete_in(self, tx: Tx, person_id: str, now: datetime, reason: str) -> int:
        """``delete`` inside the caller's transaction (the retention sweep's)."""
        state = self._bump(tx, now)
        if tx.run("DELETE FROM roster_riders WHERE person_id = ?", [person_id]) != 1:
            raise Problem(404, "unknown_rider", f"no rider {person_id!r} in the roster")
        tx.run("DELETE FROM rider_terms WHERE person_id = ?", [person_id])
        tx.run("DELETE FROM rider_fleet WHERE person_id = ?", [person_id])
        tx.run(
            "INSERT INTO roster_tombstones (person_id, version, deleted_at) VALUES (?, ?, ?) "
            "ON CONFLICT (person_id) DO UPDATE SET version = excluded.version, "
            "deleted_at = excluded.deleted_at",
            [person_id, state.version, utc_text(now)],
        )
        self._prune(tx, state, now)
        erasure.record_deletion(tx, person_id, state.version, now, reason)
        return state.version

    def _prune(self, tx: Tx, state: RosterState, now: datetime) -> None:
        """Forget tombstones older than the keep time; kiosks behind them get snapshots."""
        cutoff = utc_text(now - timedelta(seconds=self.tombstone_keep_s))
        newest = tx.rows(
            "SELECT MAX(version) FROM roster_tombstones WHERE deleted_at <= ?", [cutoff]
        )[0][0]
        if newest is None:
            return
        tx.run("DELETE FROM roster_tombstones WHERE deleted_at <= ?", [cutoff])
        tx.run(
            "UPDATE roster_state SET tombstone_floor = ? WHERE id = 1",
            [max(state.tombstone_floor, int(newest))],
        )

    def set_terms(
        self, person_id: str, change: TermsChange, also: Callable[[Tx], None] | None = None
    ) -> tuple[int, RiderTerms]:
        """Change a rider's entitlements or claim hash without their templates; the new
        roster version and the terms now in force. ``also`` runs in the same transaction
        (the audit entry)."""
        now = datetime.now(UTC)
        with self.db.transaction() as tx:
            state = self._bump(tx, now)
            key = self._key(tx, state)
            rows = tx.rows(
                "SELECT version, key_id, sealed FROM roster_riders WHERE person_id = ?",
                [person_id],
            )
            if not rows:
                raise Problem(404, "unknown_rider", f"no rider {person_id!r} in the roster")
            version, row_key, sealed = rows[0]
            record = RiderRecord.from_bytes(self._open(key, person_id, version, row_key, sealed))
            terms = change.applied(rider_terms.effective(tx, key, person_id, version, record))
            rider_terms.store(tx, key, person_id, state.version, terms, now)
            if also is not None:
                also(tx)
        return state.version, terms

    def rotate_key(self, also: Callable[[Tx], None] | None = None) -> Rotation:
        """Re-seal every row under a new data key; the old key file is then replaced.

        Every kiosk's next delta is a full snapshot under the new key, after which the
        kiosk forgets the old one too. ``also`` runs in the same transaction (revoking a
        kiosk: ``revocation``; the audit entry).
        """
        with self.keys.rotating():  # one rotation at a time (roster_keys)
            fresh = self.keys.stage_next()
            now = datetime.now(UTC)
            with self.db.transaction() as tx:
                state = self._bump(tx, now)
                old = self._key(tx, state)
                rows = tx.rows("SELECT person_id, version, key_id, sealed FROM roster_riders")
                updates = []
                for person_id, version, row_key, sealed in rows:
                    plain = self._open(old, person_id, version, row_key, sealed)
                    again = seal(fresh.material, plain, row_aad(person_id, version, fresh.key_id))
                    updates.append([fresh.key_id, base64.b64encode(again).decode(), person_id])
                tx.many(
                    "UPDATE roster_riders SET key_id = ?, sealed = ? WHERE person_id = ?", updates
                )
                rider_terms.reseal_all(tx, old, fresh)
                tx.run(
                    "UPDATE roster_state SET key_id = ?, key_version = ? WHERE id = 1",
                    [fresh.key_id, state.version],
                )
                if also is not None:
                    also(tx)
            # Committed: the database names the new key. A crash before this line is finished
            # by the next process that reads the keys (``RosterKeyFiles.data_key``).
            self.keys.promote_next()
        return Rotation(fresh.key_id, state.version, len(updates))

    @staticmethod
    def _open(key: DataKey, person_id: str, version: int, row_key: str, sealed: str) -> bytes:
        if row_key != key.key_id:
            raise SigningKeyError(
                f"rider row {person_id} is sealed with data key {row_key}, not {key.key_id}"
            )
        try:
            return open_sealed(
                key.material, base64.b64decode(sealed), row_aad(person_id, version, row_key)
            )
        except (IntegrityError, binascii.Error) as exc:
            raise SigningKeyError(f"rider row {person_id} does not open: {exc}") from None

    # -- reading ----------------------------------------------------------------------------

    def riders(self, after: str = "", limit: int | None = None) -> list[RiderSummary]:
        """Riders in id order after ``after``, decrypted for the operator (names and
        entitlements in force, no templates)."""
        return self._summaries(
            "person_id > ? ORDER BY person_id LIMIT ?", [after, 2**62 if limit is None else limit]
        )

    def rider(self, person_id: str) -> RiderSummary | None:
        """One rider as ``riders`` lists them, or None."""
        found = self._summaries("person_id = ?", [person_id])
        return found[0] if found else None

    def _summaries(self, where: str, args: list[Any]) -> list[RiderSummary]:
        with self.db.transaction() as tx:
            state = self._read_state(tx)
            rows = tx.rows(
                "SELECT person_id, version, key_id, sealed, updated_at FROM roster_riders "  # noqa: S608
                f"WHERE {where}",
                args,
            )
            if not rows:
                return []
            key = self.keys.data_key(state.key_id)
            newer = {row[0]: rider_terms.newer_terms(tx, key, row[0], int(row[1])) for row in rows}
        found = []
        for person_id, version, row_key, sealed, updated in rows:
            record = RiderRecord.from_bytes(self._open(key, person_id, version, row_key, sealed))
            terms = newer[person_id]
            if terms is not None:  # changed since the record: its terms are in force
                version = terms[0]
                record = replace(
                    record, entitlements=terms[1].entitlements, claim_hash=terms[1].claim_hash
                )
            per_model: dict[str, int] = {}
            for template in record.templates:
                per_model[template.model] = per_model.get(template.model, 0) + 1
            found.append(
                RiderSummary(
                    person_id,
                    int(version),
                    record.display_name,
                    record.entitlements,
                    per_model,
                    record.claim_hash is not None,
                    updated,
                )
            )
        return found

    def delta(self, kiosk_id: str, box_key: str, since: int, nonce: str) -> Delta:
        """The signed delta from ``since`` to now for one kiosk's box key, or the signed
        statement that ``since`` is current; either bound to the request's ``nonce``."""
        try:
            recipient = box_public_key(box_key)
        except ValueError as exc:  # stored before the check that now refuses it
            raise Problem(
                409,
                "no_box_key",
                f"the box public key registered for kiosk {kiosk_id!r} is unusable ({exc}); "
                "register the kiosk's box key again",
            ) from None
        with self.db.transaction() as tx:
            state = self._read_state(tx, share=True)
            if since > state.version:
                raise Problem(
                    409,
                    "roster_ahead",
                    f"the kiosk holds roster version {since} but the cloud is at "
                    f"{state.version}; clear the kiosk's roster to take the cloud's",
                )
            if since == state.version:
                current = build_current(kiosk_id, state.version, nonce)
                return Delta(state.version, sign_current(current, self.keys.signing), True)
            full = since == 0 or since < state.tombstone_floor or since < state.key_version
            rows: list[tuple[Any, ...]] = tx.rows(
                "SELECT person_id, version, key_id, sealed FROM roster_riders "
                "WHERE version > ? ORDER BY person_id",
                [0 if full else since],
            )
            key = self.keys.data_key(state.key_id)
            terms = rider_terms.rows_since(tx, 0 if full else since, key)
            auto_set = auto_sets.for_delta(tx, kiosk_id, 0 if full else since)
            fleet = [
                FleetRow(
                    person_id=person_id,
                    version=version,
                    open_rentals=held.open_rentals,
                    overdue=held.overdue,
                    lost=held.lost,
                )
                for person_id, version, held in rider_fleet.rows_since(tx, 0 if full else since)
            ]
            deletions = (
                []
                if full
                else [
                    row[0]
                    for row in tx.rows(
                        "SELECT person_id FROM roster_tombstones WHERE version > ? "
                        "ORDER BY person_id",
                        [since],
                    )
                ]
            )
        upserts = []
        for person_id, version, row_key, sealed in rows:
            if row_key != key.key_id:
                raise SigningKeyError(
                    f"rider row {person_id} is sealed with data key {row_key}, not {key.key_id}"
                )
            upserts.append(
                SealedRow(person_id=person_id, version=version, key_id=row_key, sealed=sealed)
            )
        body = build_delta(
            kiosk_id=kiosk_id,
            recipient=recipient,
            data_key=key.material,
            model=self.model,
            from_version=0 if full else since,
            to_version=state.version,
            deletions=deletions,
            full=full,
            nonce=nonce,
        )
        # The rows are shipped as stored, sealed under the same key and associated data.
        body = body.model_copy(
            update={
                "upserts": tuple(upserts),
                "terms": tuple(terms),
                "fleet": tuple(fleet),
                "auto_set": auto_set,
            }
        )
        signed = sign_delta(body, self.keys.signing)
        return Delta(
            state.version, signed, False, full, len(upserts), len(deletions), len(terms), len(fleet)
        )


def rider_out(rider: RiderSummary) -> RiderOut:
    rights = rider.entitlements
    return RiderOut(
        person_id=rider.person_id,
        version=rider.version,
        display_name=rider.display_name,
        may_rent=rights.may_rent,
        max_open_rentals=rights.max_open_rentals,
        boarding_allowed=rights.boarding_allowed,
        valid_until=rights.valid_until,
        templates=rider.templates,
        has_claim=rider.has_claim,
        updated_at=rider.updated_at,
    )


def roster_status(roster: CloudRoster) -> RosterStatus:
    state = roster.state()
    riders, tombstones = roster.counts()
    return RosterStatus(
        version=state.version,
        riders=riders,
        tombstones=tombstones,
        data_key_id=state.key_id,
        key_version=state.key_version,
        tombstone_floor=state.tombstone_floor,
        roster_public_key=roster.keys.public_key,
        model=roster.model,
    )


def open_cloud_roster(
    settings: CloudSettings, database: Database, create_keys: bool = True
) -> CloudRoster | None:
    """The roster of this cloud, or None when its key files are not configured.

    With SQLite missing key files are created (mode 0600) unless ``create_keys`` is
    false (a command that only reads); with PostgreSQL they must exist
    (``kiosk-cloud keys init`` once, then the same files on every replica).
    ``SigningKeyError`` names a file that is missing, unreadable or too open.
    """
    paths = settings.roster_key_paths
    if paths is None:
        return None
    keys = RosterKeyFiles(*paths)
    if create_keys and settings.roster_keys_created_on_start:
        keys.init()
    else:
        keys.load()
    return CloudRoster(database, keys, settings.roster_model, settings.roster_tombstone_keep_s)
