"""Obeying remote commands: verify, claim the id once, run the caller's handler, answer.

The handlers are the caller's (the kiosk runtime wires ``eject`` to the real board,
``sync-now`` to the sync daemon, ...): a mapping of command name to a function that takes
the verified ``Command`` and returns a few result fields, or raises to report a failure.
``ping`` is answered here when the caller gives no handler of its own.

Every authentic command that is not run is logged with its reason (``command.ignored``);
only commands whose signature verified get an answer on the result topic. ``screen`` tells
an authentic command from junk before it takes a place in the link's queue; the link drops
junk with a summary log line, never one line per message.

Every answer is owed in the ledger before the command's message is acknowledged to the
broker (``recorded``, the link's acknowledgement, is called once the command is claimed
or its rejection owed), and stays owed until the broker acknowledged the result: the link
publishes it again after a restart or a reconnection (at least once; duplicates are
harmless to the sender). A command the broker delivers again (``redelivered``: its DUP
flag) after it was claimed or refused, because its acknowledgement was lost to a power
cut, a kill or a disconnection, is neither run nor answered again: its answer is owed
already, or the recovery gives it. A refusal takes the id on as well
(``CommandLedger.refuse``), so a command answered "busy" never runs when it comes again.

A command that a previous run of the kiosk took on and never finished (it was killed or
lost its power: the command is still ``running`` in the ledger) is answered by ``recover``:
the caller's ``recoveries`` (by command name) say how it ended, or None while that is not
known yet (an eject waits for its intent to be settled from the slot's status); a command
with no recovery is answered "interrupted". Its result is published like any other, and
the command ends ``ok`` or ``error`` in the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from cloud_sync.mqtt.commands import (
    Command,
    CommandResult,
    Limits,
    PingArgs,
    ResultValue,
    Status,
    sign_result,
    verify_command,
)
from cloud_sync.mqtt.errors import CommandRejected
from cloud_sync.mqtt.ledger import CommandLedger, LedgerEntry

log = structlog.get_logger("cloud_sync.mqtt")

HandlerData = Mapping[str, ResultValue]
Handler = Callable[[Command], HandlerData | None]
#: How a command cut short by a restart ended: its result fields, None while not yet known,
#: or an exception (the result is an ``error`` with its message).
Recovery = Callable[[LedgerEntry], HandlerData | None]
INTERRUPTED = "interrupted: the kiosk restarted before this command finished; send it again"


def _nothing() -> None:
    return None


def ping(command: Command) -> HandlerData:
    args = command.typed_args()
    assert isinstance(args, PingArgs)
    return {"pong": True, "echo": args.echo}


@dataclass
class CommandExecutor:
    """Turns received bytes into at most one handler call and a result (or nothing)."""

    kiosk_id: str
    public_key: Ed25519PublicKey | None
    ledger: CommandLedger
    handlers: Mapping[str, Handler]
    slots: int
    limits: Limits = field(default_factory=Limits)
    clock: Callable[[], float] = time.time
    recoveries: Mapping[str, Recovery] = field(default_factory=dict)
    #: the kiosk's own key: it signs every result, so no other client can answer for it
    result_key: Ed25519PrivateKey | None = None
    interrupted: list[LedgerEntry] = field(init=False)

    def __post_init__(self) -> None:
        self.interrupted = self.ledger.running()  # left by an earlier run: none of ours yet

    def recover(self) -> list[CommandResult]:
        """Answer the interrupted commands whose outcome is known now; the rest wait."""
        results: list[CommandResult] = []
        for entry in list(self.interrupted):
            recovery = self.recoveries.get(entry.name)
            try:
                if recovery is None:
                    raise RuntimeError(INTERRUPTED)
                data = recovery(entry)
                if data is None:
                    continue
                status: Status = "ok"
                detail = "settled after a restart"
            except Exception as exc:  # how it ended, reported as the command's failure
                data, status, detail = {}, "error", str(exc)[:500]
            self.interrupted.remove(entry)
            results.append(self._answer(entry.id, entry.name, status, detail, data))
            log.info(
                "command.settled",
                command_id=entry.id,
                command=entry.name,
                issuer=entry.issuer,
                status=status,
                detail=detail,
            )
        return results

    def screen(self, raw: bytes) -> str | None:
        """None when ``raw`` is authentic (its signature verified, whatever else is wrong
        with it: the kiosk answers it), else the reason it is junk (never answered)."""
        try:
            verify_command(
                raw, self.public_key, self.kiosk_id, self.slots, self.clock(), self.limits
            )
        except CommandRejected as exc:
            return None if exc.authentic and exc.command_id is not None else exc.reason
        return None

    def handle(
        self, raw: bytes, *, redelivered: bool = False, recorded: Callable[[], None] = _nothing
    ) -> CommandResult | None:
        """Run one received command; the result to publish, or None when there is no answer.

        ``recorded`` is called once the command is claimed in the ledger (before its
        handler runs) or its rejection is owed: then its message may be acknowledged."""
        now = self.clock()
        try:
            command = self._verify(raw, now)
        except CommandRejected as exc:
            return self._rejected(exc, now, recorded, redelivered)
        handler = self.handlers.get(command.name) or (ping if command.name == "ping" else None)
        if handler is None:
            why = f"this kiosk has no handler for {command.name}"
            return self._refuse(command, "unsupported", why, now, recorded, redelivered)
        if not self.ledger.claim(command.id, command.name, command.issuer, command.expires_at):
            return self._taken(command.id, command.name, now, recorded, redelivered)
        recorded()
        return self._run(command, handler)

    def busy(
        self,
        raw: bytes,
        *,
        redelivered: bool = False,
        recorded: Callable[[], None] = _nothing,
    ) -> CommandResult | None:
        """Refuse an authentic command without running it: too many are waiting."""
        now = self.clock()
        try:
            command = self._verify(raw, now)
        except CommandRejected as exc:
            return self._rejected(exc, now, recorded, redelivered)
        why = "too many commands waiting; send it again"
        return self._refuse(command, "busy", why, now, recorded, redelivered)

    def _verify(self, raw: bytes, now: float) -> Command:
        return verify_command(raw, self.public_key, self.kiosk_id, self.slots, now, self.limits)

    def _refuse(
        self,
        command: Command,
        code: str,
        why: str,
        now: float,
        recorded: Callable[[], None],
        redelivered: bool,
    ) -> CommandResult | None:
        """Answer an authentic command ``code`` without running it."""
        refused = CommandRejected(
            code, why, command_id=command.id, name=command.name, authentic=True
        )
        return self._rejected(
            refused, now, recorded, redelivered, command.issuer, command.expires_at
        )

    def _taken(
        self,
        command_id: str,
        name: str | None,
        now: float,
        recorded: Callable[[], None],
        redelivered: bool,
    ) -> CommandResult | None:
        """A command whose id was taken on already (it ran, or was refused): a copy the
        broker delivers again (our acknowledgement was lost) is acknowledged quietly, its
        answer is owed already; any other copy is answered ``replayed``."""
        if redelivered:
            log.info("command.redelivered", command_id=command_id, command=name)
            recorded()
            return None
        replayed = CommandRejected(
            "replayed",
            "this command was taken on here already",
            command_id=command_id,
            name=name,
            authentic=True,
        )
        return self._rejected(replayed, now, recorded, redelivered)

    def _run(self, command: Command, handler: Handler) -> CommandResult:
        started = time.monotonic()
        status: Status
        try:
            data = dict(handler(command) or {})
            status, detail = "ok", ""
        except Exception as exc:  # a handler's failure is reported, never raised
            data, status = {}, "error"
            detail = f"{type(exc).__name__}: {exc}"[:500]
        result = self._answer(command.id, command.name, status, detail, data)
        log.info(
            "command.done",
            command_id=command.id,
            command=command.name,
            issuer=command.issuer,
            status=status,
            detail=result.detail or None,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return result

    def _answer(
        self, command_id: str, name: str, status: Status, detail: str, data: HandlerData
    ) -> CommandResult:
        """The result of a command that ran (or was cut short), finished in the ledger."""
        try:
            result = CommandResult(
                id=command_id,
                kiosk_id=self.kiosk_id,
                name=name,
                status=status,
                detail=detail,
                data=dict(data),
                at=int(self.clock()),
            )
        except ValidationError:
            detail = "the handler's result fields are not plain values (dropped)"
            result = CommandResult(
                id=command_id,
                kiosk_id=self.kiosk_id,
                name=name,
                status=status,
                detail=detail,
                at=int(self.clock()),
            )
        result = self._signed(result)
        self.ledger.finish(command_id, status, result.detail, result.model_dump_json())
        return result

    def _signed(self, result: CommandResult) -> CommandResult:
        return result if self.result_key is None else sign_result(self.result_key, result)

    def _rejected(
        self,
        exc: CommandRejected,
        now: float,
        recorded: Callable[[], None],
        redelivered: bool = False,
        issuer: str = "",
        expires_at: float | None = None,
    ) -> CommandResult | None:
        """Owe an authentic command's rejection, taking its id on (``CommandLedger.refuse``)
        unless it is a replay; junk gets no answer."""
        if exc.authentic and exc.command_id is not None:
            result = self._signed(
                CommandResult(
                    id=exc.command_id,
                    kiosk_id=self.kiosk_id,
                    name=exc.name or "",
                    status="rejected",
                    reason=exc.reason,
                    detail=exc.detail[:500],
                    at=int(now),
                )
            )
            payload = result.model_dump_json()
            if exc.reason == "replayed":  # the id is taken on already: only the answer is new
                self.ledger.owe(result.id, payload)
            else:
                expiry = now if expires_at is None else max(expires_at, now)
                if not self.ledger.refuse(
                    result.id, result.name, issuer, expiry, exc.reason, payload
                ):
                    return self._taken(result.id, exc.name, now, recorded, redelivered)
        log.warning(
            "command.ignored",
            reason=exc.reason,
            detail=exc.detail or None,
            command_id=exc.command_id,
            command=exc.name,
        )
        recorded()
        return result if exc.authentic and exc.command_id is not None else None
