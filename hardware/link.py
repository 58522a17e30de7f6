"""The serial link to the slot board: frames of ``hardware.protocol`` on a pyserial port.

``SerialLink(url)`` opens any pyserial URL (``/dev/ttyAMA0``, ``/dev/ttyUSB0``, a pty path,
``socket://host:port``) with ``serial_for_url``. One reader thread turns bytes into packets:
replies go to the request waiting for them, notifications are acknowledged, de-duplicated
and delivered as typed events (the ``events`` queue, or an ``on_event`` callback run on a
thread of its own). A request that gets no valid reply is sent again, the same bytes under
the same sequence number, up to ``retries`` times with a doubling delay (tenacity). When
the port vanishes the reader reopens it with backoff. No pyserial exception leaves this
module: they become ``hardware.errors`` exceptions. ``hardware.driver.SerialBoard`` adds
the board's commands on top.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol, Self, TypeVar, cast

import serial
import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from hardware.agreement import check_notification, check_reply
from hardware.board import BoardEvent, BoardOffline, BoardOnline, LinkStats
from hardware.errors import (
    BoardConnectError,
    BoardError,
    BoardRefusedError,
    BoardTimeoutError,
    ContradictionError,
    ProtocolError,
    ProtocolVersionError,
)
from hardware.messages import (
    Booted,
    Hello,
    HelloReply,
    Nack,
    Notification,
    NotifyAck,
    Reply,
    Request,
)
from hardware.protocol import Packet, StreamDecoder, encode

log = structlog.get_logger("hardware.board")
R = TypeVar("R", bound=Reply)
_SERIAL_ERRORS = (serial.SerialException, OSError, ValueError, TypeError, AttributeError)
#: A Booted that repeats the last one (same SEQ, no notification between) within this many
#: seconds of it is the board sending it again for want of an acknowledgement, not a
#: second restart (the board repeats every 100 ms, at most 5 times)
REPEATED_BOOTED_S = 2.0


class _Port(Protocol):
    """The part of a pyserial port the driver uses (any ``serial_for_url`` transport)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def close(self) -> None: ...


class _Retry(Exception):
    """One attempt failed in a way that a retransmission may fix."""

    def __init__(self, error: BoardError) -> None:
        super().__init__(str(error))
        self.error = error


