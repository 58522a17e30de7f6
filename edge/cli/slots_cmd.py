"""``kiosk slots``, ``kiosk eject`` and ``kiosk board-sim``: the technician's cabinet tools."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from cloud_sync.errors import InputError
from cloud_sync.events import Event
from edge.cabinet.battery import BatteryLimits
from edge.cabinet.slots import (
    Inventory,
    Slot,
    SlotState,
    SlotStateMissingError,
    failed_eject,
    one_line,
)
from edge.cli.auth import require_technician
from edge.cli.context import state
from edge.cli.interrupts import finishing
from edge.cli.text_input import checked_reason
from edge.settings import Settings
from hardware.driver import SerialBoard
from hardware.errors import (
    BoardConnectError,
    BoardError,
)

SLOTS_DB = "slots.db"

slots_app = typer.Typer(
    help="List the cabinet's slots, or enable and disable one.",
    invoke_without_command=True,
    rich_markup_mode=None,
)

STATE_STYLE = {
    SlotState.READY: "green",
    SlotState.CHARGING: "yellow",
    SlotState.FAULT: "bold red",
    SlotState.DISABLED: "dim",
    SlotState.EJECTING: "cyan",
    SlotState.AWAITING_REMOVAL: "cyan",
}


def _inventory(settings: Settings, slots: int | None = None) -> Inventory:
    from cloud_sync.outbox import Outbox

    outbox = Outbox(settings.outbox_path, settings.kiosk.id)
    try:
        return Inventory(
            settings.kiosk.state_dir / SLOTS_DB,
            slots or settings.board.slots,
            outbox=outbox,
            min_charge=settings.board.min_charge_pct,
            battery=BatteryLimits.of(settings.board),
        )
    except BaseException:
        outbox.close()  # leaves no -wal or -shm behind
        raise


def _cached(settings: Settings) -> Inventory:
    """The last known state, read-only: nothing is created or written."""
    return Inventory(
        settings.kiosk.state_dir / SLOTS_DB,
        settings.board.slots,
        min_charge=settings.board.min_charge_pct,
        read_only=True,
    )


@contextmanager
def _board(settings: Settings) -> Iterator[SerialBoard]:
    board = SerialBoard.from_config(settings.board).open()
    try:
        yield board
    finally:
        board.close()


def _drain(board: SerialBoard, inventory: Inventory) -> None:
    while (event := board.next_event(timeout=0)) is not None:
        inventory.apply(event)


def _check_slot(settings: Settings, slot: int) -> None:
    if not 1 <= slot <= settings.board.slots:
        raise InputError(
            f"slot {slot} does not exist: this kiosk has slots 1..{settings.board.slots}"
        )


def _row(slot: Slot, health: str | None = None) -> dict[str, Any]:
    return {
        "slot": slot.number,
        "state": slot.state.value,
        "powerbank_id": slot.powerbank_id,
        "charge": slot.charge,
        "temperature": slot.temperature,
        "fault": slot.fault,
        "health": health,
        "disabled": slot.disabled or slot.board_disabled,
        "updated_at": slot.updated_at.isoformat() if slot.updated_at else None,
    }


def _print_table(slots: list[Slot], source: str, health: dict[str, str]) -> None:
    table = Table(title=f"slots ({'from the board' if source == 'board' else 'last known'})")
    for column in ("slot", "state", "powerbank id", "charge", "temp", "fault"):
        table.add_column(
            column, justify="right" if column in ("slot", "charge", "temp") else "left"
        )
    for slot in slots:
        style = STATE_STYLE.get(slot.state, "")
        table.add_row(
            str(slot.number),
            f"[{style}]{slot.state.value}[/]" if style else slot.state.value,
            slot.powerbank_id or "-",
            "-" if slot.charge is None else f"{slot.charge}%",
            "-" if slot.temperature is None else f"{slot.temperature}°C",
            slot.fault
            or ("disabled on the board" if slot.board_disabled else "")
            or (f"battery {health[slot.powerbank_id]}" if slot.powerbank_id in health else ""),
        )
    Console().print(table)


@slots_app.callback()
def slots(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    cached: Annotated[
        bool, typer.Option("--cached", help="Show the last known state; do not ask the board.")
    ] = False,
) -> None:
    """Show every slot: state, powerbank id and charge (asks the board; falls back to the
    last known state, and exits 6, when the board does not answer)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = state(ctx).settings()
    source, error = "cached", None
    if cached:
        inventory = _cached(settings)
    else:
        try:
            with _board(settings) as board:
                inventory = _inventory(settings, board.slot_count())
                inventory.refresh(board)
                _drain(board, inventory)
                source = "board"
        except BoardError as exc:
            error = exc
            try:
                inventory = _cached(settings)
            except SlotStateMissingError:  # nothing to fall back on: the board's error it is
                print("kiosk: the board did not answer, and no state is known yet", file=sys.stderr)
                raise exc from None
    rows = inventory.slots()
    health: dict[str, str] = {b: f.reason for b, f in inventory.battery.flags().items()}
    if as_json:
        shown = [_row(slot, health.get(slot.powerbank_id or "")) for slot in rows]
        typer.echo(json.dumps({"source": source, "slots": shown}, indent=2))
    else:
        _print_table(rows, source, health)
    if error is not None:
        print("kiosk: the board did not answer: showing the last known state", file=sys.stderr)
        raise error


