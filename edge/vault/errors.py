"""Errors of the encrypted roster, all under ``edge.errors.EdgeError``.

::

    RosterError
    ├── KeyFileError (PermissionError)   a key file is missing, unreadable or too open
    ├── SealError (ValueError)           a sealed blob fails authentication
    ├── DeltaError (ValueError)          a roster delta is refused (signature, recipient,
    │                                    version, model); the roster kept is the old one
    │   └── VersionGapError              the delta does not follow the roster held: ask for
    │                                    a full snapshot
    │   └── MissingKeyError (InputError)  a key file is missing: the message names the
    │                                     command that makes it (exit code 4)
    └── StoreError                       the roster database is corrupt or unwritable
        ├── RosterMissingError (InputError)  a command that reads found no roster (exit 4)
        └── ErasurePendingError          a deleted rider's bytes are still on disk (a reader
                                         holds the roster); the kiosk finishes it later
"""

from __future__ import annotations

from edge.errors import EdgeError, InputError


class RosterError(EdgeError):
    """Root of every encrypted-roster error."""


class KeyFileError(RosterError, PermissionError):
    """A key file is missing, unreadable, malformed or readable by others."""


class MissingKeyError(KeyFileError, InputError):
    """A key file a command needs does not exist; the message says which command makes it."""


class SealError(RosterError, ValueError):
    """A sealed blob does not authenticate under the key and associated data given."""


class DeltaError(RosterError, ValueError):
    """A roster delta was refused; nothing was applied."""


class VersionGapError(DeltaError):
    """The delta starts at a version other than the one held."""


class StoreError(RosterError):
    """The roster database cannot be opened, read or written."""


class RosterMissingError(StoreError, InputError):
    """A command that only reads the roster found none; nothing was created."""


class ErasurePendingError(StoreError):
    """A rider was deleted but their sealed bytes are still on disk: another process is
    reading the roster. The erasure is recorded as pending and finished by the next writer."""
