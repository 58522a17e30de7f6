"""The cloud API's database: SQLite by default, PostgreSQL for ``postgresql://`` URLs.

Both speak the same SQL (written with ``?`` placeholders; PostgreSQL gets ``%s``), through
one small interface: ``Database.transaction()`` yields a ``Tx`` whose work commits
together or not at all. Differences stay here:

- SQLite: one connection, one writer (a lock and ``BEGIN IMMEDIATE``), WAL with
  ``synchronous=FULL``, so an acknowledged batch survives a power cut;
- PostgreSQL: a psycopg 3 connection pool; ``Tx.lock(key)`` takes a transaction-scoped
  advisory lock, which is how several API processes on one database serialise the work
  of one kiosk or one powerbank (SQLite needs no such lock: it has one writer). Locks and
  inserts wait and travel in one pipeline with the next statement that answers, so a
  transaction costs few round trips (see ``_PgTx``).

sqlite3 and psycopg errors are translated here, by whose fault they are: ``StoreError``
for the database's health (unreachable, busy, disk: the API answers 503, retry), a
``ConflictError`` for a row a concurrent writer stored first (503, send again),
``StoreDataError`` for a value the database refuses (answered 4xx: sending it again cannot
help) and ``StoreFaultError`` for a statement it refuses (a defect here: 500).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg
import psycopg_pool
from psycopg.types.array import ListBinaryDumper

from cloud_sync.errors import ConfigError, InputError, StoreError
from cloud_sync.private_files import open_private_db

Dialect = Literal["sqlite", "postgres"]


class ConflictError(StoreError):
    """A unique constraint refused a row (a concurrent writer stored it first)."""


class StoreDataError(StoreError, InputError):
    """The database refused a value of the request (NUL in text, an integer past int64, a
    constraint other than uniqueness): the request's fault, which no retry mends; on the
    command line an ``InputError`` (exit 4), like any other value that cannot be used."""


class StoreFaultError(StoreError):
    """The database refused a statement itself (bad SQL, an unsupported feature): a defect
    of this program, neither the request's fault nor an outage."""


#: Python errors the database drivers raise while binding a request's values.
_VALUE_ERRORS = (UnicodeError, OverflowError)


class Tx(Protocol):
    dialect: Dialect

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def rows_each(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]: ...

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

    def rows_each(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]:
        """The rows of each statement, run in order."""
        return [self._db.execute(sql, params).fetchall() for sql, params in statements]

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
            self._db = open_private_db(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            # what an erasure or a pseudonym replaces is overwritten, not left in free pages
            self._db.execute("PRAGMA secure_delete=ON")
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
                if isinstance(exc, sqlite3.IntegrityError) and _sqlite_unique(exc):
                    raise ConflictError(str(exc)) from None
                if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, *_VALUE_ERRORS)):
                    raise StoreDataError(f"the database refuses a value ({exc})") from None
                if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
                    raise StoreFaultError(f"{self.path}: {exc}") from None
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{self.path}: {exc}") from None
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- PostgreSQL ------------------------------------------------------------------------------

_PG_SQL: dict[str, str] = {}


class _BinaryList(list[Any]):
    """A list sent as a binary array (psycopg's default for ``%s`` is the slower text)."""


psycopg.adapters.register_dumper(_BinaryList, ListBinaryDumper)


def _pg(sql: str) -> str:
    converted = _PG_SQL.get(sql)
    if converted is None:
        converted = _PG_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return converted


