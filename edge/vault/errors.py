"""Errors of the encrypted roster, all under ``cloud_sync.errors.RosterError``.

The root and the delta refusals are the shared core's (``cloud_sync.errors``), because the
sync daemon's roster pull catches them; the rest are the kiosk store's own::

    RosterError (cloud_sync.errors)
    ├── KeyFileError (PermissionError)   a key file is missing, unreadable or too open
    │   └── MissingKeyError (InputError)  a key file is missing: the message names the
    │                                     command that makes it (exit code 4)
    ├── SealError (ValueError)           a sealed blob fails authentication
    ├── DeltaError (ValueError)          a roster delta is refused (cloud_sync.errors)
    │   └── VersionGapError              the delta does not follow the roster held
    └── StoreError                       the roster database is corrupt or unwritable
        ├── RosterMissingError (InputError)  a command that reads found no roster (exit 4)
        └── ErasurePendingError          a deleted rider's bytes are still on disk (a reader
                                         holds the roster); the kiosk finishes it later
"""

from __future__ import annotations

from cloud_sync.errors import InputError, RosterError


class KeyFileError(RosterError, PermissionError):
    """A key file is missing, unreadable, malformed or readable by others."""


class MissingKeyError(KeyFileError, InputError):
    """A key file a command needs does not exist; the message says which command makes it."""


class SealError(RosterError, ValueError):
    """A sealed blob does not authenticate under the key and associated data given."""


class StoreError(RosterError):
    """The roster database cannot be opened, read or written."""


class RosterMissingError(StoreError, InputError):
    """A command that only reads the roster found none; nothing was created."""


class ErasurePendingError(StoreError):
    """A rider was deleted but their sealed bytes are still on disk: another process is
    reading the roster. The erasure is recorded as pending and finished by the next writer."""