def _set_enabled(ctx: typer.Context, slot: int, enabled: bool) -> None:
    settings = state(ctx).settings()
    _check_slot(settings, slot)
    who = require_technician(
        settings.kiosk.state_dir, f"kiosk slots {'enable' if enabled else 'disable'}"
    )
    with finishing():  # the flag, the board and the event: all three, whatever comes
        _set_flag(settings, slot, enabled, who)


def _set_flag(settings: Settings, slot: int, enabled: bool, who: str) -> None:
    word = "enabled" if enabled else "disabled"
    inventory = _inventory(settings)
    inventory.set_disabled(slot, not enabled)  # the kiosk's own choice holds even offline
    error: BoardError | None = None
    try:
        with _board(settings) as board:
            board.set_enabled(slot, enabled)
        inventory.set_disabled(slot, not enabled, on_board=True)
    except BoardError as exc:
        error = exc
    assert inventory.outbox is not None
    event = inventory.outbox.append(
        "slot.service", slot=slot, enabled=enabled, operator=who, board_confirmed=error is None
    )
    recorded = _recorded(event, who)
    if isinstance(error, BoardConnectError) and _runtime_holds_board(settings):
        typer.echo(
            f"slot {slot}: {word}; {recorded}; kiosk run holds the board: it keeps to it from "
            "its next rental on and passes it on to the board within seconds"
        )
        return
    if error is not None:
        raise type(error)(
            f"slot {slot} is {word} on this kiosk (recorded: {recorded}), but the board "
            f"did not confirm: {one_line(error)}"
        ) from None
    typer.echo(f"slot {slot}: {word}; {recorded}")


def _runtime_holds_board(settings: Settings) -> bool:
    from edge.ops.runtime_status import is_live, read_runtime_status

    return is_live(read_runtime_status(settings.kiosk.state_dir))


def _recorded(event: Event | None, who: str) -> str:
    seq = f"event {event.seq}" if event is not None else "no event (the outbox is full)"
    return f"{seq}, operator {who}"


@slots_app.command("disable")
def disable(
    ctx: typer.Context, slot: Annotated[int, typer.Argument(help="Slot number (1..N).")]
) -> None:
    """Take a slot out of service: no rental ejects from it until it is enabled, also while
    kiosk run runs (needs root or kiosk-tech; records a slot.service event naming the
    operator)."""
    _set_enabled(ctx, slot, False)


@slots_app.command("enable")
def enable(
    ctx: typer.Context, slot: Annotated[int, typer.Argument(help="Slot number (1..N).")]
) -> None:
    """Put a disabled slot back in service (needs root or kiosk-tech; records a
    slot.service event naming the operator)."""
    _set_enabled(ctx, slot, True)


