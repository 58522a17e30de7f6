"""Exit codes of the ``kiosk`` and ``kiosk-cloud`` commands, one per error root.

A command's table is a tuple of ``ExitCode`` rows; the first row whose error class matches
wins, so narrower classes come first. The rows both commands share are here; the kiosk adds
its own (``edge.cli.exits``). The README prints the kiosk's table; a test keeps the two in
step, and the cloud's codes are the same numbers for the same errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloud_sync.errors import ConfigError, InputError, KioskError, RosterError, SyncError
from models.errors import ModelError

OK = 0
UNEXPECTED = 1
USAGE = 2
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


@dataclass(frozen=True)
class ExitCode:
    code: int
    error: type[BaseException]
    meaning: str


# ``kiosk-cloud``: settings, input, the face encoder (riders add), the database and keys. The
# kiosk's table (``edge.cli.exits``) gives the same errors the same codes.
CLOUD_EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(3, ConfigError, "the settings or a setting is invalid"),
    ExitCode(4, InputError, "a file, folder or value given on the command line cannot be used"),
    ExitCode(5, ModelError, "a face model file is missing or does not match the manifest"),
    ExitCode(7, SyncError, "the database, a key file or the roster failed"),
    ExitCode(7, RosterError, "the database, a key file or the roster failed"),
    ExitCode(1, KioskError, "the command failed"),
)


def exit_code_for(error: BaseException, table: Sequence[ExitCode]) -> int:
    """The code of the first row of ``table`` that ``error`` is an instance of."""
    for row in table:
        if isinstance(error, row.error):
            return row.code
    return UNEXPECTED
