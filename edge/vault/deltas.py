"""Checking a signed roster answer from the cloud, and opening its rows, before any write.

Pure: values in, values out; the store (``RosterStore.apply_answer``, ``apply_delta``)
writes what ``open_delta`` returns in one transaction, or nothing. The checks run in the
order ``docs/roster.md`` gives: the signature with the pinned roster key, the recipient
kiosk and key, the encoder model, a version newer than the one held, a partial delta that
starts at the version held, the nonce of the request it answers; then the wrapped data key
must unwrap and every sealed row must open. A signed "up to date" statement is accepted
only as the answer to the very request it names, and so is a signed order to wipe the
roster (the kiosk was revoked): for this kiosk, for this request's nonce, or refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloud_sync.errors import DeltaError, IntegrityError, VersionGapError
from cloud_sync.roster_wire import (
    CurrentBody,
    DeltaBody,
    RiderRecord,
    RiderTerms,
    SealedRow,
    WipeBody,
    verify_answer,
)
from cloud_sync.sealing import WrappedKey, open_sealed, row_aad, terms_aad, unwrap_key
from edge.vault.errors import StoreError
from edge.vault.verify import KeyOf


@dataclass(frozen=True)
class Recipient:
    """Whom an answer must be for: this kiosk, its X25519 key, the encoder model it runs,
    and the cloud's roster key pinned at provisioning (None: nothing from the cloud)."""

    kiosk_id: str
    box_key_id: str
    model: str
    roster_public: Ed25519PublicKey | None


#: A row as the store writes it: person id, version, data-key id, models, sealed bytes.
Row = tuple[str, int, str, str, bytes]
#: A terms row as the store writes it: person id, version, data-key id, sealed bytes.
TermsRow = tuple[str, int, str, bytes]
#: A fleet row as the store writes it: person id, version, open rentals (JSON), overdue, lost.
FleetRow = tuple[str, int, str, int, int]


@dataclass(frozen=True)
class OpenedDelta:
    """A checked delta whose data key unwrapped and whose every row opened."""

    body: DeltaBody
    rows: tuple[Row, ...]
    new_key: tuple[WrappedKey, bytes] | None  # the data key it brings (wrapped, opened)
    terms: tuple[TermsRow, ...] = ()
    fleet: tuple[FleetRow, ...] = ()

    def __repr__(self) -> str:  # never print a key
        return f"OpenedDelta(v{self.body.from_version}->v{self.body.to_version}, {len(self.rows)} rows)"


def check_answer(
    raw: bytes,
    recipient: Recipient,
    held: int,
    nonce: str | None = None,
    status: int | None = None,
) -> DeltaBody | CurrentBody | WipeBody:
    """Every check the cloud's answer must pass before anything is applied; ``held`` is
    the version of the roster held.

    ``nonce`` is the nonce of the signed request the answer is for. With it, a delta
    must carry that nonce and an up-to-date statement must too; without it (a delta
    read from a file), a delta is checked as before and a statement is refused, since
    nothing shows it is fresh. ``status`` is the answer's HTTP status, named in the
    error when the answer is empty.
    """
    if recipient.roster_public is None:
        raise DeltaError("no cloud roster key is pinned on this kiosk (run `kiosk provision`)")
    if not raw:
        raise DeltaError(
            f"the cloud's roster answer is empty{f' (HTTP {status})' if status else ''}: "
            "an unsigned 'up to date' is not accepted (a cloud older than this kiosk, "
            "or something on the path answering in its place); the roster held is kept"
        )
    try:
        body = verify_answer(raw, recipient.roster_public)
    except IntegrityError as exc:
        raise DeltaError(str(exc)) from None
    if isinstance(body, CurrentBody):
        return _check_current(body, recipient, held, nonce)
    if isinstance(body, WipeBody):
        return _check_wipe(body, recipient, nonce)
    if body.kiosk_id != recipient.kiosk_id or body.recipient != recipient.box_key_id:
        raise DeltaError(
            f"roster delta is for another kiosk ({body.kiosk_id}, key {body.recipient})"
        )
    if body.model != recipient.model:
        raise DeltaError(
            f"roster delta uses encoder model {body.model!r}; this kiosk runs {recipient.model!r}"
        )
    if body.to_version <= held:
        raise DeltaError(
            f"roster delta to version {body.to_version} is not newer than version {held} (replayed?)"
        )
    if not body.full and body.from_version != held:
        raise VersionGapError(
            f"roster delta starts at version {body.from_version} but this kiosk holds {held}: a full snapshot is needed"
        )
    if nonce is not None and body.nonce != nonce:
        raise DeltaError(
            "roster delta was not made for this request "
            f"({'it carries no nonce' if body.nonce is None else 'another nonce'}): "
            "replayed, or from a cloud older than this kiosk"
        )
    return body


