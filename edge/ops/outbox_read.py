"""The outbox for commands that only look (``kiosk sync status``, ``kiosk events``,
``kiosk status``): it must exist and be an outbox; nothing is created or written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloud_sync.errors import OutboxError, OutboxMissingError
from cloud_sync.private_files import not_holding

if TYPE_CHECKING:
    from cloud_sync.outbox import Outbox
    from edge.settings import Settings

TABLES = ("events", "meta")


def open_outbox_read_only(settings: Settings) -> Outbox:
    """The kiosk's outbox, read-only. ``OutboxMissingError`` (naming ``kiosk run``) when
    there is none, ``OutboxError`` naming why when the file is not an outbox."""
    path = settings.outbox_path
    try:
        why = not_holding(path, TABLES)
    except FileNotFoundError:
        raise OutboxMissingError(
            f"{path}: no outbox yet (nothing was recorded here; `kiosk run` makes it)"
        ) from None
    if why is not None:
        raise OutboxError(
            f"{path}: not an outbox ({why}); move it aside (it may hold unsent events: keep "
            "it for support), then `kiosk run` starts a new one"
        )
    from cloud_sync.outbox import Outbox  # loads sqlite_utils: only when there is one

    return Outbox(path, settings.kiosk.id, max_bytes=settings.outbox.max_bytes, read_only=True)
