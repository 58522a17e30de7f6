"""``kiosk roster verify``: check every rider row, and say whose row is damaged and how.

The rider's id is stored in clear (it is the row's key), so every finding names it, or the
row's SQLite rowid when the id itself is missing or not text. Every row is checked, also
after a damaged one. A sealed record that does not authenticate is opened again with each
one of its clear fields (id, version, data-key id) replaced by the other values it could
have had, to tell which of them was changed; when none fits, the nonce, ciphertext or tag
was altered (AES-GCM cannot tell those apart).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cloud_sync.errors import IntegrityError
from cloud_sync.roster_wire import RiderRecord
from cloud_sync.sealing import NONCE_BYTES, open_sealed, row_aad
from edge.vault.errors import StoreError

COLUMNS: dict[str, type] = {
    "person_id": str,
    "version": int,
    "key_id": str,
    "models": str,
    "sealed": bytes,
}
SQLITE_TYPE = {str: "text", int: "integer", bytes: "blob"}
#: Versions tried when looking for the one a row was sealed with.
VERSIONS_TRIED = 64


@dataclass(frozen=True)
class Damage:
    """One damaged row: whose, what kind of damage, and the detail."""

    rider: str
    kind: str
    detail: str

    def line(self) -> str:
        return f"rider {self.rider}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class VerifyReport:
    rows: int
    damaged: tuple[Damage, ...]


KeyOf = Callable[[str], bytes]  # the data key of a key id; StoreError when not held


def verify_rows(db: sqlite3.Connection, key_of: KeyOf, held: Iterable[str]) -> VerifyReport:
    """Check every row of ``riders``; nothing is written."""
    present = [row[1] for row in db.execute("PRAGMA table_info(riders)")]
    if not present:
        return VerifyReport(0, (Damage("-", "no riders table", "this is not a roster"),))
    missing = [name for name in COLUMNS if name not in present]
    shown = ", ".join(f"{name}" for name in present)
    rows = db.execute(f"SELECT rowid, {shown} FROM riders ORDER BY rowid").fetchall()  # noqa: S608
    ids = [row[1 + present.index("person_id")] for row in rows] if "person_id" in present else []
    others = [pid for pid in ids if isinstance(pid, str)]
    damaged: list[Damage] = []
    for raw in rows:
        values = dict(zip(present, raw[1:], strict=True))
        pid = values.get("person_id")
        name = pid if isinstance(pid, str) and pid else f"at rowid {raw[0]}"
        if missing:
            damaged.append(Damage(name, "missing column", f"no {', '.join(missing)} column"))
            continue
        found = _check_row(values, key_of, list(held), others)
        if found is not None:
            damaged.append(Damage(name, *found))
    return VerifyReport(len(rows), tuple(damaged))


def _check_row(
    values: dict[str, object], key_of: KeyOf, held: list[str], others: list[str]
) -> tuple[str, str] | None:
    for column, kind in COLUMNS.items():
        value = values[column]
        if value is None:
            return "null value", f"{column} is NULL"
        if not isinstance(value, kind) or isinstance(value, bool):
            return (
                "wrong type",
                f"{column} holds {type(value).__name__} {_short(value)}, not {SQLITE_TYPE[kind]}",
            )
    pid, version, kid = str(values["person_id"]), int(values["version"]), str(values["key_id"])  # type: ignore[call-overload]
    sealed = bytes(values["sealed"])  # type: ignore[call-overload]
    if not pid:
        return "empty id", "person_id is empty"
    if len(sealed) < NONCE_BYTES + 16:
        return "truncated", f"sealed record is {len(sealed)} bytes, shorter than nonce and tag"
    try:
        key = key_of(kid)
    except StoreError as exc:
        moved = _opens_with(sealed, key_of, [(pid, version, other) for other in held])
        if moved is not None:
            return (
                "key_id changed",
                f"the row says key_id {kid}, but it was sealed under {moved[2]}",
            )
        return "unknown data key", f"key_id {kid}: {_reason(exc)}"
    try:
        plain = open_sealed(key, sealed, row_aad(pid, version, kid))
    except IntegrityError:
        return _why_not(pid, version, kid, sealed, key_of, held, others)
    try:
        record = RiderRecord.from_bytes(plain)
    except (IntegrityError, ValueError) as exc:
        return "unreadable record", f"the sealed record opens but is not a rider record ({exc})"
    models = ",".join(sorted({template.model for template in record.templates}))
    if models != values["models"]:
        return "models column", f"models says {values['models']!r}, the record holds {models!r}"
    return None


def _why_not(
    pid: str,
    version: int,
    kid: str,
    sealed: bytes,
    key_of: KeyOf,
    held: list[str],
    others: list[str],
) -> tuple[str, str]:
    """Which clear field was changed, when the sealed record opens with another value."""
    tries: list[tuple[str, list[tuple[str, int, str]]]] = [
        ("version changed", [(pid, v, kid) for v in range(1, VERSIONS_TRIED) if v != version]),
        ("key_id changed", [(pid, version, k) for k in held if k != kid]),
        ("id changed", [(p, version, kid) for p in others if p != pid]),
    ]
    for kind, candidates in tries:
        found = _opens_with(sealed, key_of, candidates)
        if found is not None:
            said = {
                "version changed": f"the row says version {version}, but it was sealed as "
                f"version {found[1]}",
                "key_id changed": f"the row says key_id {kid}, but it was sealed under {found[2]}",
                "id changed": f"the row's id was changed: it was sealed for rider {found[0]}",
            }
            return kind, said[kind]
    return (
        "fails authentication",
        "the sealed record does not open with this row's id, version and key_id: its nonce, "
        "ciphertext or tag was altered, or its id was changed",
    )


def _opens_with(
    sealed: bytes, key_of: KeyOf, candidates: list[tuple[str, int, str]]
) -> tuple[str, int, str] | None:
    for pid, version, kid in candidates:
        try:
            open_sealed(key_of(kid), sealed, row_aad(pid, version, kid))
        except (IntegrityError, StoreError):
            continue
        return pid, version, kid
    return None


def _reason(exc: StoreError) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
