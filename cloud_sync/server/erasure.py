"""Erasure that can be proven, and riders kept no longer than they are active.

**Deletion.** Whatever deletes a rider (the operator, a consent withdrawal, retention)
goes through ``CloudRoster.delete``, which calls ``record_deletion`` in its transaction:
the deletion is kept under a hash of the rider's id (``person_hash``), never the id itself,
with a random pseudonym, the roster version that deleted them and why; the rider's id is
then replaced by the pseudonym in every stored event that names them, in their closed
rentals and in custody records; their activity and home kiosk rows go. What an open money matter still
needs keeps the id (a rental still out, overdue or lost: whoever has the powerbank must
still be found): those riders wait in ``erasure_pending``, the only table that holds an
erased rider's id, until the sweep finds the matter closed and finishes the job. An event
that names an erased rider and arrives later (from a kiosk that was offline) is
pseudonymised at ingest the same way.

**Receipts.** A kiosk that removes a deleted rider from its roster records
``roster.erased`` (rider, roster version); at ingest the receipt is kept by hash and the
event's own copy of the id is replaced by the pseudonym. ``kiosk-cloud riders erasure ID``
(``erasure_status``) lists every kiosk: confirmed (when), up to date without having held
the rider, or not yet (last seen).

**Retention.** ``rider_retention_s`` (a cloud setting; 0: never) deletes riders with no
activity for that long (no rental, boarding or refusal recorded, no change by an operator
or the app), unless they have a powerbank out; the sweep runs it, one replica at a time.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cloud_sync.events import Event
from cloud_sync.server.db import Database, Tx
from cloud_sync.server.migrations import utc_text

if TYPE_CHECKING:
    from cloud_sync.server.roster import CloudRoster

#: Event types whose payload names a rider (``person_id``).
PERSON_EVENTS = (
    "rental.started",
    "rental.failed",
    "rider.refused",
    "boarding.recorded",
    "face.recognised",
    "roster.erased",
    "template.proposed",
)
#: What replaces a proposed template's sealed encoding once its rider is erased: valid
#: base64 ("erased" six times) that opens under no key.
ERASED_TEMPLATE = "ZXJhc2Vk" * 6
#: Rental states that are an open money matter: the rider's id stays until they close.
OPEN_RENTALS = ("open", "overdue", "lost")
#: Activity: what a rider did at a kiosk.
ACTIVE_EVENTS = ("rental.started", "boarding.recorded", "rider.refused")


def person_hash(person_id: str) -> str:
    """How a deletion is kept: a hash of the rider's id, never the id."""
    return hashlib.sha256(b"kiosk-erasure\x00" + person_id.encode()).hexdigest()


def record_deletion(tx: Tx, person_id: str, version: int, now: datetime, reason: str) -> str:
    """Keep the deletion by hash and pseudonymise what names the rider; their pseudonym."""
    hashed = person_hash(person_id)
    found = tx.rows("SELECT pseudonym FROM erasures WHERE person_hash = ?", [hashed])
    pseudonym = str(found[0][0]) if found else f"erased-{secrets.token_hex(8)}"
    tx.run(
        "INSERT INTO erasures (person_hash, pseudonym, roster_version, deleted_at, reason) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (person_hash) DO UPDATE SET "
        "roster_version = excluded.roster_version, deleted_at = excluded.deleted_at, "
        "reason = excluded.reason",
        [hashed, pseudonym, version, utc_text(now), reason],
    )
    tx.run("DELETE FROM erasure_receipts WHERE person_hash = ?", [hashed])  # a new deletion
    tx.run("DELETE FROM rider_activity WHERE person_id = ?", [person_id])
    tx.run("DELETE FROM rider_homes WHERE person_id = ?", [person_id])  # where they live
    pseudonymise(tx, person_id, pseudonym, now)
    return pseudonym


