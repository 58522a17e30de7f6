"""Consent texts and riders' consent records (``consent_texts``, ``consents``; migration 7).

A consent text is added once under a version (``kiosk-cloud consent-texts add``, or
``POST /v1/admin/consent-texts``); the cloud keeps the text and its SHA-256, and never
changes it: a new wording is a new version. Enrolling a rider needs a consent record
naming a known version, when it was given, through which channel and who took it; it is
stored in the transaction that stores the rider, so there is never one without the other.
Withdrawing consent deletes the rider through the roster's delete (a tombstone: every
kiosk drops them at its next pull) and marks the record withdrawn (when, by whom) in the
same transaction. A record holds no template, name or claim code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel, Field
from ulid import ULID

from cloud_sync.server.audit import Entry
from cloud_sync.server.db import ConflictError, Database, Tx
from cloud_sync.server.erasure import person_hash
from cloud_sync.server.migrations import utc_text
from cloud_sync.server.models import CONSENT_VERSION_PATTERN, ConsentIn, _Body
from cloud_sync.server.problems import Problem
from cloud_sync.server.rider_fleet import hold_roster
from cloud_sync.server.roster import CloudRoster

#: The longest consent text kept (a few pages of plain text).
MAX_TEXT_CHARS = 200_000
#: How far in the future a consent's time may be (clocks of desks and phones drift).
FUTURE_SLACK = timedelta(minutes=5)


class ConsentTextOut(BaseModel):
    version: str
    sha256: str = Field(description="SHA-256 of the text's UTF-8 bytes")
    chars: int
    added_at: str
    added_by: str


class ConsentTextIn(_Body):
    """A consent text to accept from now on."""

    #: Its largest body (``bodies.body_limit``): ``MAX_TEXT_CHARS`` of any script, escaped.
    max_body_bytes: ClassVar[int] = 2 * 1024 * 1024

    version: str = Field(min_length=1, max_length=64, pattern=CONSENT_VERSION_PATTERN)
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class ConsentOut(BaseModel):
    """A rider's consent record (the newest, when they enrolled more than once)."""

    person_id: str
    consent_id: str
    text_version: str
    text_sha256: str
    given_at: str
    channel: str
    taken_by: str
    recorded_at: str
    recorded_by: str
    withdrawn_at: str | None
    withdrawn_by: str | None


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_version(version: str) -> str:
    if len(version) > 64 or not re.fullmatch(CONSENT_VERSION_PATTERN, version):
        raise Problem(
            422,
            "bad_consent_version",
            f"{version[:64]!r} is not a consent text version (at most 64 letters, digits, "
            "'.', '_', '-')",
        )
    return version


def add_text(database: Database, version: str, text: str, entry: Entry) -> tuple[bool, str]:
    """Keep ``text`` as consent text ``version``; ``(added, sha256)``. The same text again
    is no change; another text under a version that exists is a 409."""
    check_version(version)
    if not text.strip():
        raise Problem(422, "empty_consent_text", "a consent text cannot be empty")
    digest = text_digest(text)
    try:
        with database.transaction() as tx:
            rows = tx.rows("SELECT sha256 FROM consent_texts WHERE version = ?", [version])
            if rows:
                if rows[0][0] != digest:
                    raise Problem(
                        409,
                        "consent_text_exists",
                        f"consent text {version!r} exists with another text (sha256 "
                        f"{rows[0][0][:12]}...); a text never changes: add a new version",
                    )
                return False, digest
            tx.run(
                "INSERT INTO consent_texts (version, sha256, text, added_at, added_by) "
                "VALUES (?, ?, ?, ?, ?)",
                [version, digest, text, utc_text(datetime.now(UTC)), entry.actor],
            )
            entry.write(tx)
    except ConflictError:
        return add_text(database, version, text, entry)  # added concurrently: compare again
    return True, digest


def texts(database: Database) -> list[ConsentTextOut]:
    with database.transaction() as tx:
        rows = tx.rows(
            "SELECT version, sha256, LENGTH(text), added_at, added_by FROM consent_texts "
            "ORDER BY added_at, version"
        )
    return [
        ConsentTextOut(version=v, sha256=h, chars=int(n), added_at=at, added_by=by)
        for v, h, n, at, by in rows
    ]


