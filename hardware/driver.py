"""The slot-board driver: the board's commands over a ``SerialLink``.

``SerialBoard(url)`` is the real ``SlotBoard``: hello, status (in pages), eject, enable or
disable a slot, set an indicator, reset. An eject carries a request id the board remembers,
so a retried eject is performed at most once, and ejects run one at a time. Everything
about the line (retries, reconnection, notifications, error translation) is in
``hardware.link``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from hardware.board import BoardEvent, BoardInfo, EjectResult
from hardware.config import BoardConfig
from hardware.errors import (
    BoardError,
    BoardRefusedError,
    BoardTimeoutError,
    ProtocolError,
    SlotJammedError,
    SlotRangeError,
)
from hardware.link import SerialLink, log
from hardware.messages import (
    MAX_STATUS_SLOTS,
    Ack,
    Colour,
    Eject,
    Ejected,
    EjectOutcome,
    EjectReply,
    Hello,
    HelloReply,
    Jammed,
    NackCode,
    Notification,
    Pattern,
    Reset,
    SetEnabled,
    SetIndicator,
    SlotReport,
    Status,
    StatusReply,
)
from hardware.protocol import wire_request_id

__all__ = ["SerialBoard"]


class _EjectWatch:
    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.outcome: EjectOutcome | None = None
        self.event = threading.Event()


class SerialBoard(SerialLink):
    """The real driver; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        timeout_s: float = 0.5,
        retries: int = 3,
        backoff_s: float = 0.02,
        eject_timeout_s: float = 15.0,
        on_event: Callable[[BoardEvent], None] | None = None,
        exclusive: bool = True,
    ) -> None:
        super().__init__(
            url,
            baudrate=baudrate,
            timeout_s=timeout_s,
            retries=retries,
            backoff_s=backoff_s,
            on_event=on_event,
            exclusive=exclusive,
        )
        self.eject_timeout_s = eject_timeout_s
        self.info: BoardInfo | None = None
        self._eject_lock = threading.Lock()
        self._watches: dict[int, _EjectWatch] = {}

    @classmethod
    def from_config(cls, config: BoardConfig, **kwargs: object) -> SerialBoard:
        return cls(
            config.url,
            baudrate=config.baudrate,
            timeout_s=config.timeout_s,
            retries=config.retries,
            **kwargs,  # type: ignore[arg-type]
        )

    def _probe(self) -> None:
        with contextlib.suppress(BoardError):
            self.hello()  # also refreshes the slot count after a reconnect

    def _on_notification(self, note: Notification) -> None:
        if isinstance(note, Ejected | Jammed):
            with self._cond:
                watch = self._watches.get(note.request_id)
            if watch is not None:
                ok = isinstance(note, Ejected)
                watch.outcome = EjectOutcome.PRESENTED if ok else EjectOutcome.JAMMED
                watch.event.set()

    def hello(self) -> BoardInfo:
        reply = self.request(Hello(), HelloReply)
        self.info = BoardInfo(reply.protocol, reply.slots, reply.firmware)
        return self.info

    def slot_count(self) -> int:
        return (self.info or self.hello()).slots

    def check_slot(self, slot: int) -> None:
        count = self.slot_count()
        if not 1 <= slot <= count:
            raise SlotRangeError(f"slot {slot} does not exist: this board has slots 1..{count}")

    def status(self) -> tuple[SlotReport, ...]:
        """Every slot, asked for in pages of at most ``MAX_STATUS_SLOTS``."""
        reports: list[SlotReport] = []
        total = None
        while total is None or len(reports) < total:
            first = len(reports) + 1
            count = MAX_STATUS_SLOTS if total is None else min(MAX_STATUS_SLOTS, total - first + 1)
            reply = self.request(Status(first, count), StatusReply)
            total = reply.total
            numbers = [report.slot for report in reply.reports]
            if not reply.reports or numbers != list(range(first, first + len(numbers))):
                raise ProtocolError(f"status from slot {first} lists slots {numbers}")
            reports.extend(reply.reports)
        return tuple(reports[:total])

    def set_enabled(self, slot: int, enabled: bool) -> None:
        self.check_slot(slot)
        self.request(SetEnabled(slot, enabled), Ack)

    def set_indicator(self, slot: int, colour: Colour, pattern: Pattern = Pattern.STEADY) -> None:
        self.check_slot(slot)
        self.request(SetIndicator(slot, colour, pattern), Ack)

    def reset(self) -> None:
        self.request(Reset(), Ack)

    def eject(self, slot: int, request_id: str) -> EjectResult:
        """Eject ``slot`` once for ``request_id`` and wait until the powerbank is presented.

        Asking again with the same ``request_id`` (even after a restart) never ejects twice:
        the board answers with what became of that request.
        """
        self.check_slot(slot)
        wire_id = wire_request_id(request_id)
        with self._eject_lock:
            watch = _EjectWatch(wire_id)
            with self._cond:
                self._watches[wire_id] = watch
            try:
                return self._eject(slot, request_id, wire_id, watch)
            finally:
                with self._cond:
                    self._watches.pop(wire_id, None)

    def _eject(self, slot: int, request_id: str, wire_id: int, watch: _EjectWatch) -> EjectResult:
        deadline = time.monotonic() + self.eject_timeout_s
        poll_s = max(2 * self.timeout_s, 0.02)
        reply = self._eject_request(slot, wire_id)
        duplicate, outcome = reply.duplicate, reply.outcome
        while outcome == EjectOutcome.ACCEPTED:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BoardTimeoutError(f"slot {slot}: the board did not finish the eject")
            if watch.event.wait(min(remaining, poll_s)) and watch.outcome is not None:
                outcome = watch.outcome
            else:  # the notification may be lost: ask again, with the same request id
                reply = self._eject_request(slot, wire_id)
                duplicate, outcome = True, reply.outcome
        if outcome == EjectOutcome.JAMMED:
            raise SlotJammedError(f"slot {slot}: the latch jammed; the slot is out of service")
        log.info("slot ejected", slot=slot, request_id=request_id, outcome=outcome.name.lower())
        return EjectResult(slot, request_id, reply.powerbank_id, outcome, duplicate)

    def _eject_request(self, slot: int, wire_id: int) -> EjectReply:
        try:
            reply = self.request(Eject(slot, wire_id), EjectReply)
        except BoardRefusedError as exc:
            exc.args = (f"slot {slot}: eject refused: {NackCode(exc.code).name.lower()}",)
            raise
        if reply.slot != slot or reply.request_id != wire_id:
            raise ProtocolError(
                f"eject of slot {slot} (request {wire_id:016x}) answered for slot {reply.slot}"
                f" (request {reply.request_id:016x})"
            )
        return reply