def pseudonymise(tx: Tx, person_id: str, pseudonym: str, now: datetime) -> bool:
    """Replace ``person_id`` by ``pseudonym`` wherever no open money matter needs it;
    True when nothing names the rider any more (else they wait in ``erasure_pending``)."""
    open_rentals = {
        (str(k), str(r))
        for k, r in tx.rows(
            "SELECT kiosk_id, rental_id FROM rentals WHERE person_id = ? AND status IN (?, ?, ?)",
            [person_id, *OPEN_RENTALS],
        )
    }
    marks = ", ".join("?" for _ in PERSON_EVENTS)
    rows = tx.rows(
        "SELECT id, kiosk_id, type, payload FROM events "  # noqa: S608 (placeholders only)
        f"WHERE type IN ({marks}) AND payload LIKE ?",
        [*PERSON_EVENTS, f"%{json.dumps(person_id)}%"],
    )
    updates = []
    for event_id, kiosk_id, kind, payload in rows:
        data = json.loads(payload)
        if data.get("person_id") != person_id:
            continue
        if kind in ("rental.started", "rental.failed") and (
            (str(kiosk_id), str(data.get("rental_id"))) in open_rentals
        ):
            continue  # the rental is still out: who has the powerbank must stay known
        data["person_id"] = pseudonym
        if kind == "template.proposed":
            data["sealed"] = ERASED_TEMPLATE  # the template goes, not only the name
        updates.append([json.dumps(data, separators=(",", ":")), event_id])
    if updates:
        tx.many("UPDATE events SET payload = ? WHERE id = ?", updates)
    tx.run(
        "UPDATE rentals SET person_id = ? WHERE person_id = ? "
        "AND status NOT IN ('open', 'overdue', 'lost')",
        [pseudonym, person_id],
    )
    tx.run("UPDATE template_learning SET person_id = ? WHERE person_id = ?", [pseudonym, person_id])
    tx.run(
        "UPDATE custody_events SET person_id = ? WHERE person_id = ? AND NOT EXISTS ("
        "SELECT 1 FROM rentals WHERE rentals.kiosk_id = custody_events.kiosk_id AND "
        "rentals.rental_id = custody_events.rental_id "
        "AND rentals.status IN ('open', 'overdue', 'lost'))",
        [pseudonym, person_id],
    )
    tx.run(
        "UPDATE powerbanks SET person_id = ? WHERE person_id = ? AND NOT EXISTS ("
        "SELECT 1 FROM rentals WHERE rentals.kiosk_id = powerbanks.rental_kiosk_id AND "
        "rentals.rental_id = powerbanks.rental_id "
        "AND rentals.status IN ('open', 'overdue', 'lost'))",
        [pseudonym, person_id],
    )
    done = not open_rentals
    if done:
        tx.run("DELETE FROM erasure_pending WHERE person_id = ?", [person_id])
    else:
        tx.run(
            "INSERT INTO erasure_pending (person_id, pseudonym, since) VALUES (?, ?, ?) "
            "ON CONFLICT (person_id) DO NOTHING",
            [person_id, pseudonym, utc_text(now)],
        )
    return done


def finish_pending(tx: Tx, now: datetime) -> int:
    """Pseudonymise the erased riders whose open rentals have closed since; how many."""
    done = 0
    for person_id, pseudonym in tx.rows("SELECT person_id, pseudonym FROM erasure_pending"):
        done += pseudonymise(tx, str(person_id), str(pseudonym), now)
    return done


def on_ingest(tx: Tx, events: Iterable[Event], now: datetime) -> None:
    """In the ingest transaction: keep each ``roster.erased`` receipt by hash, note riders'
    activity, and pseudonymise whatever names a rider already erased."""
    named: dict[str, list[Event]] = {}
    for event in events:
        person = getattr(event.payload, "person_id", None)
        if isinstance(person, str) and event.type in PERSON_EVENTS:
            named.setdefault(person, []).append(event)
    if not named:
        return
    hashes = {person_hash(p): p for p in named}
    where, args = tx.in_list("person_hash", sorted(hashes))
    erased = {
        str(h): (str(pseudonym), int(version))
        for h, pseudonym, version in tx.rows(
            f"SELECT person_hash, pseudonym, roster_version FROM erasures WHERE {where}",  # noqa: S608
            args,
        )
    }
    for hashed, person in hashes.items():
        events_of = named[person]
        for event in events_of:
            if event.type == "roster.erased":
                version = int(getattr(event.payload, "roster_version", 0))
                tx.run(
                    "INSERT INTO erasure_receipts (person_hash, kiosk_id, roster_version, "
                    "erased_at, event_id) VALUES (?, ?, ?, ?, ?) ON CONFLICT (person_hash, "
                    "kiosk_id) DO UPDATE SET roster_version = excluded.roster_version, "
                    "erased_at = excluded.erased_at, event_id = excluded.event_id",
                    [hashed, event.kiosk_id, version, utc_text(event.occurred_at), event.id],
                )
        if hashed in erased:
            pseudonymise(tx, person, erased[hashed][0], now)
            continue
        active = [e.occurred_at for e in events_of if e.type in ACTIVE_EVENTS]
        if active:
            note_activity(tx, person, max(active))


def note_activity(tx: Tx, person_id: str, at: datetime) -> None:
    tx.run(
        "INSERT INTO rider_activity (person_id, last_active_at) VALUES (?, ?) "
        "ON CONFLICT (person_id) DO UPDATE SET last_active_at = excluded.last_active_at "
        "WHERE rider_activity.last_active_at < excluded.last_active_at",
        [person_id, utc_text(at)],
    )


