"""Errors raised by the outbox, the sync daemon and the cloud API (``cloud_sync``).

The tree, by phase::

    SyncError
    ├── OutboxError                     the local event store
    │   └── OutboxFullError (OSError)   no room left for an event that must not be dropped
    ├── EventError (ValueError)         an event does not match its schema
    └── CloudError (ConnectionError)    the cloud API cannot be reached or refused a request
"""

from __future__ import annotations


class SyncError(Exception):
    """Root of every error raised by the sync side."""


class OutboxError(SyncError):
    """The outbox database cannot be opened or written."""


class OutboxFullError(OutboxError, OSError):
    """The outbox has no room for an event that must never be dropped."""


class EventError(SyncError, ValueError):
    """An event does not match its schema."""


class CloudError(SyncError, ConnectionError):
    """The cloud API cannot be reached, or it refused the request."""