def eject(
    ctx: typer.Context,
    slot: Annotated[int, typer.Argument(help="Slot number (1..N).")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept in the slot.ejected event).", metavar="TEXT")
    ],
) -> None:
    """Eject the powerbank in one slot, recording who asked, why and how it ended (a
    slot.ejected event, also when the eject fails: then the exit code is 6). The intent is
    on disk before the board is asked: an eject cut short (killed, power cut) is recorded
    from the slot's status by the next kiosk eject or kiosk run; Ctrl-C waits for the board's
    answer and records it first (then exit 130). Needs the board's port, which kiosk run
    holds while it runs (then use a remote eject)."""
    reason = checked_reason(reason, required=True)
    settings = state(ctx).settings()
    _check_slot(settings, slot)
    who = require_technician(settings.kiosk.state_dir, "kiosk eject")
    with finishing():  # a Ctrl-C waits for the eject's outcome and its event
        _eject(settings, slot, who, reason)


def _eject(settings: Settings, slot: int, who: str, reason: str) -> None:
    from edge.cabinet.rentals import Ledger
    from edge.cabinet.settle import OperatorEject, operator_eject, settle_with_board

    inventory: Inventory | None = None
    done: OperatorEject | None = None
    try:
        with _board(settings) as board:
            inventory = _inventory(settings, board.slot_count())
            assert inventory.outbox is not None
            ledger = Ledger(inventory.outbox)  # the eject journal lives beside the rentals
            try:
                for left in settle_with_board(board, ledger, inventory):
                    typer.echo(
                        f"slot {left.slot}: an eject left unfinished ({left.operator or 'rental'})"
                        " is now settled from the board's status and recorded"
                    )
                if _powerbank_in(inventory, slot) is None:  # the intent names what leaves
                    inventory.refresh(board)
                done = operator_eject(
                    board, inventory, ledger.journal, slot, operator=who, reason=reason
                )
            finally:
                _drain(board, inventory)
    except BoardError as exc:  # before the eject was sent: the board did not answer
        if inventory is None and isinstance(exc, BoardConnectError):
            raise BoardConnectError(
                f"slot {slot}: not ejected, nothing recorded: {one_line(exc)}; while kiosk run "
                "runs it holds the board: send a remote eject, or stop kiosk-edge first"
            ) from None
        if inventory is None:  # not even its hello: the last known state
            inventory = _inventory(settings)
        outcome, detail = failed_eject(exc)
        assert inventory.outbox is not None
        event = inventory.outbox.append(
            "slot.ejected",
            slot=slot,
            powerbank_id=_powerbank_in(inventory, slot),
            operator=who,
            reason=reason,
            outcome=outcome,
            detail=detail,
        )
        _refuse(slot, exc, outcome, event, who)
    assert done is not None
    if done.error is not None:
        _refuse(slot, done.error, done.outcome, done.event, who)
    typer.echo(
        f"slot {slot}: powerbank {done.powerbank_id or '(unknown id)'} "
        f"{done.outcome}; {_recorded(done.event, who)}"
    )


def _refuse(slot: int, error: BoardError, outcome: str, event: Event | None, who: str) -> NoReturn:
    """The failed eject's one line (the board's error, re-raised with what was recorded)."""
    hint = "; it may have ejected: check 'kiosk slots'" if outcome == "no_answer" else ""
    said = one_line(error).removeprefix(f"slot {slot}: ")
    raise type(error)(
        f"slot {slot}: the eject failed ({outcome}): {said}{hint}; "
        f"recorded: {_recorded(event, who)}"
    ) from None


def _powerbank_in(inventory: Inventory, slot: int) -> str | None:
    known = {item.number: item for item in inventory.slots()}
    return known[slot].powerbank_id if slot in known else None


def board_sim(ctx: typer.Context) -> None:
    """Simulate the slot board on a pty (prints its path); 'kiosk board-sim --help' lists faults."""
    from hardware.sim import main as sim_main

    raise typer.Exit(sim_main(list(ctx.args)))


def register(app: typer.Typer) -> None:
    """Add these commands to the ``kiosk`` app."""
    app.add_typer(slots_app, name="slots")
    app.command("eject")(eject)
    app.command(
        "board-sim",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(board_sim)
