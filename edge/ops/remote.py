"""The kiosk's MQTT link, built from its settings, with the handlers this package owns.

The runtime calls ``open_kiosk_mqtt`` with its own handlers (``eject`` wired to the real
board, ``sync-now`` to the sync daemon, ``reload-roster`` to the live roster) and a
telemetry snapshot function; ``maintenance-on`` and ``maintenance-off`` are provided here
(they only set the flag file and record the event), ``ping`` by the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from cloud_sync.errors import ConfigError, SignatureError
from cloud_sync.mqtt.client import KioskMqtt
from cloud_sync.mqtt.commands import Command, Limits, MaintenanceArgs
from cloud_sync.mqtt.executor import CommandExecutor, Handler, HandlerData, Recovery
from cloud_sync.mqtt.ledger import FILENAME as LEDGER_FILENAME
from cloud_sync.mqtt.ledger import CommandLedger
from cloud_sync.mqtt.telemetry import Telemetry
from cloud_sync.outbox import Outbox
from cloud_sync.outbox_schema import Stats
from cloud_sync.signing import kiosk_key, parse_public_key
from edge import __version__
from edge.cabinet.slots import Slot
from edge.ops.maintenance import set_maintenance
from edge.ops.runtime_status import Component
from edge.settings import Settings


def mqtt_component(link: KioskMqtt | None) -> Component:
    """The ``mqtt`` entry of ``runtime.json`` for this link (None: MQTT is disabled)."""
    if link is None:
        return Component(ok=None, detail="disabled")
    status = link.status()
    if status.connected:
        detail = f"connected to {status.broker}"
    else:
        detail = status.last_error or f"connecting to {status.broker}"
    if status.dropped:
        detail += f"; {status.dropped} messages dropped"
    return Component(ok=status.connected, detail=detail)


def telemetry_snapshot(
    slots: Iterable[Slot],
    stats: Stats | None,
    counts: Mapping[str, int],
    maintenance: bool,
    camera_ok: bool | None = None,
    board_online: bool | None = None,
) -> Telemetry:
    """A ``Telemetry`` from what the runtime holds (temperatures are read by the link)."""
    by_state: dict[str, int] = {}
    for slot in slots:
        by_state[slot.state.value] = by_state.get(slot.state.value, 0) + 1
    return Telemetry(
        slots=by_state,
        outbox_pending=stats.pending_total if stats else None,
        outbox_oldest_age_s=(
            round(stats.oldest_pending_age_s, 1)
            if stats and stats.oldest_pending_age_s is not None
            else None
        ),
        recognitions={k: v for k, v in counts.items() if not k.startswith(("rentals_", "returns"))},
        rentals=counts.get("rentals_started"),
        returns=counts.get("returns"),
        maintenance=maintenance,
        camera_ok=camera_ok,
        board_online=board_online,
        versions={"kiosk": __version__},
    )


def remote_operator(command: Command) -> str:
    """How a remote command's operator is named in events: ``remote:<issuer>``."""
    return f"remote:{command.issuer}"[:64]


def maintenance_handlers(state_dir: Path, outbox: Outbox | None) -> dict[str, Handler]:
    """``maintenance-on`` and ``maintenance-off``: the flag file and a ``kiosk.maintenance`` event."""

    def on(command: Command) -> HandlerData:
        args = command.typed_args()
        reason = args.reason if isinstance(args, MaintenanceArgs) else ""
        set_maintenance(state_dir, outbox, True, remote_operator(command), reason, via="remote")
        return {"maintenance": True}

    def off(command: Command) -> HandlerData:
        set_maintenance(state_dir, outbox, False, remote_operator(command), via="remote")
        return {"maintenance": False}

    return {"maintenance-on": on, "maintenance-off": off}


def command_executor(
    settings: Settings,
    handlers: Mapping[str, Handler],
    slots: int | None = None,
    recoveries: Mapping[str, Recovery] | None = None,
) -> CommandExecutor:
    """Verification with the pinned key, the id ledger in the state folder, ``handlers``
    (and ``recoveries`` for the commands a restart cut short)."""
    mqtt = settings.mqtt
    try:
        public = parse_public_key(mqtt.command_public_key) if mqtt.command_public_key else None
    except SignatureError as exc:
        raise ConfigError(f"mqtt.command_public_key: {exc}") from None
    return CommandExecutor(
        kiosk_id=settings.kiosk.id,
        public_key=public,
        ledger=CommandLedger(settings.kiosk.state_dir / LEDGER_FILENAME),
        handlers=handlers,
        slots=slots or settings.board.slots,
        limits=Limits(mqtt.command_max_bytes, mqtt.command_max_ttl_s, mqtt.command_max_skew_s),
        recoveries=dict(recoveries or {}),
        result_key=kiosk_key(settings.kiosk.state_dir),  # the key the cloud registered
    )


def open_kiosk_mqtt(
    settings: Settings,
    handlers: Mapping[str, Handler],
    snapshot: Callable[[], Telemetry] | None = None,
    outbox: Outbox | None = None,
    slots: int | None = None,
    recoveries: Mapping[str, Recovery] | None = None,
) -> KioskMqtt:
    """A started ``KioskMqtt`` for these settings (returns at once, connects in the background).

    ``handlers`` override the maintenance handlers made here; names without a handler are
    answered "unsupported". ``recoveries`` answer the commands a restart cut short (left
    ``running`` in ``commands.sqlite``); any other such command is answered "interrupted".
    """
    if not settings.mqtt.enabled:
        raise ConfigError("mqtt.enabled is false: set it to true to connect to a broker")
    wired = {**maintenance_handlers(settings.kiosk.state_dir, outbox), **handlers}
    return KioskMqtt(
        settings.mqtt,
        settings.kiosk.id,
        version=__version__,
        executor=command_executor(settings, wired, slots, recoveries),
        snapshot=snapshot,
    ).start()
