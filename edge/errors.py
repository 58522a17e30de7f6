"""Errors raised by the kiosk runtime (``edge``).

The tree, by phase::

    EdgeError
    ├── ConfigError (ValueError)        settings file or values are invalid
    ├── InputError (ValueError)         a file, folder or argument given by a person is unusable
    ├── VisionError                     the face pipeline could not produce a decision
    └── NotAvailableError               a command that cannot work on this machine

Errors of the other packages have roots of their own (``hardware.errors.HardwareError``,
``cloud_sync.errors.SyncError``, ``models.errors.ModelError``); the CLI maps every root to
one documented exit code.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error raised by the kiosk runtime."""


class ConfigError(EdgeError, ValueError):
    """The configuration is invalid; the message names the field path and the reason."""


class InputError(EdgeError, ValueError):
    """Something a person handed to a command (a path, an image, a value) cannot be used."""


class VisionError(EdgeError):
    """The face pipeline failed on a frame for a reason other than bad input."""


class NotAvailableError(EdgeError):
    """The command cannot work on this machine (for example, there is no journal to read)."""