class _PgTx:
    """A transaction on one pooled connection, in as few round trips as the work allows.

    Statements that answer nothing (``lock``, ``lock_many``, ``insert_many``) are queued and
    sent together with the next statement that answers (``rows``, ``run``, ``many``) or
    with the commit, in one pipeline. The server runs them in the order they were queued,
    so a lock is still held before the statement it guards starts (and takes its snapshot);
    an error in a queued statement is raised by the call that sent it, still inside the
    transaction, which then rolls back as a whole.
    """

    dialect: Dialect = "postgres"

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._conn = connection
        self._cur = connection.cursor()  # the answering statements
        self._side = connection.cursor()  # the queued ones
        self._queued: list[tuple[str, Sequence[Any]]] = []
        self._begun = False

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._send(_pg(sql), params)
        return self._cur.fetchall() if self._cur.description else []

    def rows_each(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]:
        """The rows of each statement, run in order, all in one round trip."""
        cursors = [self._conn.cursor() for _ in statements]
        queued, self._queued = self._queued, []
        self._begun = True
        with self._conn.pipeline():
            for queued_sql, queued_params in queued:
                self._side.execute(queued_sql, queued_params)
            for cursor, (sql, params) in zip(cursors, statements, strict=True):
                cursor.execute(_pg(sql), params)
        answers = [cursor.fetchall() if cursor.description else [] for cursor in cursors]
        for cursor in cursors:
            cursor.close()
        return answers

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._send(_pg(sql), params)
        return self._cur.rowcount

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        if params:
            self.flush()
            self._begun = True
            self._cur.executemany(_pg(sql), params)

    def lock(self, key: str) -> None:
        """A transaction-scoped advisory lock on ``key`` (released at commit or rollback)."""
        self._queued.append(("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key]))

    def lock_many(self, keys: Sequence[str]) -> None:
        """Advisory locks on ``keys``, taken in the given order, by one statement."""
        if keys:
            self._queued.append(
                (
                    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                    "FROM unnest(%b::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
                    [list(keys)],
                )
            )

    def insert_many(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
        on_conflict: str = "",
    ) -> None:
        """One ``INSERT ... SELECT FROM unnest(arrays)`` for any row count (queued)."""
        if not rows:
            return
        names = ", ".join(name for name, _ in columns)
        arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)  # binary: no escaping
        values = [list(column) for column in zip(*rows, strict=True)]
        self._queued.append(
            (
                f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {on_conflict}",  # noqa: S608
                values,
            )
        )

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [_BinaryList(values)]

    def flush(self) -> None:
        """Send the queued statements now (one round trip), if there are any."""
        if self._queued:
            last = self._queued.pop()
            self._send(*last)  # sends the others first, then this one

    def _send(self, sql: str, params: Sequence[Any]) -> None:
        """Run ``sql`` after the queued statements; its answer is left on ``self._cur``.

        The first statement of the transaction goes in a pipeline even when nothing is
        queued, so that the ``BEGIN`` psycopg sends first travels with it.
        """
        if not self._queued and self._begun:
            self._cur.execute(sql, params)
            return
        queued, self._queued = self._queued, []
        self._begun = True
        with self._conn.pipeline():  # its end sends everything and reads every answer
            for queued_sql, queued_params in queued:
                self._side.execute(queued_sql, queued_params)
            self._cur.execute(sql, params)


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
            # The connection block commits on success and rolls back on any exception;
            # without a psycopg transaction block the BEGIN needs no round trip of its own.
            with self._pool.connection() as conn:
                tx = _PgTx(conn)
                yield tx
                tx.flush()
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(_short(exc)) from None
        except (psycopg.DataError, psycopg.IntegrityError, *_VALUE_ERRORS) as exc:
            raise StoreDataError(f"the database refuses a value ({_short(exc)})") from None
        except (psycopg.ProgrammingError, psycopg.NotSupportedError) as exc:
            raise StoreFaultError(f"PostgreSQL: {_short(exc)}") from None
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StoreError(f"PostgreSQL: {_short(exc)}") from None

    def close(self) -> None:
        self._pool.close()


def _sqlite_unique(exc: sqlite3.IntegrityError) -> bool:
    return getattr(exc, "sqlite_errorname", "") in (
        "SQLITE_CONSTRAINT_UNIQUE",
        "SQLITE_CONSTRAINT_PRIMARYKEY",
    )


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def require_database(url: str) -> None:
    """``ConfigError`` naming the fix when ``url`` is a SQLite file that does not exist: a
    command that only reads must not make one (nor its folder) from a mistyped URL."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ConfigError(
                f"{path}: no cloud database here (check KIOSK_CLOUD_DATABASE_URL or "
                "--database-url; `kiosk-cloud migrate` or `kiosk-cloud serve` makes one)"
            )


def quiet_pool_logs() -> None:
    """For a command line: the pool's own warnings (one per failed connection attempt) are
    not shown; the ``StoreError`` it ends in says what failed, in one line."""
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def open_database(url: str, pool_size: int = 8) -> SqliteDatabase | PostgresDatabase:
    """The database behind ``url`` (not yet migrated: see ``migrations.migrate``)."""
    if url.startswith("sqlite:///"):
        return SqliteDatabase(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, pool_size)
    raise StoreError(f"unsupported database URL {url.split(':', 1)[0]}:// (sqlite or postgresql)")
