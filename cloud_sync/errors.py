"""The error tree's root, shared by the kiosk and the cloud, and the errors of the outbox, the
sync daemon and the cloud API (``cloud_sync``).

Both sides subclass one root, ``KioskError``: the kiosk's own errors hang under
``edge.errors.EdgeError``, the sync side's and the cloud's under ``SyncError``. ``hardware``
and ``models`` keep roots of their own (``HardwareError``, ``ModelError``): they never import
``cloud_sync``. The CLI maps every root to one documented exit code (``cloud_sync.exits``).

The tree, by phase::

    KioskError
    ├── ConfigError (ValueError)            settings file or values are invalid
    ├── InputError (ValueError)             a file, folder or argument given by a person is unusable
    ├── RosterError                         the kiosk's encrypted roster (``edge.vault.errors``
    │   │                                   adds its key, seal and store errors)
    │   └── DeltaError (ValueError)         a roster delta is refused (signature, recipient,
    │       │                               version, model); the roster kept is the old one
    │       └── VersionGapError             the delta does not follow the roster held: ask for
    │                                       a full snapshot
    ├── EdgeError                           the kiosk runtime (``edge.errors``)
    └── SyncError                           the sync side and the cloud API
        ├── OutboxError                     the local event store
        │   ├── OutboxFullError (OSError)   no room left for an event that must not be dropped
        │   └── OutboxMissingError (FileNotFoundError)  a command that only reads found none
        ├── EventError (ValueError)         an event does not match its schema
        ├── WireError (ValueError)          a request body is not the strict JSON it must be
        ├── SigningKeyError (OSError)       the kiosk's signing key cannot be read or created
        ├── SignatureError (ValueError)     a request's signature is missing, stale or wrong
        ├── CloudError (ConnectionError)    the cloud API cannot be reached or refused a request
        │   ├── CloudUnavailableError       transient: network, timeout, 408, 429, 5xx; retried
        │   ├── CloudAuthError              401/403: this kiosk is unknown or its key is wrong
        │   └── CloudRejectedError          another 4xx: the request itself is wrong; not retried
        ├── StoreError                      the cloud's database (server side)
        └── IntegrityError (ValueError)     sealed data or a signed roster does not verify

Third-party errors (sqlite3, httpx, psycopg) are translated where they enter.
"""

from __future__ import annotations


class KioskError(Exception):
    """Root of every error raised by the kiosk and the cloud (see the tree above)."""


class ConfigError(KioskError, ValueError):
    """The configuration is invalid; the message names the field path and the reason."""


class InputError(KioskError, ValueError):
    """Something a person handed to a command (a path, an image, a value) cannot be used."""


class RosterError(KioskError):
    """Root of every encrypted-roster error (the kiosk's store adds its own below it)."""


class DeltaError(RosterError, ValueError):
    """A roster delta was refused; nothing was applied."""


class VersionGapError(DeltaError):
    """The delta starts at a version other than the one held."""


class SyncError(KioskError):
    """Root of every error raised by the sync side and the cloud API."""


class OutboxError(SyncError):
    """The outbox database cannot be opened or written."""


class OutboxFullError(OutboxError, OSError):
    """The outbox has no room for an event that must never be dropped."""


class OutboxMissingError(OutboxError, FileNotFoundError):
    """A command that only reads the outbox found none; nothing was created."""


class EventError(SyncError, ValueError):
    """An event does not match its schema."""


class WireError(SyncError, ValueError):
    """A request body is not strict JSON (NaN, a key twice, not UTF-8, too deep)."""


class SigningKeyError(SyncError, OSError):
    """The kiosk's signing key file cannot be read, parsed or created."""


class SignatureError(SyncError, ValueError):
    """A request signature is missing, malformed, outside the clock skew or does not verify."""


class CloudError(SyncError, ConnectionError):
    """The cloud API cannot be reached, or it refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CloudUnavailableError(CloudError):
    """A transient failure worth retrying later (``retry_after`` when the server said so).

    ``reached``: the request reached the cloud and failed while it was handled (a 5xx, 408,
    a read timeout, a connection reset mid-request), so what was sent may be the cause; the
    sync daemon then narrows the batch. ``detail``: the message without the URL.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        reached: bool = False,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after
        self.reached = reached
        self.detail = detail or message


class CloudAuthError(CloudError):
    """The cloud does not accept this kiosk's signature (unknown kiosk, wrong key, clock)."""


class CloudRejectedError(CloudError):
    """The cloud refused the request itself (a 4xx other than 401/403/408/429)."""

    def __init__(
        self,
        message: str,
        status: int,
        code: str = "",
        rejected: dict[int, str] | None = None,
    ) -> None:
        super().__init__(message, status)
        self.code = code
        self.rejected = rejected or {}


class StoreError(SyncError):
    """The cloud API's database cannot be opened, migrated or written."""


class IntegrityError(SyncError, ValueError):
    """Sealed data or a signature does not verify: tampered, truncated, or the wrong key."""
