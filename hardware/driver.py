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
from collections import OrderedDict
from collections.abc import Callable

from hardware.agreement import (
    check_eject_reply,
    check_notification,
    check_outcome,
    check_settled,
    check_status,
)
from hardware.board import BoardEvent, BoardInfo, EjectResult
from hardware.config import BoardConfig
from hardware.errors import (
    BoardError,
    BoardRefusedError,
    BoardTimeoutError,
    ContradictionError,
    EjectForgottenError,
    ProtocolVersionError,
    SlotJammedError,
    SlotRangeError,
)
from hardware.link import SerialLink, log
from hardware.messages import (
    MAX_STATUS_SLOTS,
    Ack,
    Booted,
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
    Relocked,
    Reply,
    Reset,
    SetEnabled,
    SetIndicator,
    SlotReport,
    Status,
    StatusReply,
)
from hardware.protocol import wire_request_id

__all__ = ["SerialBoard"]

REMEMBERED_CONTRADICTIONS = 64  # request ids whose answers contradicted them
REMEMBERED_SENT = 256  # request ids sent, with the board's restarts counted at the time


class _EjectWatch:
    """One eject under way: its request, the board's first answer and its outcome."""

    def __init__(self, request: Eject) -> None:
        self.request = request
        self.reply: EjectReply | None = None
        self.note: Ejected | Jammed | None = None
        self.error: ContradictionError | None = None
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
        self.info: BoardInfo | None = None  # what the board said at hello (or at boot)
        self._eject_lock = threading.Lock()
        self._watches: dict[int, _EjectWatch] = {}
        self._contradicted: OrderedDict[int, str] = OrderedDict()
        self._boots = 0  # Booted notifications seen: the board forgets its ejects at each
        # request id -> _boots when it was sent or, later, when the board last answered it
        self._sent: OrderedDict[int, int] = OrderedDict()
        self._asking: Eject | None = None  # the eject whose answer is awaited

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

    def _on_reply(self, reply: Reply) -> None:
        asking = self._asking
        if (
            isinstance(reply, EjectReply)
            and asking is not None
            and (reply.slot, reply.request_id) == (asking.slot, asking.request_id)
            and asking.request_id in self._sent
        ):  # answered after every Booted seen so far: the board as it is now knows it
            self._sent[asking.request_id] = self._boots

    def _on_notification(self, note: Notification) -> None:
        slots = None if self.info is None else self.info.slots
        if isinstance(note, Booted):  # a restart: what the board said at hello is void
            with self._cond:
                self._boots += 1
            self.info = None
            check_notification(note, slots)
            self.info = BoardInfo(note.protocol, note.slots, note.firmware)
            return
        check_notification(note, slots)
        if not isinstance(note, Ejected | Relocked | Jammed):
            return
        with self._cond:
            watch = self._watches.get(note.request_id)
        if watch is None:
            return
        try:
            check_outcome(watch.request, note, watch.reply)
        except ContradictionError as exc:
            watch.error = exc
            watch.event.set()
            raise
        if isinstance(note, Ejected | Jammed):
            watch.note = note
            watch.event.set()

    def hello(self) -> BoardInfo:
        """Agree with the board on its protocol version (this kiosk's only) and slot count."""
        try:
            reply = self.request(Hello(), HelloReply)
        except ProtocolVersionError:
            self.info = None
            raise
        self.info = BoardInfo(reply.protocol, reply.slots, reply.firmware)
        return self.info

    def _agreed(self) -> BoardInfo:
        return self.info or self.hello()

    def slot_count(self) -> int:
        return self._agreed().slots

    def check_slot(self, slot: int) -> None:
        count = self.slot_count()
        if not 1 <= slot <= count:
            raise SlotRangeError(f"slot {slot} does not exist: this board has slots 1..{count}")

    def status(self) -> tuple[SlotReport, ...]:
        """Every slot, asked for in pages of at most ``MAX_STATUS_SLOTS``; a page that
        contradicts its request or the hello raises ``ContradictionError``."""
        slots = self._agreed().slots
        reports: list[SlotReport] = []
        while len(reports) < slots:
            first = len(reports) + 1
            request = Status(first, min(MAX_STATUS_SLOTS, slots - first + 1))
            reply = self.request(request, StatusReply)
            try:
                check_status(request, reply, slots)
            except ContradictionError as exc:
                self._refused(exc, type(reply).__name__)
                if reply.total != slots:  # say hello again before the next command
                    self.info = None
                raise
            reports.extend(reply.reports)
        return tuple(reports)

    def set_enabled(self, slot: int, enabled: bool) -> None:
        self.check_slot(slot)
        self.request(SetEnabled(slot, enabled), Ack)

    def set_indicator(self, slot: int, colour: Colour, pattern: Pattern = Pattern.STEADY) -> None:
        self.check_slot(slot)
        self.request(SetIndicator(slot, colour, pattern), Ack)

    def reset(self) -> None:
        self._boot_expected = True  # the Booted that follows is a restart, not a repeat
        self.request(Reset(), Ack)

    def eject(self, slot: int, request_id: str) -> EjectResult:
        """Eject ``slot`` once for ``request_id`` and wait until the powerbank is presented.

        Asking again with the same ``request_id`` (even after a restart) never ejects twice:
        the board answers with what became of that request. An answer that contradicts the
        eject (another slot, request id or powerbank) raises ``ContradictionError``: the
        outcome is unknown, and this driver refuses that request id from then on, so no
        later answer of the board confirms it.
        """
        self.check_slot(slot)
        wire_id = wire_request_id(request_id)
        with self._eject_lock:
            earlier = self._contradicted.get(wire_id)
            if earlier is not None:
                raise ContradictionError(
                    f"slot {slot}: the board contradicted itself about request {request_id}"
                    f" ({earlier}); its outcome is unknown"
                )
            watch = _EjectWatch(Eject(slot, wire_id))
            with self._cond:
                self._watches[wire_id] = watch
            try:
                return self._eject(request_id, watch)
            except ContradictionError as exc:
                self._contradicted[wire_id] = str(exc)
                while len(self._contradicted) > REMEMBERED_CONTRADICTIONS:
                    self._contradicted.popitem(last=False)
                raise
            finally:
                with self._cond:
                    self._watches.pop(wire_id, None)

    def _eject(self, request_id: str, watch: _EjectWatch) -> EjectResult:
        slot = watch.request.slot
        deadline = time.monotonic() + self.eject_timeout_s
        poll_s = max(2 * self.timeout_s, 0.02)
        self._check_remembered(watch.request)
        reply = first = watch.reply = self._eject_request(watch, None)
        duplicate, outcome = reply.duplicate, reply.outcome
        while outcome == EjectOutcome.ACCEPTED:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BoardTimeoutError(f"slot {slot}: the board did not finish the eject")
            if watch.event.wait(min(remaining, poll_s)):
                if watch.error is not None:
                    raise watch.error
                note = watch.note  # the event is set with a note or an error
                if note is None:
                    continue
                check_outcome(watch.request, note, first)
                ok = isinstance(note, Ejected)
                outcome = EjectOutcome.PRESENTED if ok else EjectOutcome.JAMMED
            else:  # the notification may be lost: ask again, with the same request id
                self._check_remembered(watch.request)
                try:
                    reply = self._eject_request(watch, first)
                except BoardError:
                    if watch.error is not None:  # a notification said more meanwhile
                        raise watch.error from None
                    raise
                duplicate, outcome = True, reply.outcome
        if watch.error is not None:  # a notification contradicted it while we asked again
            raise watch.error
        try:  # one that arrived while we asked again must agree with the answer
            check_settled(watch.request, watch.note, outcome)
        except ContradictionError as exc:
            self._refused(exc, type(reply).__name__)
            raise
        if outcome == EjectOutcome.JAMMED:
            raise SlotJammedError(f"slot {slot}: the latch jammed; the slot is out of service")
        log.info("slot ejected", slot=slot, request_id=request_id, outcome=outcome.name.lower())
        return EjectResult(slot, request_id, reply.powerbank_id, outcome, duplicate)

    def _check_remembered(self, request: Eject) -> None:
        """Before an eject is sent (or sent again): ``EjectForgottenError`` when the board
        restarted since this request id was first sent, or since it last answered about it
        (a power-up ``Booted`` that crossed the first ask on the line is followed by the
        answer of a board that knows the request). A board that restarted after that has
        forgotten the request, so it would answer as if it were new: perhaps refuse it,
        perhaps eject again."""
        with self._cond:
            boots = self._boots
            sent = self._sent.setdefault(request.request_id, boots)
            self._sent.move_to_end(request.request_id)
            while len(self._sent) > REMEMBERED_SENT:
                self._sent.popitem(last=False)
        if sent != boots:
            error = EjectForgottenError(
                f"slot {request.slot}: the board restarted after request"
                f" {request.request_id:016x} was sent; what became of that eject is unknown"
            )
            log.warning("board restarted during an eject", error=str(error))
            raise error

    def _eject_request(self, watch: _EjectWatch, first: EjectReply | None) -> EjectReply:
        slot = watch.request.slot
        with self._cond:
            self._asking = watch.request
        try:
            reply = self.request(watch.request, EjectReply)
        except BoardRefusedError as exc:
            code = NackCode(exc.code).name.lower()
            if first is not None:  # it accepted the request, and no longer knows it
                error = EjectForgottenError(
                    f"slot {slot}: asked again about request {watch.request.request_id:016x},"
                    f" the board refused it ({code}); what became of that eject is unknown"
                )
                self._refused(error, "Nack")
                raise error from None
            exc.args = (f"slot {slot}: eject refused: {code}",)
            raise
        finally:
            with self._cond:
                self._asking = None
        try:
            check_eject_reply(watch.request, reply, first)
        except ContradictionError as exc:
            self._refused(exc, type(reply).__name__)
            raise
        return reply
