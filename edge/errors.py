"""Errors raised by the kiosk runtime (``edge``).

The tree, by phase::

    cloud_sync.errors.KioskError        the root the kiosk and the cloud share
    ├── ConfigError, InputError         shared: settings and input (``cloud_sync.errors``)
    └── EdgeError
        ├── VisionError                 the face pipeline could not produce a decision
        ├── NotAvailableError           a command that cannot work on this machine
        └── SlotStateError              slots.db is not a slot database

Errors of the other packages have roots of their own (``hardware.errors.HardwareError``,
``models.errors.ModelError``) or hang under the shared root (``cloud_sync.errors.SyncError``,
``RosterError``); the CLI maps every root to one documented exit code.
"""

from __future__ import annotations

from cloud_sync.errors import KioskError


class EdgeError(KioskError):
    """Root of every error raised by the kiosk runtime."""


class VisionError(EdgeError):
    """The face pipeline failed on a frame for a reason other than bad input."""


class NotAvailableError(EdgeError):
    """The command cannot work on this machine (for example, there is no journal to read)."""


class SlotStateError(EdgeError, ValueError):
    """The slot database is not one (empty for a reader, not SQLite, damaged, another kind)."""
