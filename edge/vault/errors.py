"""Errors of the encrypted roster, all under ``edge.errors.EdgeError``.

::

    RosterError
    ├── KeyFileError (PermissionError)   a key file is missing, unreadable or too open
    ├── SealError (ValueError)           a sealed blob fails authentication
    ├── DeltaError (ValueError)          a roster delta is refused (signature, recipient,
    │                                    version, model); the roster kept is the old one
    │   └── VersionGapError              the delta does not follow the roster held: ask for
    │                                    a full snapshot
    └── StoreError                       the roster database is corrupt or unwritable
"""

from __future__ import annotations

from edge.errors import EdgeError


class RosterError(EdgeError):
    """Root of every encrypted-roster error."""


class KeyFileError(RosterError, PermissionError):
    """A key file is missing, unreadable, malformed or readable by others."""


class SealError(RosterError, ValueError):
    """A sealed blob does not authenticate under the key and associated data given."""


class DeltaError(RosterError, ValueError):
    """A roster delta was refused; nothing was applied."""


class VersionGapError(DeltaError):
    """The delta starts at a version other than the one held."""


class StoreError(RosterError):
    """The roster database cannot be opened, read or written."""
