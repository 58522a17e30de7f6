"""Exit codes of the ``kiosk`` command, one per error root (``cloud_sync.exits`` has the
shared machinery and ``kiosk-cloud``'s table, with the same codes for the same errors).

The first row whose error class matches wins, so narrower classes come first. The README's
table says every meaning of each code (a test keeps the two in step).
"""

from __future__ import annotations

from cloud_sync import exits
from cloud_sync.errors import ConfigError, InputError, OutboxMissingError, RosterError, SyncError
from cloud_sync.exits import ExitCode
from edge.cli.auth import NotPermittedError
from edge.errors import EdgeError, NotAvailableError, SlotStateError
from hardware.errors import HardwareError
from models.errors import ImageError, ModelError

CHECK_FAILED = 9  # kiosk doctor: at least one check failed


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(3, ConfigError, "the settings file or a setting is invalid"),
    ExitCode(
        4,
        InputError,
        "a file, folder or value given on the command line cannot be used, or a file a command "
        "reads (roster, `kiosk` key, slot state) does not exist yet: the message names the "
        "command that makes it, and nothing was created",
    ),
    ExitCode(4, ImageError, "an image cannot be read or decoded"),
    ExitCode(4, OutboxMissingError, "the outbox a command reads does not exist yet (the same)"),
    ExitCode(
        5, ModelError, "a face model file is missing or does not match `models/manifest.json`"
    ),
    ExitCode(6, HardwareError, "a device (camera, slot board) failed"),
    ExitCode(
        7,
        SyncError,
        "the outbox or the cloud API failed, or a `kiosk-cloud` key file is missing or unusable",
    ),
    ExitCode(
        7,
        RosterError,
        "the roster failed (damaged, unwritable, a delta refused) or a deleted rider's bytes "
        "wait for a reader to let go, or a `kiosk` key file is unreadable, malformed or "
        "readable by others",
    ),
    ExitCode(7, SlotStateError, "the slot state file is not a slot database"),
    ExitCode(8, NotAvailableError, "the command cannot work on this machine"),
    ExitCode(10, NotPermittedError, "needs root or the `kiosk-tech` group"),
    ExitCode(1, EdgeError, "the kiosk runtime failed"),
)


def exit_code_for(error: BaseException) -> int:
    """The kiosk's exit code for ``error``."""
    return exits.exit_code_for(error, EXIT_CODES)
