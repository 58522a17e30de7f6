"""The encrypted roster store: one SQLite file, every personal byte sealed.

Tables: ``riders`` (person id, version, data-key id, the models its templates use, and the
sealed record), ``data_keys`` (data keys wrapped for this kiosk's X25519 key) and ``meta``
(roster version, encoder model, source, when it changed). Nothing else is stored: no
name, template or entitlement in clear, and SQLite is told to keep temporary data in
memory and to overwrite deleted content (``secure_delete``), with the WAL truncated after
a deletion so a deleted rider's bytes leave the disk at once.

Two sources fill it: signed deltas from the cloud (``apply_answer`` for an answer fresh
from the cloud with the nonce of its request, ``apply_delta`` for a delta's bytes, such as
a file), whose sealed rows are stored exactly as they arrive, and local enrolment in demo
and development use (``enrol``), sealed here under a local data key. The cloud's signed
statement that the roster held is current goes through ``apply_answer`` too: it changes
nothing, but only a genuine one for this very request lets the pull count as a success.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import sqlite_utils
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_sync.errors import IntegrityError
from cloud_sync.private_files import connect_read_only, open_private_db
from cloud_sync.roster_wire import (
    CurrentBody,
    DeltaBody,
    Entitlements,
    RiderRecord,
    RosterAnswer,
    verify_answer,
)
from cloud_sync.sealing import (
    WrappedKey,
    new_data_key,
    open_sealed,
    row_aad,
    seal,
    unwrap_key,
    wrap_key,
)
from edge.vault import erasure
from edge.vault.errors import DeltaError, RosterMissingError, StoreError, VersionGapError
from edge.vault.keys import DeviceKeys
from edge.vault.verify import VerifyReport, verify_rows

log = structlog.get_logger("edge.vault.store")

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


def _create_tables(db: sqlite_utils.Database) -> None:
    for name, (columns, pk) in TABLES.items():
        db.table(name).create(columns, pk=pk, not_null=set(columns), if_not_exists=True)


@dataclass(frozen=True)
class Rider:
    """A rider as the kiosk needs it in memory (never written anywhere)."""

    person_id: str
    version: int
    display_name: str
    entitlements: Entitlements
    claim_hash: str | None
    lookalike: bool = False  # enrolled close to another rider: always confirms a claim

    def __repr__(self) -> str:
        return f"Rider({self.person_id!r}, v{self.version})"


@dataclass
class LoadedRoster:
    """The decrypted roster: riders, and templates grouped by encoder model."""

    version: int
    riders: dict[str, Rider] = field(default_factory=dict)
    templates: dict[str, list[tuple[str, npt.NDArray[np.float32]]]] = field(default_factory=dict)


@dataclass(frozen=True)
class RosterInfo:
    """Counts and versions: nothing personal."""

    path: str
    version: int
    source: str
    riders: int
    templates_by_model: dict[str, int]
    encoder_model: str
    needs_reenrolment: int
    data_key_id: str | None
    changed_at: float | None
    age_s: float | None


@dataclass(frozen=True)
class ApplyResult:
    from_version: int
    to_version: int
    upserts: int
    deletions: int
    full: bool = False


@dataclass(frozen=True)
class PullState:
    """How the last roster pulls from the cloud went (nothing personal)."""

    version: int
    checked_at: float | None  # the last pull that reached the cloud and was not refused
    error: str | None  # the last pull's error, None once a pull succeeds again
    error_at: float | None


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


def _open_read_only(path: Path) -> sqlite3.Connection:
    """An existing roster, for reading only; nothing is created (see ``connect_read_only``)."""
    try:
        db = connect_read_only(path)
    except FileNotFoundError:
        raise RosterMissingError(f"{path}: no roster here ({MISSING_ROSTER_FIX})") from None
    db.isolation_level = None
    names = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not set(TABLES) <= names:
        db.close()
        empty = "an empty file" if path.stat().st_size == 0 else "another kind of database"
        raise StoreError(f"{path}: not a roster ({empty}, no {', '.join(sorted(TABLES))} tables)")
    return db


def check_roster_file(path: Path) -> None:
    """``RosterMissingError`` or ``StoreError`` unless ``path`` is a roster (read-only)."""
    _open_read_only(path).close()


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
        try:
            if read_only:
                self._db = _open_read_only(path)
            else:
                self._db = open_private_db(path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
            for pragma in (
                "synchronous=FULL",
                "secure_delete=ON",
                "temp_store=MEMORY",
                f"busy_timeout={erasure.BUSY_TIMEOUT_MS}",  # kiosk run, kiosk sync run
            ):
                self._db.execute(f"PRAGMA {pragma}")
            check = self._db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StoreError(
                    f"{path}: the roster database is damaged ({check[0] if check else 'no answer'})"
                )
            if not read_only:
                _create_tables(sqlite_utils.Database(self._db))
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"{path}: cannot open the roster database ({exc})") from None
        if not read_only:
            self.finish_erasure(wait_s=0.0)

    # -- metadata ---------------------------------------------------------------------

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

    def _store_key(self, wrapped: WrappedKey) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO data_keys (key_id, wrapped, added_at) VALUES (?, ?, ?)",
            (wrapped.key_id, json.dumps(wrapped.to_dict()), time.time()),
        )

    def _forget_unused_keys(self) -> None:
        current = self._meta("key_id")
        self._db.execute(
            "DELETE FROM data_keys WHERE key_id != ? AND key_id NOT IN (SELECT DISTINCT key_id FROM riders)",
            (current,),
        )
        self._data_keys = {k: v for k, v in self._data_keys.items() if k == current}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
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

    def pending_erasure(self) -> float | None:
        """When a deletion started waiting for its bytes to leave the disk, or None."""
        return erasure.pending_since(self._db)

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

    def load(self) -> LoadedRoster:
        """Decrypt every row into memory."""
        loaded = LoadedRoster(version=self.version)
        rows = self._db.execute(
            "SELECT person_id, version, key_id, sealed FROM riders ORDER BY person_id"
        )
        for person_id, version, data_key_id, sealed in rows:
            record = self._open_row(person_id, version, data_key_id, sealed)
            loaded.riders[person_id] = Rider(
                person_id,
                version,
                record.display_name,
                record.entitlements,
                record.claim_hash,
                record.lookalike,
            )
            for template in record.templates:
                loaded.templates.setdefault(template.model, []).append((person_id, template.vector))
        if not self.read_only:
            self.finish_erasure(wait_s=0.0)  # the running kiosk finishes a pending erasure
        return loaded

    def verify(self) -> VerifyReport:
        """Check every row (nothing is written): how many, and each damaged one by rider."""
        held = [str(kid) for (kid,) in self._db.execute("SELECT key_id FROM data_keys")]
        return verify_rows(self._db, self._data_key, held)

    # -- local enrolment ------------------------------------------------------------------

    def _local_key(self) -> str:
        current = self._meta("key_id")
        if current and self._meta("source") == "local":
            return current
        data_key = new_data_key()
        wrapped = wrap_key(data_key, self._keys.box.public_key())
        self._store_key(wrapped)
        self._data_keys[wrapped.key_id] = data_key
        self._set_meta("key_id", wrapped.key_id)
        self._set_meta("source", "local")
        return wrapped.key_id

    def enrol(self, person_id: str, record: RiderRecord) -> int:
        """Add or replace a rider locally; returns the rider's new version."""
        with self._transaction():
            data_key_id = self._local_key()
            row = self._db.execute(
                "SELECT version FROM riders WHERE person_id = ?", (person_id,)
            ).fetchone()
            version = (int(row[0]) + 1) if row else 1
            self._write_row(person_id, version, data_key_id, record)
            self._bump_version(self.version + 1)
        return version

    def _write_row(
        self, person_id: str, version: int, data_key_id: str, record: RiderRecord
    ) -> None:
        sealed = seal(
            self._data_key(data_key_id), record.to_bytes(), row_aad(person_id, version, data_key_id)
        )
        models = ",".join(sorted({template.model for template in record.templates}))
        self._db.execute(
            "INSERT OR REPLACE INTO riders (person_id, version, key_id, models, sealed) VALUES (?, ?, ?, ?, ?)",
            (person_id, version, data_key_id, models, sealed),
        )

    def _bump_version(self, version: int) -> None:
        self._set_meta("version", version)
        self._set_meta("model", self._model)
        self._set_meta("changed_at", time.time())

    def delete(self, person_id: str) -> bool:
        """Remove a rider locally, leaving none of their bytes in the file or its WAL."""
        with self._transaction():
            gone = (
                self._db.execute("DELETE FROM riders WHERE person_id = ?", (person_id,)).rowcount
                > 0
            )
            if gone:
                self._bump_version(self.version + 1)
        if gone:
            self._scrub_wal()
        return gone

    def rotate_key(self) -> str:
        """Re-seal every row under a new local data key and forget the old one."""
        rows = self._db.execute("SELECT person_id, version, key_id, sealed FROM riders").fetchall()
        records = [
            (pid, ver, self._open_row(pid, ver, kid, sealed)) for pid, ver, kid, sealed in rows
        ]
        data_key = new_data_key()
        wrapped = wrap_key(data_key, self._keys.box.public_key())
        with self._transaction():
            self._store_key(wrapped)
            self._data_keys[wrapped.key_id] = data_key
            self._set_meta("key_id", wrapped.key_id)
            self._set_meta("source", "local")
            for person_id, version, record in records:
                self._write_row(person_id, version + 1, wrapped.key_id, record)
            self._forget_unused_keys()
            self._bump_version(self.version + 1)
        self._scrub_wal()
        return wrapped.key_id

    # -- deltas from the cloud ----------------------------------------------------------------

    def check_answer(
        self, raw: bytes, nonce: str | None = None, status: int | None = None
    ) -> DeltaBody | CurrentBody:
        """Every check the cloud's answer must pass before anything is applied.

        ``nonce`` is the nonce of the signed request the answer is for. With it, a delta
        must carry that nonce and an up-to-date statement must too; without it (a delta
        read from a file), a delta is checked as before and a statement is refused, since
        nothing shows it is fresh. ``status`` is the answer's HTTP status, named in the
        error when the answer is empty.
        """
        if self._roster_public is None:
            raise DeltaError("no cloud roster key is pinned on this kiosk (run `kiosk provision`)")
        if not raw:
            raise DeltaError(
                f"the cloud's roster answer is empty{f' (HTTP {status})' if status else ''}: "
                "an unsigned 'up to date' is not accepted (a cloud older than this kiosk, "
                "or something on the path answering in its place); the roster held is kept"
            )
        try:
            body = verify_answer(raw, self._roster_public)
        except IntegrityError as exc:
            raise DeltaError(str(exc)) from None
        if isinstance(body, CurrentBody):
            return self._check_current(body, nonce)
        if body.kiosk_id != self._kiosk_id or body.recipient != self._keys.box_key_id:
            raise DeltaError(
                f"roster delta is for another kiosk ({body.kiosk_id}, key {body.recipient})"
            )
        if body.model != self._model:
            raise DeltaError(
                f"roster delta uses encoder model {body.model!r}; this kiosk runs {self._model!r}"
            )
        current = self.version
        if body.to_version <= current:
            raise DeltaError(
                f"roster delta to version {body.to_version} is not newer than version {current} (replayed?)"
            )
        if not body.full and body.from_version != current:
            raise VersionGapError(
                f"roster delta starts at version {body.from_version} but this kiosk holds {current}: a full snapshot is needed"
            )
        if nonce is not None and body.nonce != nonce:
            raise DeltaError(
                "roster delta was not made for this request "
                f"({'it carries no nonce' if body.nonce is None else 'another nonce'}): "
                "replayed, or from a cloud older than this kiosk"
            )
        return body

    def _check_current(self, body: CurrentBody, nonce: str | None) -> CurrentBody:
        if body.kiosk_id != self._kiosk_id:
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
        current = self.version
        if body.version != current:
            raise DeltaError(
                f"roster up-to-date statement names version {body.version} but this kiosk "
                f"holds {current}"
            )
        return body

    def apply_answer(self, answer: RosterAnswer) -> ApplyResult:
        """Check an answer fresh from the cloud (``CloudClient.get_roster``) against the
        nonce its request was signed with, and apply it as ``apply_delta`` does."""
        return self._apply(self.check_answer(answer.content, answer.nonce, answer.status))

    def apply_delta(self, raw: bytes) -> ApplyResult:
        """Check a delta that comes with no request (a file, a test) and apply it in one
        transaction, or change nothing. An up-to-date statement is refused here: only
        ``apply_answer`` can tell it is fresh."""
        return self._apply(self.check_answer(raw))

    def _apply(self, checked: DeltaBody | CurrentBody) -> ApplyResult:
        if isinstance(checked, CurrentBody):
            return ApplyResult(checked.version, checked.version, 0, 0)
        body = checked
        keys: dict[str, bytes] = {}
        wrapped: WrappedKey | None = None
        if body.data_key is not None:
            try:
                wrapped = WrappedKey.from_dict(body.data_key.model_dump())
                keys[wrapped.key_id] = unwrap_key(wrapped, self._keys.box)
            except IntegrityError as exc:
                raise DeltaError(f"roster delta's data key cannot be opened: {exc}") from None
        rows = []
        for row in body.upserts:
            data_key = keys.get(row.key_id)
            if data_key is None:
                try:
                    data_key = self._data_key(row.key_id)
                except StoreError:
                    raise DeltaError(
                        f"row {row.person_id} is sealed with unknown data key {row.key_id}"
                    ) from None
            try:
                blob = row.blob()
                record = RiderRecord.from_bytes(
                    open_sealed(data_key, blob, row_aad(row.person_id, row.version, row.key_id))
                )
            except IntegrityError as exc:
                raise DeltaError(f"row {row.person_id} fails its integrity check: {exc}") from None
            models = ",".join(sorted({template.model for template in record.templates}))
            rows.append((row.person_id, row.version, row.key_id, models, blob))
        with self._transaction():
            if wrapped is not None:
                self._store_key(wrapped)
                self._data_keys[wrapped.key_id] = keys[wrapped.key_id]
                self._set_meta("key_id", wrapped.key_id)
            self._set_meta("source", "cloud")
            deleted = 0
            if body.full:
                kept = {row[0] for row in rows}
                existing = [pid for (pid,) in self._db.execute("SELECT person_id FROM riders")]
                for person_id in existing:
                    if person_id not in kept:
                        deleted += self._db.execute(
                            "DELETE FROM riders WHERE person_id = ?", (person_id,)
                        ).rowcount
            self._db.executemany(
                "INSERT OR REPLACE INTO riders (person_id, version, key_id, models, sealed) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            for person_id in body.deletions:
                deleted += self._db.execute(
                    "DELETE FROM riders WHERE person_id = ?", (person_id,)
                ).rowcount
            self._forget_unused_keys()
            self._bump_version(body.to_version)
        if deleted or body.full:
            self._scrub_wal()
        return ApplyResult(body.from_version, body.to_version, len(rows), deleted, body.full)

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

    def close(self) -> None:
        self._db.close()
