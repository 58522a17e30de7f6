"""Validators for settings that name a file or a folder on the kiosk.

A path setting is checked when the settings load, so a bad one stops every command at
start (exit 3, naming the setting) instead of failing later: a relative path means a
different place for the service (which runs in ``/``) and for a technician's shell; a
CA bundle, certificate or operating-points file that is missing, a folder, a pipe or a
device would fail, or block for ever on a pipe, in the middle of a run; a folder setting
that names a file would fail at the first write.
"""

from __future__ import annotations

import stat
from pathlib import Path


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _absolute(value: Path) -> None:
    if not value.is_absolute():
        raise ValueError(
            f"must be an absolute path ({value} would depend on the folder a command is "
            "started from)"
        )


def input_file(value: Path | None) -> Path | None:
    """A file the kiosk reads: absolute, present and a regular file."""
    if value is None:
        return None
    _absolute(value)
    try:
        mode = value.stat().st_mode
    except FileNotFoundError:
        raise ValueError(f"{value}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{value}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{value} is {_kind(mode)}, not a file")
    return value


def not_special(value: Path) -> Path:
    """A file the program reads or makes (a database, a key): when it exists, a regular
    file, never a folder, a pipe (read for ever) or a device."""
    try:
        mode = value.stat().st_mode
    except OSError:
        return value  # made, or reported, by the command that needs it
    if not stat.S_ISREG(mode):
        raise ValueError(f"{value} is {_kind(mode)}, not a file")
    return value


def program_file(value: Path) -> Path:
    """A program the kiosk runs: absolute, and when present not a folder, pipe or device."""
    _absolute(value)
    try:
        mode = value.stat().st_mode
    except OSError:
        return value  # checked when the command that runs it starts
    if not stat.S_ISREG(mode):
        raise ValueError(f"{value} is {_kind(mode)}, not a program")
    return value


def folder(value: Path | None) -> Path | None:
    """A folder the kiosk keeps files in: absolute, and a folder when it exists already
    (a missing one is made by the command that needs it)."""
    if value is None:
        return None
    _absolute(value)
    try:
        mode = value.stat().st_mode
    except OSError:
        return value
    if not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else _kind(mode)
        raise ValueError(f"{value} is {kind}, not a folder")
    return value