class SerialLink:
    """Frames over a pyserial port: requests with retries, notifications as events."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        timeout_s: float = 0.5,
        retries: int = 3,
        backoff_s: float = 0.02,
        on_event: Callable[[BoardEvent], None] | None = None,
        exclusive: bool = True,
    ) -> None:
        self.url, self.baudrate, self.exclusive = url, baudrate, exclusive
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.stats = LinkStats()
        self.events: queue.Queue[BoardEvent] = queue.Queue(maxsize=1000)
        self._on_event = on_event
        self._port: _Port | None = None
        self._port_lock = threading.Lock()
        self._request_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: int | None = None
        self._reply: Reply | None = None
        self._garbled = 0
        self._decoder = StreamDecoder()
        self._seq = itertools.count(1)
        self._last_note: int | None = None
        self._last_booted: tuple[Booted, float] | None = None  # and when it last came
        self._boot_expected = False  # a Reset was sent: its Booted is never a repeat
        self._online = False
        self._online_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._outbox: queue.Queue[BoardEvent] = queue.Queue(maxsize=1000)

    # -- the port ------------------------------------------------------------------------

    def open(self) -> Self:
        """Open the port and start reading; ``BoardConnectError`` when it cannot be opened."""
        self._open_port()
        self._start(self._read_loop, "board-reader")
        if self._on_event is not None:
            self._start(self._dispatch_loop, "board-events")
        return self

    def _start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _open_port(self) -> None:
        try:
            port = serial.serial_for_url(
                self.url,
                baudrate=self.baudrate,
                timeout=0.05,
                write_timeout=1.0,
                exclusive=self.exclusive,
            )
        except _SERIAL_ERRORS as exc:
            raise BoardConnectError(f"{self.url}: cannot open the board's port ({exc})") from None
        with self._port_lock:
            self._port = cast(_Port, port)
        self._decoder.reset()

    def close(self) -> None:
        self._stop.set()
        with self._port_lock:
            port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(*_SERIAL_ERRORS):
                getattr(port, "cancel_read", lambda: None)()  # wakes a posix read at once
        for thread in self._threads:
            thread.join(timeout=2)
        if port is not None:
            with contextlib.suppress(*_SERIAL_ERRORS):
                port.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def online(self) -> bool:
        return self._online

    def _lost(self, reason: str) -> None:
        with self._port_lock:
            port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(*_SERIAL_ERRORS):
                port.close()
        self._set_online(False, reason)
        with self._cond:
            self._cond.notify_all()

    def _reconnect(self) -> None:
        delay = 0.05
        while not self._stop.wait(delay):
            try:
                self._open_port()
            except BoardConnectError:
                delay = min(delay * 2, 1.0)
                continue
            self.stats.reconnects += 1
            # the board did not restart (it would send Booted): a notification it repeats
            # because the cable went before its acknowledgement is still the same one
            log.info("board port reopened", url=self.url)
            self._start(self._probe, "board-probe")
            return

    def _probe(self) -> None:
        """After a reconnect: one request, so the link reports online (or offline) again."""
        with contextlib.suppress(BoardError):
            self.request(Hello(), HelloReply)

    def _write(self, frame: bytes) -> None:
        with self._port_lock:
            port = self._port
            if port is None:
                raise BoardConnectError(f"{self.url}: the board's port is not open")
            try:
                port.write(frame)
                return
            except _SERIAL_ERRORS as exc:
                reason = f"{self.url}: write failed ({exc})"
        self._lost(reason)
        raise BoardConnectError(reason)

    # -- reading -------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            port = self._port
            if port is None:
                self._reconnect()
                continue
            try:
                data = port.read(1)
                if data and port.in_waiting:
                    data += port.read(port.in_waiting)
            except _SERIAL_ERRORS as exc:
                if not self._stop.is_set():
                    self._lost(f"{self.url}: the port vanished ({exc})")
                continue
            if data:
                for item in self._decoder.feed(data):
                    self._received(item)

    def _received(self, item: Packet | ProtocolError) -> None:
        if isinstance(item, ProtocolError):
            self.stats.bad_frames += 1
            with self._cond:
                self._garbled += 1
            log.debug("board frame dropped", error=str(item))
            return
        message = item.message
        if isinstance(message, Reply):
            with self._cond:
                if self._pending == item.seq and self._reply is None:
                    self._reply = message
                    self._on_reply(message)
                    self._cond.notify_all()
                else:
                    self.stats.stale_replies += 1
        elif isinstance(message, Notification):
            self._notified(item.seq, message)

    def _notified(self, seq: int, note: Notification) -> None:
        with contextlib.suppress(BoardConnectError):
            self._write(encode(seq, NotifyAck()))
        if isinstance(note, Booted):
            if self._repeated_boot(seq, note):
                self.stats.duplicate_notifications += 1
                return
            self._last_note = None
        elif seq == self._last_note:
            self.stats.duplicate_notifications += 1
            return
        self._last_note = seq
        self.stats.notifications += 1
        try:
            self._on_notification(note)
        except ContradictionError as exc:  # refused: never delivered as an event
            self._refused(exc, type(note).__name__)
            return
        self._set_online(True)
        self._emit(note)

    def _repeated_boot(self, seq: int, note: Booted) -> bool:
        now, last = time.monotonic(), self._last_booted
        self._last_booted = (note, now)
        expected, self._boot_expected = self._boot_expected, False
        return (
            not expected
            and last is not None
            and seq == self._last_note
            and last[0] == note
            and now - last[1] < REPEATED_BOOTED_S
        )

    def _on_reply(self, reply: Reply) -> None:
        """Hook for subclasses, run on the reader thread with ``_cond`` held when the reply
        to the request under way arrives: in the line's order with the notifications."""

    def _on_notification(self, note: Notification) -> None:
        """Hook for subclasses, run on the reader thread before the event is delivered;
        ``ContradictionError`` refuses the notification (docs/slot-protocol.md, section 7)."""
        check_notification(note, None)

    def _refused(self, error: ContradictionError, what: str) -> None:
        """An answer of the board that contradicts its request or the hello."""
        self.stats.contradictions += 1
        log.warning("board answer refused", message=what, error=str(error))
        if isinstance(error, ProtocolVersionError):
            self._set_online(False, str(error))

    def _emit(self, event: BoardEvent) -> None:
        target = self._outbox if self._on_event is not None else self.events
        with contextlib.suppress(queue.Full):
            target.put_nowait(event)

    def _dispatch_loop(self) -> None:
        assert self._on_event is not None
        while not self._stop.is_set():
            try:
                event = self._outbox.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._on_event(event)
            except Exception:
                log.exception("board event handler failed", board_event=type(event).__name__)

    def _set_online(self, online: bool, reason: str = "") -> None:
        # the reader, a request and the reconnect all call this: one change at a time, so
        # the events alternate (never two BoardOnline in a row) and match the flag
        with self._online_lock:
            if online == self._online:
                return
            self._online = online
            if online:
                log.info("board online", url=self.url)
                self._emit(BoardOnline())
            else:
                log.warning("board offline", url=self.url, reason=reason)
                self._emit(BoardOffline(reason))

    def next_event(self, timeout: float | None = None) -> BoardEvent | None:
        """The next event from the board, or None after ``timeout`` seconds."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    # -- requests ------------------------------------------------------------------------

    def request(self, message: Request, expect: type[R]) -> R:
        """Send ``message`` and return its reply; NACK becomes ``BoardRefusedError``."""
        if self._stop.is_set():
            raise BoardConnectError(f"{self.url}: the board driver is closed")
        with self._request_lock:
            seq = next(self._seq) & 0xFF
            frame = encode(seq, message)
            self.stats.requests += 1
            retrying = Retrying(
                stop=stop_after_attempt(self.retries + 1),
                wait=wait_exponential(multiplier=self.backoff_s, max=1.0),
                retry=retry_if_exception_type(_Retry),
                reraise=True,
            )
            try:
                for attempt in retrying:
                    with attempt:
                        if attempt.retry_state.attempt_number > 1:
                            self.stats.retries += 1
                        reply = self._exchange(seq, frame)
            except _Retry as failure:
                self._set_online(False, str(failure.error))
                raise failure.error from None
        self._set_online(True)
        try:
            check_reply(message, reply)
        except ContradictionError as exc:
            self._refused(exc, type(reply).__name__)
            raise
        if isinstance(reply, Nack):
            raise BoardRefusedError(
                f"the board refused {type(message).__name__}: {reply.code.name.lower()}"
                f" (detail {reply.detail})",
                code=reply.code,
                detail=reply.detail,
            )
        if not isinstance(reply, expect):  # a caller expecting other than message.REPLY
            raise ContradictionError(
                f"{type(message).__name__} answered by {type(reply).__name__},"
                f" expected {expect.__name__}"
            )
        return reply

    def _exchange(self, seq: int, frame: bytes) -> Reply:
        with self._cond:
            self._pending, self._reply, self._garbled = seq, None, 0
        try:
            self._write(frame)
        except BoardConnectError as exc:
            time.sleep(self.timeout_s)  # give the reader a chance to reopen the port
            raise _Retry(exc) from None
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while self._reply is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            reply, garbled = self._reply, self._garbled
            self._pending = None
        if reply is not None:
            return reply
        self.stats.timeouts += 1
        if garbled:
            raise _Retry(
                ProtocolError(f"{self.url}: no valid reply, only {garbled} damaged frame(s)")
            )
        raise _Retry(BoardTimeoutError(f"{self.url}: no reply within {self.timeout_s:g} s"))
