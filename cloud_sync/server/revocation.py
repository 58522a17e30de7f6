"""Revoking a kiosk (a stolen one, or a copied SD card): refuse it, rotate the roster's
data key, and answer its next roster pull with a signed order to wipe its roster.

``revoke`` does it in one transaction: the kiosk is marked disabled in the registry and
every rider row and terms row is re-sealed under a new data key (``CloudRoster.rotate_key``),
together with the audit entry. From then on the cloud refuses the kiosk's signed
requests (403 ``kiosk_revoked``: batches, closed rentals), except its roster pull, which
gets ``wipe_answer``: a wipe order signed with the roster key, for that kiosk and that
request's nonce, which the kiosk obeys by deleting every template and data key it holds.
Every other kiosk's next pull is a full snapshot under the new key, wrapped for its own
box key, so what is written after the revocation is out of the revoked kiosk's reach
even if its old data key was copied off it.

A kiosk is brought back only by registering or provisioning it again (new keys).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloud_sync.roster_wire import build_wipe, sign_wipe
from cloud_sync.server.db import Tx
from cloud_sync.server.migrations import utc_text
from cloud_sync.server.problems import Problem
from cloud_sync.server.roster import CloudRoster
from cloud_sync.server.store import Store


@dataclass(frozen=True)
class Revocation:
    """What revoking a kiosk did: ``already`` when it was revoked before (nothing changed);
    else the new data key and roster version (None when this cloud serves no roster)."""

    kiosk_id: str
    already: bool
    data_key_id: str | None = None
    roster_version: int | None = None
    riders: int = 0


class KioskRevoked(Problem):
    """403 ``kiosk_revoked``: the answer to a revoked kiosk's request, raised once its
    signature verified; ``signed`` is that request's verified signature, which the
    roster pull answers with a wipe order instead."""

    def __init__(self, signed: Any) -> None:
        super().__init__(
            403,
            "kiosk_revoked",
            f"kiosk {signed.kiosk_id!r} was revoked: the cloud refuses its requests until "
            "it is registered or provisioned again with new keys",
        )
        self.signed = signed


def revoke(
    store: Store,
    roster: CloudRoster | None,
    kiosk_id: str,
    audit: Callable[[Tx], None] | None = None,
) -> Revocation:
    """Revoke ``kiosk_id`` (see the module docstring); 404 ``unknown_kiosk`` when it is not
    registered, nothing changed. ``audit`` writes the audit entry in the same transaction."""
    record = store.kiosk(kiosk_id)
    if record is None:
        raise Problem(404, "unknown_kiosk", f"kiosk {kiosk_id!r} is not registered")
    if record.disabled:
        return Revocation(kiosk_id, already=True)

    def disable(tx: Tx) -> None:
        changed = tx.run(
            "UPDATE kiosks SET disabled = 1, updated_at = ? WHERE kiosk_id = ? AND disabled = 0",
            [utc_text(datetime.now(UTC)), kiosk_id],
        )
        if changed != 1:  # revoked by someone else meanwhile: roll this one back
            raise _RevokedMeanwhile
        if audit is not None:
            audit(tx)

    try:
        if roster is None:  # this cloud serves no roster: nothing to rotate
            with store.db.transaction() as tx:
                disable(tx)
            return Revocation(kiosk_id, already=False)
        done = roster.rotate_key(also=disable)
    except _RevokedMeanwhile:
        return Revocation(kiosk_id, already=True)
    return Revocation(kiosk_id, False, done.key_id, done.version, done.riders)


class _RevokedMeanwhile(Exception):
    """Another revocation of the same kiosk committed first (its rotation counts)."""


def wipe_answer(roster: CloudRoster, kiosk_id: str, nonce: str) -> bytes:
    """The signed order to wipe the roster, in answer to the revoked kiosk's request."""
    return sign_wipe(build_wipe(kiosk_id, nonce), roster.keys.signing)
