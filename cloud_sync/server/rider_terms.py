"""Riders' terms in the cloud: entitlements and claim hash, changed without the templates.

An operator blocking, unblocking or extending a rider (``kiosk-cloud riders set``,
``PATCH /v1/admin/riders/{id}``) and the rider's app setting a claim code
(``PUT /v1/riders/{id}/claim``) change the rider's terms only. The new terms are sealed
with the roster data key under their own associated data (``sealing.terms_aad``) and
stored in ``rider_terms`` at the next roster version; a kiosk's next delta carries them as
a small sealed row, with no template resent. Terms newer than the rider's record override
the record's entitlements and claim hash; a record stored later (the rider enrolled again)
overrides older terms. Deleting a rider deletes their terms.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from datetime import date, datetime

from cloud_sync.errors import IntegrityError, SigningKeyError
from cloud_sync.roster_wire import Entitlements, RiderRecord, RiderTerms, SealedRow
from cloud_sync.sealing import open_sealed, seal, terms_aad
from cloud_sync.server.db import Tx
from cloud_sync.server.migrations import utc_text
from cloud_sync.server.roster_keys import DataKey


@dataclass(frozen=True)
class TermsChange:
    """What to change; ``None`` leaves a term as it is."""

    may_rent: bool | None = None
    max_open_rentals: int | None = None
    boarding_allowed: bool | None = None
    valid_until: date | None = None
    clear_valid_until: bool = False
    claim_hash: str | None = None

    def applied(self, terms: RiderTerms) -> RiderTerms:
        rights = terms.entitlements
        rights = Entitlements(
            rights.may_rent if self.may_rent is None else self.may_rent,
            rights.max_open_rentals if self.max_open_rentals is None else self.max_open_rentals,
            rights.boarding_allowed if self.boarding_allowed is None else self.boarding_allowed,
            None
            if self.clear_valid_until
            else (rights.valid_until if self.valid_until is None else self.valid_until),
        )
        claim = terms.claim_hash if self.claim_hash is None else self.claim_hash
        return replace(terms, entitlements=rights, claim_hash=claim)

    @property
    def empty(self) -> bool:
        return self == TermsChange()


def open_terms(key: DataKey, person_id: str, version: int, row_key: str, sealed: str) -> RiderTerms:
    if row_key != key.key_id:
        raise SigningKeyError(
            f"terms of rider {person_id} are sealed with data key {row_key}, not {key.key_id}"
        )
    try:
        plain = open_sealed(
            key.material, base64.b64decode(sealed), terms_aad(person_id, version, row_key)
        )
    except (IntegrityError, binascii.Error) as exc:
        raise SigningKeyError(f"terms of rider {person_id} do not open: {exc}") from None
    return RiderTerms.from_bytes(plain)


def sealed_text(key: DataKey, person_id: str, version: int, terms: RiderTerms) -> str:
    blob = seal(key.material, terms.to_bytes(), terms_aad(person_id, version, key.key_id))
    return base64.b64encode(blob).decode()


def newer_terms(
    tx: Tx, key: DataKey, person_id: str, record_version: int
) -> tuple[int, RiderTerms] | None:
    """The rider's terms and their version when they are newer than the record."""
    rows = tx.rows(
        "SELECT version, key_id, sealed FROM rider_terms WHERE person_id = ?", [person_id]
    )
    if not rows or int(rows[0][0]) <= record_version:
        return None
    version, row_key, sealed = rows[0]
    return int(version), open_terms(key, person_id, int(version), row_key, sealed)


def effective(
    tx: Tx, key: DataKey, person_id: str, record_version: int, record: RiderRecord
) -> RiderTerms:
    """The terms in force: newer terms, or the record's own."""
    found = newer_terms(tx, key, person_id, record_version)
    return found[1] if found else RiderTerms(record.entitlements, record.claim_hash)


def store(
    tx: Tx, key: DataKey, person_id: str, version: int, terms: RiderTerms, now: datetime
) -> None:
    tx.run(
        "INSERT INTO rider_terms (person_id, version, key_id, sealed, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (person_id) DO UPDATE SET "
        "version = excluded.version, key_id = excluded.key_id, sealed = excluded.sealed, "
        "updated_at = excluded.updated_at",
        [
            person_id,
            version,
            key.key_id,
            sealed_text(key, person_id, version, terms),
            utc_text(now),
        ],
    )


def reseal_all(tx: Tx, old: DataKey, fresh: DataKey) -> int:
    """Re-seal every terms row under ``fresh`` (a data key rotation); how many."""
    updates = []
    for person_id, version, row_key, sealed in tx.rows(
        "SELECT person_id, version, key_id, sealed FROM rider_terms"
    ):
        terms = open_terms(old, person_id, int(version), row_key, sealed)
        text = sealed_text(fresh, person_id, int(version), terms)
        updates.append([fresh.key_id, text, person_id])
    if updates:
        tx.many("UPDATE rider_terms SET key_id = ?, sealed = ? WHERE person_id = ?", updates)
    return len(updates)


def rows_since(tx: Tx, since: int, key: DataKey) -> list[SealedRow]:
    """Terms rows stored after roster version ``since``, sealed as stored."""
    found = []
    for person_id, version, row_key, sealed in tx.rows(
        "SELECT person_id, version, key_id, sealed FROM rider_terms WHERE version > ? "
        "ORDER BY person_id",
        [since],
    ):
        if row_key != key.key_id:
            raise SigningKeyError(
                f"terms of rider {person_id} are sealed with data key {row_key}, not {key.key_id}"
            )
        found.append(SealedRow(person_id=person_id, version=version, key_id=row_key, sealed=sealed))
    return found
