"""The cloud API's database: SQLite by default, PostgreSQL for ``postgresql://`` URLs.

Both speak the same SQL (written with ``?`` placeholders; PostgreSQL gets ``%s``), through
one small interface: ``Database.transaction()`` yields a ``Tx`` whose work commits
together or not at all. Differences stay here:

- SQLite: one connection, one writer (a lock and ``BEGIN IMMEDIATE``), WAL with
  ``synchronous=FULL``, so an acknowledged batch survives a power cut;
- PostgreSQL: a psycopg 3 connection pool; ``Tx.lock(key)`` takes a transaction-scoped
  advisory lock, which is how several API processes on one database serialise the work
  of one kiosk or one powerbank (SQLite needs no such lock: it has one writer).

sqlite3 and psycopg errors are translated into ``StoreError`` here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg
import psycopg_pool

from cloud_sync.errors import StoreError

Dialect = Literal["sqlite", "postgres"]


class ConflictError(StoreError):
    """A unique constraint refused a row (a concurrent writer stored it first)."""


class Tx(Protocol):
    dialect: Dialect

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None: ...

    def lock(self, key: str) -> None: ...

    def lock_many(self, keys: Sequence[str]) -> None: ...

    def insert_many(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
        on_conflict: str = "",
    ) -> None: ...

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]: ...


class Database(Protocol):
    dialect: Dialect
    url: str

    def transaction(self) -> AbstractContextManager[Tx]: ...

    def close(self) -> None: ...


# -- SQLite ---------------------------------------------------------------------------------


class _SqliteTx:
    dialect: Dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, params).rowcount

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, params)

    def lock(self, key: str) -> None:
        """Nothing to do: SQLite has one writer."""

    def lock_many(self, keys: Sequence[str]) -> None:
        """Nothing to do: SQLite has one writer."""

    def insert_many(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
        on_conflict: str = "",
    ) -> None:
        """Insert ``rows``; ``columns`` are ``(name, PostgreSQL type)`` pairs."""
        names = ", ".join(name for name, _ in columns)
        marks = ", ".join("?" * len(columns))
        self._db.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({marks}) {on_conflict}",  # noqa: S608
            rows,
        )

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({','.join('?' * len(values))})", list(values)


class SqliteDatabase:
    dialect: Dialect = "sqlite"

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(url.removeprefix("sqlite:///"))
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the database ({exc})") from None

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTx]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: database busy ({exc})") from None
            try:
                yield _SqliteTx(self._db)
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError):
                    raise ConflictError(str(exc)) from None
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{self.path}: {exc}") from None
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- PostgreSQL ------------------------------------------------------------------------------

_PG_SQL: dict[str, str] = {}


def _pg(sql: str) -> str:
    converted = _PG_SQL.get(sql)
    if converted is None:
        converted = _PG_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return converted


class _PgTx:
    dialect: Dialect = "postgres"

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cur = cursor

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(_pg(sql), params)
        return self._cur.fetchall() if self._cur.description else []

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(_pg(sql), params)
        return self._cur.rowcount

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        if params:
            self._cur.executemany(_pg(sql), params)

    def lock(self, key: str) -> None:
        """A transaction-scoped advisory lock on ``key`` (released at commit or rollback)."""
        self._cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])

    def lock_many(self, keys: Sequence[str]) -> None:
        """Advisory locks on ``keys``, taken in the given order, in one round trip."""
        if keys:
            self._cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                "FROM unnest(%s::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
                [list(keys)],
            )

    def insert_many(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
        on_conflict: str = "",
    ) -> None:
        """One ``INSERT ... SELECT FROM unnest(arrays)``: one round trip for any row count."""
        if not rows:
            return
        names = ", ".join(name for name, _ in columns)
        arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)  # binary: no escaping
        values = [list(column) for column in zip(*rows, strict=True)]
        self._cur.execute(
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {on_conflict}",  # noqa: S608
            values,
        )

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]


class PostgresDatabase:
    dialect: Dialect = "postgres"

    def __init__(self, url: str, pool_size: int = 8) -> None:
        self.url = url
        try:
            self._pool = psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                open=True,
                timeout=10,
                kwargs={"autocommit": False},
            )
            self._pool.wait(timeout=10)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StoreError(f"cannot connect to PostgreSQL ({_short(exc)})") from None

    @contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield _PgTx(cur)
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(_short(exc)) from None
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StoreError(f"PostgreSQL: {_short(exc)}") from None

    def close(self) -> None:
        self._pool.close()


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def open_database(url: str, pool_size: int = 8) -> SqliteDatabase | PostgresDatabase:
    """The database behind ``url`` (not yet migrated: see ``migrations.migrate``)."""
    if url.startswith("sqlite:///"):
        return SqliteDatabase(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, pool_size)
    raise StoreError(f"unsupported database URL {url.split(':', 1)[0]}:// (sqlite or postgresql)")
