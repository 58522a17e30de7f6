"""Files and folders only their owner can read, whatever the umask, and read-only SQLite.

Everything the kiosk and the cloud write (databases and their ``-wal``/``-shm``/``-journal``
side files, keys, runtime state) holds riders' ids, events or secrets. So:

- every entry point (``kiosk``, ``kiosk-cloud``) sets ``umask`` 077 first (``private_umask``),
  which covers files that libraries create;
- where the product creates a file or folder itself it says so explicitly: folders it makes
  are 0700 (``private_dir``), files 0600 (``private_file``, ``write_private``). A SQLite
  database created here as an empty 0600 file before SQLite opens it gives its side files
  the same mode, since SQLite copies the database's mode onto them.

Folders that exist already (``/tmp``, a folder a person made) keep their mode: only what
the product makes is narrowed.

``connect_read_only`` opens an existing database for commands that only read: it never
creates the file, never writes, and leaves behind no side file it made; ``not_holding``
says why an existing file is not the database a command expects (empty, not SQLite,
damaged, another kind), read-only too.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Collection, Iterator
from pathlib import Path
from urllib.parse import quote

from cloud_sync.files import write_atomic

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_umask() -> int:
    """Take group and other bits out of the process's umask; returns the previous umask."""
    previous = os.umask(PRIVATE_UMASK)
    os.umask(previous | PRIVATE_UMASK)
    return previous


@contextlib.contextmanager
def private_umask_for_call() -> Iterator[None]:
    """``private_umask`` for the duration of a block (a command run in a test process)."""
    previous = private_umask()
    try:
        yield
    finally:
        os.umask(previous)


def private_dir(path: Path) -> Path:
    """Make ``path`` and any missing parent, each new one 0700; existing folders are kept."""
    missing: list[Path] = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it first
            continue
        folder.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> bool:
    """Make ``path`` an empty 0600 file (its folder private, see ``private_dir``) unless it
    exists; an existing file of ours that group or others can read is narrowed to 0600.

    Returns True when the file was created here.
    """
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        narrow(path)
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def narrow(path: Path) -> None:
    """Take group and other bits off a file this user owns (anything else is left alone)."""
    with contextlib.suppress(OSError):
        info = path.stat()
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            path.chmod(info.st_mode & 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably, mode 0600 (``files``)."""
    private_dir(path.parent)
    write_atomic(path, data, FILE_MODE)


def open_private_db(path: Path, **options: float | bool | None) -> sqlite3.Connection:
    """``sqlite3.connect`` on ``path`` after making it a private file (see ``private_file``),
    so the database and every side file SQLite makes beside it are 0600."""
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        narrow(path.with_name(path.name + suffix))
    return sqlite3.connect(path, **options)  # type: ignore[arg-type]


def connect_read_only(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """Open the existing database at ``path`` for reading only.

    ``FileNotFoundError`` when it does not exist (nothing is created). A database in WAL
    mode that no other process has open has no ``-wal``/``-shm`` files; a ``mode=ro``
    connection would create them and leave them behind, so it is opened ``mode=rw`` with
    ``query_only`` instead, and SQLite removes them again when it closes. When another
    process has it open (the side files exist), or this user may not write the file, it is
    opened ``mode=ro``.
    """
    if not path.is_file():
        raise FileNotFoundError(path)
    uri = f"file:{quote(str(path.resolve()))}"
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() and os.access(path, os.W_OK):
        db = sqlite3.connect(f"{uri}?mode=rw", uri=True, timeout=timeout, check_same_thread=False)
        db.execute("PRAGMA query_only=ON")
        return db
    return sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, check_same_thread=False)


def not_holding(path: Path, tables: Collection[str]) -> str | None:
    """Why the existing file at ``path`` is not a database with ``tables`` (an empty file,
    not an SQLite database, damaged, another kind of database), or None when it is one.

    Reads only (``connect_read_only``); ``FileNotFoundError`` when there is no file.
    """
    if not path.is_file():
        raise FileNotFoundError(path)
    if path.stat().st_size == 0:
        return "an empty file"
    try:
        db = connect_read_only(path)
        try:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
            check = db.execute("PRAGMA quick_check").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            return "not an SQLite database"
        return f"a damaged database: {exc}"
    if not set(tables) <= {name for (name,) in rows}:
        return "another kind of database"
    if check is None or check[0] != "ok":
        return f"a damaged database: {check[0] if check else 'no answer'}"
    return None


def foreign_table(connection: sqlite3.Connection, table: str) -> str | None:
    """The name of a table of another kind of database, when the one open on
    ``connection`` holds tables but not ``table``; None when it is empty or has ``table``.
    A writer asks this before it creates its own tables, so that a roster, an outbox or a
    slot database given in another's place is never written into."""
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    names = [name for (name,) in rows if not name.startswith("sqlite_")]
    return names[0] if names and table not in names else None