def require_known(database: Database, version: str) -> None:
    """422 unless consent text ``version`` is known (checked before costly work)."""
    with database.transaction() as tx:
        known = tx.rows("SELECT 1 FROM consent_texts WHERE version = ?", [version])
    if not known:
        raise _unknown(version)


def _unknown(version: str) -> Problem:
    return Problem(
        422,
        "unknown_consent_version",
        f"consent text {version!r} is not known to this cloud; add it first "
        "(kiosk-cloud consent-texts add VERSION --file TEXT); nothing was stored",
    )


def recorder(
    person_id: str, consent: ConsentIn, entry: Entry, now: datetime | None = None
) -> Callable[[Tx], None]:
    """What ``CloudRoster.add`` runs in its transaction: the consent record (422, and the
    rider not stored, when its text version is unknown or its time in the future) and the
    audit entry."""
    now = now or datetime.now(UTC)
    if consent.given_at > now + FUTURE_SLACK:
        raise Problem(
            422, "consent_in_future", f"consent.given_at {consent.given_at} is in the future"
        )

    def record(tx: Tx) -> None:
        if not tx.rows("SELECT 1 FROM consent_texts WHERE version = ?", [consent.version]):
            raise _unknown(consent.version)
        tx.run(
            "INSERT INTO consents (consent_id, person_id, text_version, given_at, channel, "
            "taken_by, recorded_at, recorded_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                str(ULID.from_datetime(now)),
                person_id,
                consent.version,
                utc_text(consent.given_at),
                consent.channel,
                consent.taken_by,
                utc_text(now),
                entry.actor,
            ],
        )
        entry.write(tx)

    return record


def current(database: Database, person_id: str) -> ConsentOut | None:
    """The rider's newest consent record, or None."""
    with database.transaction() as tx:
        rows = tx.rows(
            "SELECT c.consent_id, c.text_version, t.sha256, c.given_at, c.channel, c.taken_by, "
            "c.recorded_at, c.recorded_by, c.withdrawn_at, c.withdrawn_by FROM consents AS c "
            "JOIN consent_texts AS t ON t.version = c.text_version WHERE c.person_id = ? "
            "ORDER BY c.recorded_at DESC, c.consent_id DESC LIMIT 1",
            [person_id],
        )
    if not rows:
        return None
    (cid, version, digest, given, channel, taken, recorded, rec_by, w_at, w_by) = rows[0]
    return ConsentOut(
        person_id=person_id,
        consent_id=cid,
        text_version=version,
        text_sha256=digest,
        given_at=given,
        channel=channel,
        taken_by=taken,
        recorded_at=recorded,
        recorded_by=rec_by,
        withdrawn_at=w_at,
        withdrawn_by=w_by,
    )


def withdraw(roster: CloudRoster, person_id: str, entry: Entry) -> tuple[int, bool]:
    """Delete the rider everywhere (the roster's delete: a tombstone) and mark their
    consent records withdrawn, in one transaction: the new roster version, and False.
    A rider deleted before (by an operator, retention, or this withdrawal asked before or
    at the same moment) gets the withdrawal marked on their consent records, with its
    audit entry, once: the deletion's roster version, and True. 404 for a rider the
    cloud never deleted."""
    now = utc_text(datetime.now(UTC))

    def mark(tx: Tx, deleting: bool = True) -> None:
        marked = tx.run(
            "UPDATE consents SET withdrawn_at = ?, withdrawn_by = ? "
            "WHERE person_id = ? AND withdrawn_at IS NULL",
            [now, entry.actor, person_id],
        )
        if deleting or marked:  # a withdrawal marked already is not logged twice
            entry.write(tx)

    try:
        return roster.delete(person_id, also=mark), False
    except Problem as problem:
        if problem.code != "unknown_rider":
            raise
        missing = problem
    with roster.db.transaction() as tx:
        hold_roster(tx)  # an enrolment racing this one comes first or after
        erased = tx.rows(
            "SELECT roster_version FROM erasures WHERE person_hash = ?", [person_hash(person_id)]
        )
        if not erased:
            raise missing
        if tx.rows("SELECT 1 FROM roster_riders WHERE person_id = ?", [person_id]):
            raise Problem(
                409, "rider_enrolled_again", f"rider {person_id!r} was enrolled again meanwhile"
            )
        mark(tx, deleting=False)
    return int(erased[0][0]), True
