"""Errors raised by ``kiosk provision`` (the CLI gives each root its exit code)::

ProvisionFileError (InputError)     the provisioning file is unusable: exit 4
ProvisionStateError (InputError)    this kiosk's files do not fit the file: exit 4
TokenRefusedError (CloudError)      the cloud refused the token (401/403/409): exit 7
"""

from __future__ import annotations

from cloud_sync.errors import CloudError, InputError


class ProvisionFileError(InputError):
    """The provisioning file is missing a field, has a wrong one, or is not TOML."""


class ProvisionStateError(InputError):
    """What this kiosk already holds does not fit the provisioning file given."""


class TokenRefusedError(CloudError):
    """The cloud refused the one-time token: unknown, expired, used, or for another kiosk."""