def inactive_riders(tx: Tx, keep: timedelta, now: datetime, limit: int = 500) -> list[str]:
    """Riders with no activity (nor change to their record or terms) for ``keep`` and no
    powerbank out: the ones retention deletes."""
    cutoff = utc_text(now - keep)
    marks = ", ".join("?" for _ in OPEN_RENTALS)
    rows = tx.rows(
        "SELECT r.person_id FROM roster_riders r "  # noqa: S608 (placeholders only)
        "LEFT JOIN rider_activity a ON a.person_id = r.person_id "
        "LEFT JOIN rider_terms t ON t.person_id = r.person_id "
        "WHERE r.updated_at < ? AND (a.last_active_at IS NULL OR a.last_active_at < ?) "
        "AND (t.updated_at IS NULL OR t.updated_at < ?) "
        f"AND NOT EXISTS (SELECT 1 FROM rentals x WHERE x.person_id = r.person_id "
        f"AND x.status IN ({marks})) ORDER BY r.person_id LIMIT ?",
        [cutoff, cutoff, cutoff, *OPEN_RENTALS, limit],
    )
    return [str(row[0]) for row in rows]


@dataclass(frozen=True)
class KioskErasure:
    kiosk_id: str
    state: str  # confirmed, up_to_date, never_held, pending, disabled
    erased_at: str | None = None
    last_seen: str | None = None


def erasure_status(tx: Tx, person_id: str) -> dict[str, Any] | None:
    """What ``kiosk-cloud riders erasure ID`` shows; None when no deletion is on record."""
    hashed = person_hash(person_id)
    found = tx.rows(
        "SELECT pseudonym, roster_version, deleted_at, reason FROM erasures WHERE person_hash = ?",
        [hashed],
    )
    if not found:
        return None
    pseudonym, version, deleted_at, reason = found[0]
    receipts = {
        str(kiosk): str(at)
        for kiosk, at in tx.rows(
            "SELECT kiosk_id, erased_at FROM erasure_receipts WHERE person_hash = ?", [hashed]
        )
    }
    kiosks = []
    for kiosk_id, disabled, created_at in tx.rows(
        "SELECT kiosk_id, disabled, created_at FROM kiosks ORDER BY kiosk_id"
    ):
        kiosk = str(kiosk_id)
        seen = tx.rows("SELECT MAX(received_at) FROM events WHERE kiosk_id = ?", [kiosk])[0][0]
        if kiosk in receipts:
            kiosks.append(KioskErasure(kiosk, "confirmed", receipts[kiosk], seen))
        elif str(created_at) > str(deleted_at) or _pulled_since(tx, kiosk, int(version)):
            state = "never_held" if str(created_at) > str(deleted_at) else "up_to_date"
            kiosks.append(KioskErasure(kiosk, state, None, seen))
        elif disabled:
            kiosks.append(KioskErasure(kiosk, "disabled", None, seen))
        else:
            kiosks.append(KioskErasure(kiosk, "pending", None, seen))
    pending = tx.rows("SELECT since FROM erasure_pending WHERE person_id = ?", [person_id])
    return {
        "person_id": person_id,
        "pseudonym": pseudonym,
        "roster_version": int(version),
        "deleted_at": deleted_at,
        "reason": reason,
        "kept_for_open_rentals": bool(pending),
        "kiosks": [k.__dict__ for k in kiosks],
        "erased": sum(1 for k in kiosks if k.state in ("confirmed", "up_to_date", "never_held")),
        "waiting": [k.kiosk_id for k in kiosks if k.state == "pending"],
    }


def _pulled_since(tx: Tx, kiosk_id: str, version: int) -> bool:
    """Whether the kiosk applied a roster at or past ``version`` (``roster.applied``): it
    holds the rider no more, whether or not its receipt arrived."""
    for (payload,) in tx.rows(
        "SELECT payload FROM events WHERE kiosk_id = ? AND type = 'roster.applied' "
        "ORDER BY seq DESC LIMIT 20",
        [kiosk_id],
    ):
        if int(json.loads(payload).get("to_version", 0)) >= version:
            return True
    return False


PRIVACY_LOCK = "kiosk-cloud:privacy-sweep"


@dataclass(frozen=True)
class PrivacySweep:
    """What one privacy sweep did; ``ran`` is false when another replica was at it."""

    ran: bool
    pseudonymised: int = 0
    retired: tuple[str, ...] = ()


def privacy_sweep(
    database: Database, roster: CloudRoster | None, keep: timedelta | None, now: datetime
) -> PrivacySweep:
    """One transaction, one replica at a time: finish the pseudonyms that waited on open
    rentals, then delete the riders inactive for ``keep`` (None: retention is off)."""
    with database.transaction() as tx:
        if tx.dialect == "postgres":
            rows = tx.rows(
                "SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0))", [PRIVACY_LOCK]
            )
            if not rows[0][0]:
                return PrivacySweep(ran=False)
        done = finish_pending(tx, now)
        retired: list[str] = []
        if keep is not None and roster is not None:
            for person_id in inactive_riders(tx, keep, now):
                roster.delete_in(tx, person_id, now, "retention")
                retired.append(person_id)
    return PrivacySweep(ran=True, pseudonymised=done, retired=tuple(retired))
