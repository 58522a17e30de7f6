"""Errors raised by ``kiosk update``.

The tree::

    UpdateError (EdgeError)
    ├── BundleError (InputError)       the bundle is unusable: missing file, bad checksum
    │   └── SignatureError             unsigned, or not signed by the pinned release key
    ├── RentalInProgressError          a rental is under way: nothing switched
    ├── UnhealthyError                 the new version did not turn healthy: rolled back
    └── UpdateStateError               the installed versions do not allow it (no previous,
                                       another update running, cannot write the root)
"""

from __future__ import annotations

from cloud_sync.errors import InputError
from edge.errors import EdgeError


class UpdateError(EdgeError):
    """Root of the errors of ``kiosk update``."""


class BundleError(UpdateError, InputError):
    """The bundle cannot be installed: a file is missing, altered or unexpected."""


class SignatureError(BundleError):
    """The bundle is not signed, or not by the release key this kiosk trusts."""


class RentalInProgressError(UpdateError):
    """A rental is under way; the switch waits for it (nothing was switched)."""


class UnhealthyError(UpdateError):
    """The version switched to did not report healthy in time; the kiosk went back."""


class UpdateStateError(UpdateError):
    """What is installed does not allow this (no previous version, an update running...)."""