def _check_current(
    body: CurrentBody, recipient: Recipient, held: int, nonce: str | None
) -> CurrentBody:
    if body.kiosk_id != recipient.kiosk_id:
        raise DeltaError(f"roster up-to-date statement is for another kiosk ({body.kiosk_id})")
    if nonce is None:
        raise DeltaError(
            "roster up-to-date statement has no request to be checked against; "
            "only an answer fresh from the cloud can say the roster is current"
        )
    if body.nonce != nonce:
        raise DeltaError(
            "roster up-to-date statement answers another request (its nonce is not the "
            "one this kiosk sent): replayed"
        )
    if body.version != held:
        raise DeltaError(
            f"roster up-to-date statement names version {body.version} but this kiosk holds {held}"
        )
    return body


def _check_wipe(body: WipeBody, recipient: Recipient, nonce: str | None) -> WipeBody:
    if body.kiosk_id != recipient.kiosk_id:
        raise DeltaError(f"roster wipe order is for another kiosk ({body.kiosk_id})")
    if nonce is None or body.nonce != nonce:
        raise DeltaError(
            "roster wipe order answers another request (its nonce is not the one this "
            "kiosk sent): replayed; nothing is deleted"
        )
    return body


def open_delta(body: DeltaBody, box: X25519PrivateKey, key_of: KeyOf) -> OpenedDelta:
    """Unwrap the delta's data key with this kiosk's ``box`` key and open every sealed row
    (under that key, or one the store holds: ``key_of``); ``DeltaError`` at the first that
    fails. The rows are returned sealed, exactly as they arrived."""
    new_key: tuple[WrappedKey, bytes] | None = None
    if body.data_key is not None:
        try:
            wrapped = WrappedKey.from_dict(body.data_key.model_dump())
            new_key = (wrapped, unwrap_key(wrapped, box))
        except IntegrityError as exc:
            raise DeltaError(f"roster delta's data key cannot be opened: {exc}") from None

    def key_for(row: SealedRow, what: str) -> bytes:
        if new_key is not None and row.key_id == new_key[0].key_id:
            return new_key[1]
        try:
            return key_of(row.key_id)
        except StoreError:
            raise DeltaError(
                f"{what} {row.person_id} is sealed with unknown data key {row.key_id}"
            ) from None

    rows: list[Row] = []
    for row in body.upserts:
        data_key = key_for(row, "row")
        try:
            blob = row.blob()
            record = RiderRecord.from_bytes(
                open_sealed(data_key, blob, row_aad(row.person_id, row.version, row.key_id))
            )
        except IntegrityError as exc:
            raise DeltaError(f"row {row.person_id} fails its integrity check: {exc}") from None
        models = ",".join(sorted({template.model for template in record.templates}))
        rows.append((row.person_id, row.version, row.key_id, models, blob))
    terms: list[TermsRow] = []
    for row in body.terms:
        data_key = key_for(row, "terms of rider")
        try:
            blob = row.blob()
            RiderTerms.from_bytes(
                open_sealed(data_key, blob, terms_aad(row.person_id, row.version, row.key_id))
            )
        except IntegrityError as exc:
            raise DeltaError(
                f"terms of rider {row.person_id} fail their integrity check: {exc}"
            ) from None
        terms.append((row.person_id, row.version, row.key_id, blob))
    fleet = tuple(
        (
            item.person_id,
            item.version,
            json.dumps([list(pair) for pair in item.open_rentals], separators=(",", ":")),
            item.overdue,
            item.lost,
        )
        for item in body.fleet
    )
    return OpenedDelta(body, tuple(rows), new_key, tuple(terms), fleet)
