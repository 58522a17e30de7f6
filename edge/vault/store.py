"""The encrypted roster store: one SQLite file, every personal byte sealed.

Its tables (``edge.vault.files``) hold sealed rows, wrapped data keys and counts: no name,
template or entitlement in clear. SQLite is told to keep temporary data in memory and to
overwrite deleted content (``secure_delete``), and the WAL is truncated after a deletion so
a deleted rider's bytes leave the disk at once (``edge.vault.erasure``).

Two sources fill it: signed deltas from the cloud, checked and opened by
``edge.vault.deltas`` before anything is written (``apply_answer`` for an answer fresh
from the cloud with the nonce of its request, ``apply_delta`` for a delta's bytes, such as
a file), whose sealed rows are stored exactly as they arrive, and local enrolment in demo
and development use (``enrol``), sealed here under a local data key. The cloud's signed
statement that the roster held is current goes through ``apply_answer`` too: it changes
nothing, but only a genuine one for this very request lets the pull count as a success.
A signed order to wipe the roster (the cloud revoked this kiosk) is obeyed the same way,
only when genuine and for this very request: ``purge``.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec, TypeVar

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_sync.errors import IntegrityError
from cloud_sync.roster_owed import OwedEvent
from cloud_sync.roster_wire import (
    ApplyResult,
    CurrentBody,
    DeltaBody,
    FleetView,
    RiderRecord,
    RiderTerms,
    RosterAnswer,
    WipeBody,
)
from cloud_sync.sealing import (
    WrappedKey,
    new_data_key,
    open_sealed,
    row_aad,
    seal,
    terms_aad,
    unwrap_key,
    wrap_key,
)
from edge.vault import deltas, erasure, owed
from edge.vault.errors import StoreError
from edge.vault.files import INSERT_ROW, open_db
from edge.vault.keys import DeviceKeys
from edge.vault.values import LoadedRoster, Rider, RosterInfo
from edge.vault.verify import VerifyReport, verify_rows

log = structlog.get_logger("edge.vault.store")


P = ParamSpec("P")
T = TypeVar("T")


def _serialised(
    method: Callable[Concatenate[RosterStore, P], T],
) -> Callable[Concatenate[RosterStore, P], T]:
    """One thread at a time on the store's one connection: in ``kiosk run`` the flow's
    thread reloads and purges while the MQTT and status threads read the version."""

    def run(self: RosterStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    functools.update_wrapper(run, method)
    return run


class RosterStore:
    """The roster database, opened with this kiosk's keys."""

    def __init__(
        self,
        path: Path,
        keys: DeviceKeys,
        kiosk_id: str,
        model: str,
        roster_public: Ed25519PublicKey | None = None,
        *,
        read_only: bool = False,
        erase_wait_s: float = erasure.DEFAULT_WAIT_S,
    ) -> None:
        """Open (read-write: create) the roster at ``path``. With ``read_only`` nothing is
        created or written: the file must exist and be a roster (``RosterMissingError``,
        ``StoreError`` otherwise). ``erase_wait_s`` bounds how long a deletion waits for
        readers in other processes before it reports its erasure as pending."""
        self.path = path
        self.read_only = read_only
        self.erase_wait_s = erase_wait_s
        self.erasure_pending = False  # the last deletion's bytes are still on disk
        self._keys = keys
        self._kiosk_id = kiosk_id
        self._model = model
        self._roster_public = roster_public
        self._data_keys: dict[str, bytes] = {}
        self._lock = threading.RLock()
        self._db = open_db(path, read_only=read_only)
        if not read_only:
            self.finish_erasure(wait_s=0.0)

    # -- metadata ---------------------------------------------------------------------

    @_serialised
    def _meta(self, key: str, default: str = "") -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def _set_meta(self, key: str, value: str | int | float) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    @property
    def version(self) -> int:
        return int(self._meta("version", "0"))

    @_serialised
    def info(self) -> RosterInfo:
        """Counts and versions, no personal data."""
        per_model: dict[str, int] = {}
        for (models,) in self._db.execute("SELECT models FROM riders"):
            for model in str(models).split(","):
                per_model[model] = per_model.get(model, 0) + 1
        changed = float(self._meta("changed_at", "0") or 0)
        riders = int(self._db.execute("SELECT COUNT(*) FROM riders").fetchone()[0])
        stale = sum(count for model, count in per_model.items() if model != self._model)
        return RosterInfo(
            path=str(self.path),
            version=self.version,
            source=self._meta("source", "empty"),
            riders=riders,
            templates_by_model=per_model,
            encoder_model=self._model,
            needs_reenrolment=stale,
            data_key_id=self._meta("key_id") or None,
            changed_at=changed or None,
            age_s=round(time.time() - changed, 1) if changed else None,
        )

    # -- keys ---------------------------------------------------------------------------

    def _data_key(self, data_key_id: str) -> bytes:
        if data_key_id not in self._data_keys:
            row = self._db.execute(
                "SELECT wrapped FROM data_keys WHERE key_id = ?", (data_key_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: data key {data_key_id} is not held by this kiosk")
            try:
                self._data_keys[data_key_id] = unwrap_key(
                    WrappedKey.from_dict(json.loads(row[0])), self._keys.box
                )
            except IntegrityError as exc:
                raise StoreError(
                    f"{self.path}: cannot open data key {data_key_id}: {exc}"
                ) from None
        return self._data_keys[data_key_id]

    def cloud_data_key(self) -> tuple[str, bytes] | None:
        """The cloud's current roster data key (id, material), or None when the roster is
        not the cloud's (local enrolment, empty): what a proposed template is sealed with
        (``cloud_sync.template_seal``). Never logged, never written."""
        current = self._meta("key_id")
        if not current or self._meta("source") != "cloud":
            return None
        return current, self._data_key(current)

    def _add_key(self, wrapped: WrappedKey, data_key: bytes) -> None:
        """Hold a new data key (inside a transaction) and make it the current one."""
        self._db.execute(
            "INSERT OR REPLACE INTO data_keys (key_id, wrapped, added_at) VALUES (?, ?, ?)",
            (wrapped.key_id, json.dumps(wrapped.to_dict()), time.time()),
        )
        self._data_keys[wrapped.key_id] = data_key
        self._set_meta("key_id", wrapped.key_id)

    def _forget_unused_keys(self) -> None:
        current = self._meta("key_id")
        self._db.execute(
            "DELETE FROM data_keys WHERE key_id != ? AND key_id NOT IN (SELECT DISTINCT key_id "
            "FROM riders) AND key_id NOT IN (SELECT DISTINCT key_id FROM rider_terms)",
            (current,),
        )
        self._data_keys = {k: v for k, v in self._data_keys.items() if k == current}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot write the roster ({exc})") from None

    def _scrub_wal(self) -> bool:
        """Copy the WAL into the database and truncate it, so that deleted rows leave no
        copy in either file (see ``edge.vault.erasure``); True when done.

        A reader in another process can keep the checkpoint from finishing: it is tried for
        ``erase_wait_s`` seconds, then the erasure is recorded as pending (``meta``), a
        warning is logged and ``erasure_pending`` is set; the next writer to open the
        roster, or this one's next write or load, finishes it.
        """
        if erasure.truncate_wal(self._db, self.erase_wait_s):
            self.erasure_pending = False
            return True
        self.erasure_pending = True
        if erasure.pending_since(self._db) is None:
            with self._transaction():
                self._set_meta(erasure.PENDING_KEY, time.time())
        log.warning("roster.erasure_pending", path=str(self.path), waited_s=self.erase_wait_s)
        return False

    @_serialised
    def pending_erasure(self) -> float | None:
        """When a deletion started waiting for its bytes to leave the disk, or None."""
        return erasure.pending_since(self._db)

    @_serialised
    def finish_erasure(self, wait_s: float | None = None) -> bool:
        """Finish a pending erasure now if no reader holds the roster (waiting at most
        ``wait_s``, default ``erase_wait_s``); logs ``roster.erasure_completed``. True when
        nothing deleted is left on disk."""
        since = erasure.pending_since(self._db)
        if since is None or self.read_only:
            return since is None
        wait = self.erase_wait_s if wait_s is None else wait_s
        if not erasure.truncate_wal(self._db, wait):
            self.erasure_pending = True
            return False
        with self._transaction():
            self._set_meta(erasure.PENDING_KEY, "")
        erasure.truncate_wal(self._db, 0.0)  # the flag's own small write
        self.erasure_pending = False
        log.info(
            "roster.erasure_completed", path=str(self.path), pending_s=round(time.time() - since, 1)
        )
        return True

    # -- reading ------------------------------------------------------------------------

    def _open_row(
        self, person_id: str, version: int, data_key_id: str, sealed: bytes
    ) -> RiderRecord:
        key = self._data_key(data_key_id)
        try:
            return RiderRecord.from_bytes(
                open_sealed(key, sealed, row_aad(person_id, version, data_key_id))
            )
        except IntegrityError as exc:
            raise StoreError(
                f"{self.path}: rider row {person_id} v{version} fails its integrity check: {exc}"
            ) from None

    def _has_table(self, name: str) -> bool:
        """Whether the file holds ``name`` (a roster opened read-only may predate it)."""
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def _terms(self) -> dict[str, tuple[int, RiderTerms]]:
        """Every rider's sealed terms, opened: ``{person_id: (version, terms)}``."""
        if not self._has_table("rider_terms"):
            return {}
        found = {}
        for person_id, version, data_key_id, sealed in self._db.execute(
            "SELECT person_id, version, key_id, sealed FROM rider_terms"
        ):
            key = self._data_key(data_key_id)
            try:
                plain = open_sealed(key, sealed, terms_aad(person_id, version, data_key_id))
                found[person_id] = (int(version), RiderTerms.from_bytes(plain))
            except IntegrityError as exc:
                raise StoreError(
                    f"{self.path}: terms of rider {person_id} v{version} fail their integrity "
                    f"check: {exc}"
                ) from None
        return found

    def _auto_set(self) -> frozenset[str] | None:
        if not self._has_table("auto_set") or self._meta("auto_set") != "1":
            return None
        return frozenset(str(p) for (p,) in self._db.execute("SELECT person_id FROM auto_set"))

    def _fleet(self) -> dict[str, FleetView]:
        if not self._has_table("rider_fleet"):
            return {}
        found = {}
        for person_id, text, overdue, lost in self._db.execute(
            "SELECT person_id, open_rentals, overdue, lost FROM rider_fleet"
        ):
            pairs = tuple((str(kiosk), str(rental)) for kiosk, rental in json.loads(text))
            found[person_id] = FleetView(pairs, int(overdue), int(lost))
        return found

    @_serialised
    def load(self) -> LoadedRoster:
        """Decrypt every row into memory, each rider with the terms in force (their terms
        row when it is newer than their record) and their fleet state."""
        loaded = LoadedRoster(version=self.version, auto_set=self._auto_set())
        terms, fleet = self._terms(), self._fleet()
        rows = self._db.execute(
            "SELECT person_id, version, key_id, sealed FROM riders ORDER BY person_id"
        )
        for person_id, version, data_key_id, sealed in rows:
            record = self._open_row(person_id, version, data_key_id, sealed)
            rights, claim = record.entitlements, record.claim_hash
            newer = terms.get(person_id)
            if newer is not None and newer[0] > version:
                rights, claim = newer[1].entitlements, newer[1].claim_hash
            loaded.riders[person_id] = Rider(
                person_id,
                version,
                record.display_name,
                rights,
                claim,
                record.lookalike,
                fleet.get(person_id, FleetView()),
            )
            for template in record.templates:
                loaded.templates.setdefault(template.model, []).append((person_id, template.vector))
        if not self.read_only:
            self.finish_erasure(wait_s=0.0)  # the running kiosk finishes a pending erasure
        return loaded

    @_serialised
    def verify(self) -> VerifyReport:
        """Check every row (nothing is written): how many, and each damaged one by rider."""
        held = [str(kid) for (kid,) in self._db.execute("SELECT key_id FROM data_keys")]
        return verify_rows(self._db, self._data_key, held)

    # -- local enrolment ------------------------------------------------------------------

    def _local_key(self) -> str:
        current = self._meta("key_id")
        if current and self._meta("source") == "local":
            return current
        return self._new_local_key()

    def _new_local_key(self) -> str:
        """A new data key, wrapped for this kiosk, made current (inside a transaction)."""
        data_key = new_data_key()
        wrapped = wrap_key(data_key, self._keys.box.public_key())
        self._add_key(wrapped, data_key)
        self._set_meta("source", "local")
        return wrapped.key_id

    @_serialised
    def enrol(self, person_id: str, record: RiderRecord, edit: owed.Edit | None = None) -> int:
        """Add or replace a rider locally; returns the rider's new version. ``edit``: a
        technician's edit this is part of, owed to the outbox in the same transaction."""
        with self._transaction():
            data_key_id = self._local_key()
            row = self._db.execute(
                "SELECT version FROM riders WHERE person_id = ?", (person_id,)
            ).fetchone()
            version = (int(row[0]) + 1) if row else 1
            self._write_row(person_id, version, data_key_id, record)
            self._bump_version(self.version + 1)
            if edit is not None:
                owed.owe_edit(self._db, edit, 1, self.version)
        return version

    def _write_row(
        self, person_id: str, version: int, data_key_id: str, record: RiderRecord
    ) -> None:
        sealed = seal(
            self._data_key(data_key_id), record.to_bytes(), row_aad(person_id, version, data_key_id)
        )
        models = ",".join(sorted({template.model for template in record.templates}))
        self._db.execute(INSERT_ROW, (person_id, version, data_key_id, models, sealed))

    def _write_terms(
        self, person_id: str, version: int, data_key_id: str, terms: RiderTerms
    ) -> None:
        sealed = seal(
            self._data_key(data_key_id),
            terms.to_bytes(),
            terms_aad(person_id, version, data_key_id),
        )
        self._db.execute(
            "INSERT OR REPLACE INTO rider_terms (person_id, version, key_id, sealed) "
            "VALUES (?, ?, ?, ?)",
            (person_id, version, data_key_id, sealed),
        )

    def _delete_riders(self, person_ids: Iterable[str]) -> list[str]:
        """Delete these riders' rows, terms and fleet state (inside a transaction); the ids
        of the riders there were."""
        gone = []
        for person_id in person_ids:
            if self._db.execute("DELETE FROM riders WHERE person_id = ?", (person_id,)).rowcount:
                gone.append(person_id)
            self._db.execute("DELETE FROM rider_terms WHERE person_id = ?", (person_id,))
            self._db.execute("DELETE FROM rider_fleet WHERE person_id = ?", (person_id,))
        return gone

    def _bump_version(self, version: int) -> None:
        self._set_meta("version", version)
        self._set_meta("model", self._model)
        self._set_meta("changed_at", time.time())

    @_serialised
    def delete(self, person_id: str, edit: owed.Edit | None = None) -> bool:
        """Remove a rider locally, leaving none of their bytes in the file or its WAL
        (``edit``: as for ``enrol``)."""
        with self._transaction():
            gone = bool(self._delete_riders([person_id]))
            if gone:
                self._bump_version(self.version + 1)
                if edit is not None:
                    owed.owe_edit(self._db, edit, 1, self.version)
        if gone:
            self._scrub_wal()
        return gone

    @_serialised
    def rotate_key(self, edit: owed.Edit | None = None) -> str:
        """Re-seal every row under a new local data key and forget the old one (``edit``:
        as for ``enrol``)."""
        rows = self._db.execute("SELECT person_id, version, key_id, sealed FROM riders").fetchall()
        records = [
            (pid, ver, self._open_row(pid, ver, kid, sealed)) for pid, ver, kid, sealed in rows
        ]
        terms = self._terms()
        with self._transaction():
            key_id = self._new_local_key()
            for person_id, version, record in records:
                self._write_row(person_id, version + 1, key_id, record)
            self._db.execute("DELETE FROM rider_terms")
            for person_id, (version, held) in terms.items():  # sealed again, still newer
                self._write_terms(person_id, version + 1, key_id, held)
            self._forget_unused_keys()
            self._bump_version(self.version + 1)
            if edit is not None:
                owed.owe_edit(self._db, edit, len(records), self.version)
        self._scrub_wal()
        return key_id

    # -- deltas from the cloud (checked and opened in edge.vault.deltas) ---------------------

    def _recipient(self) -> deltas.Recipient:
        return deltas.Recipient(
            self._kiosk_id, self._keys.box_key_id, self._model, self._roster_public
        )

    @_serialised
    def apply_answer(self, answer: RosterAnswer) -> ApplyResult:
        """Check an answer fresh from the cloud (``CloudClient.get_roster``) against the
        nonce its request was signed with, and apply it as ``apply_delta`` does."""
        checked = deltas.check_answer(
            answer.content, self._recipient(), self.version, answer.nonce, answer.status
        )
        return self._apply(checked)

    @_serialised
    def apply_delta(self, raw: bytes) -> ApplyResult:
        """Check a delta that comes with no request (a file, a test) and apply it in one
        transaction, or change nothing. An up-to-date statement is refused here: only
        ``apply_answer`` can tell it is fresh."""
        return self._apply(deltas.check_answer(raw, self._recipient(), self.version))

    def _apply(self, checked: DeltaBody | CurrentBody | WipeBody) -> ApplyResult:
        if isinstance(checked, CurrentBody):
            return ApplyResult(checked.version, checked.version, 0, 0)
        if isinstance(checked, WipeBody):  # revoked: checked for this kiosk and request
            riders, version = self.purge("revoked")
            return ApplyResult(version, 0, 0, riders, wiped=True)
        opened = deltas.open_delta(checked, self._keys.box, self._data_key)
        body = opened.body
        with self._transaction():
            before = self.version
            if opened.new_key is not None:
                self._add_key(*opened.new_key)
            self._set_meta("source", "cloud")
            erased: list[str] = []
            if body.full:
                kept = {row[0] for row in opened.rows}
                held = [pid for (pid,) in self._db.execute("SELECT person_id FROM riders")]
                erased += self._delete_riders(pid for pid in held if pid not in kept)
                self._db.execute("DELETE FROM rider_terms")  # a snapshot brings them all
                self._db.execute("DELETE FROM rider_fleet")
            self._db.executemany(INSERT_ROW, opened.rows)
            self._db.executemany(
                "INSERT OR REPLACE INTO rider_terms (person_id, version, key_id, sealed) "
                "VALUES (?, ?, ?, ?)",
                opened.terms,
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO rider_fleet (person_id, version, open_rentals, "
                "overdue, lost) VALUES (?, ?, ?, ?, ?)",
                opened.fleet,
            )
            erased += self._delete_riders(body.deletions)
            if body.auto_set is not None or body.full:  # a snapshot without one: sets are off
                self._db.execute("DELETE FROM auto_set")
                self._db.executemany(
                    "INSERT INTO auto_set (person_id) VALUES (?)",
                    [(person,) for person in body.auto_set or ()],
                )
                self._set_meta("auto_set", "" if body.auto_set is None else "1")
            self._forget_unused_keys()
            self._bump_version(body.to_version)
            if body.to_version != before:  # its record, owed in the same transaction
                owed.owe(self._db, "roster.applied", from_version=before,
                         to_version=body.to_version, upserts=len(opened.rows),
                         deletions=len(erased))  # fmt: skip
                for person_id in erased:
                    owed.owe(
                        self._db, "roster.erased", person_id=person_id,
                        roster_version=body.to_version,
                    )  # fmt: skip
        if erased or body.full:
            self._scrub_wal()
        return ApplyResult(
            body.from_version,
            body.to_version,
            len(opened.rows),
            len(erased),
            body.full,
            len(opened.terms),
            len(opened.fleet),
            tuple(erased),
            auto_set=None if body.auto_set is None else len(body.auto_set),
        )

    # -- purging (no pull for too long, or a revoked kiosk) ----------------------------------

    @_serialised
    def silent_for(self, now: float | None = None) -> float | None:
        """Seconds since the roster last heard from the cloud (its last successful pull, or
        the last delta applied, whichever is later); None for a roster that never came from
        the cloud (local enrolment), which no silence purges."""
        if self._meta("source") != "cloud":
            return None
        heard = [float(v) for v in (self._meta("pulled_at"), self._meta("changed_at")) if v]
        if not heard:
            return None
        return max(0.0, (time.time() if now is None else now) - max(heard))

    @property
    def purged(self) -> bool:
        """Whether the kiosk purged this roster and has not pulled one since."""
        return self.version == 0 and bool(self._meta("purged_at"))

    @_serialised
    def purge(
        self, reason: Literal["silent", "revoked"], silent_s: float | None = None
    ) -> tuple[int, int]:
        """Delete every rider, their terms and fleet state, and every data key, so the file
        holds no template and no key that would open one (``secure_delete`` overwrites the
        pages; the WAL is scrubbed). The version goes back to 0: the next pull is a full
        snapshot. The time it last heard from the cloud is kept, so a kiosk that purged for
        silence stays out of service until a pull succeeds. ``roster.purged`` (``reason``)
        is owed in the same transaction when anything was held. ``(riders, version)``
        before."""
        with self._transaction():
            version = self.version
            riders = int(self._db.execute("SELECT COUNT(*) FROM riders").fetchone()[0])
            for table in ("riders", "rider_terms", "rider_fleet", "auto_set", "data_keys"):
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed names)
            self._set_meta("version", 0)
            self._set_meta("key_id", "")
            self._set_meta("purged_at", time.time())
            if version or riders:
                extra = {} if silent_s is None else {"silent_s": silent_s}
                owed.owe(self._db, "roster.purged", reason=reason, from_version=version,
                         riders=riders, **extra)  # fmt: skip
        self._data_keys = {}
        self._scrub_wal()
        log.warning("roster.purged", riders=riders, from_version=version)
        return riders, version

    @_serialised
    def record_pull(self, error: str | None) -> None:
        """Remember how a pull from the cloud went, for ``kiosk sync status``."""
        with self._transaction():
            if error is None:
                self._set_meta("pulled_at", time.time())
                self._set_meta("pull_error", "")
            else:
                self._set_meta("pull_error", error[:1000])
                self._set_meta("pull_error_at", time.time())
        self.finish_erasure(wait_s=0.0)  # the sync service finishes a pending erasure

    @_serialised
    def owed_events(self) -> list[OwedEvent]:
        """The events this roster's changes owe the outbox (``edge.vault.owed``)."""
        try:
            return owed.owed(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the roster ({exc})") from None

    @_serialised
    def settle_owed(self, ids: set[str]) -> None:
        """These owed events are in the outbox now (a receipt's rider id leaves the
        roster's files with them: the WAL is copied back at once)."""
        with self._transaction():
            owed.settle(self._db, ids)
        erasure.truncate_wal(self._db, 0.0)

    def close(self) -> None:
        self._db.close()
