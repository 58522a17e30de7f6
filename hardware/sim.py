"""The board simulator: a real peer that speaks docs/slot-protocol.md on a pty or a socket.

``python -m hardware.sim`` (or ``kiosk board-sim``) opens a pseudo-terminal, prints its
path and answers like a cabinet until interrupted; point ``board.url`` at that path. With
``--link PATH`` the pty is also reachable through a stable symlink (as udev gives a USB
adapter), which is how a test pulls the cable (``unplug``) and plugs it back (``replug``).
With ``--listen HOST:PORT`` it serves one TCP client instead (``socket://HOST:PORT``).

Faults come from flags, from a scenario file (TOML with the fields of ``SimConfig``) or,
in tests, from ``sim.faults`` and ``sim.act`` while it runs. Every physical eject is kept in
``sim.ejects`` and, with ``--journal FILE``, written as one JSON line.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import select
import socket
import threading
import time
import tty
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from hardware.errors import PayloadError, ProtocolError, UnknownMessageError
from hardware.messages import Nack, NackCode, Notification, NotifyAck, Request
from hardware.protocol import Packet, StreamDecoder, encode
from hardware.sim_board import Action, Cabinet, EjectRecord, LineFaults, SimConfig
from hardware.sim_lies import tell

TICK_S = 0.002


class BoardSimulator:
    """The simulated board on its own thread (``start``) or in the foreground (``run``)."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        link: Path | None = None,
        listen: tuple[str, int] | None = None,
        journal: Path | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self.faults: LineFaults = self.config.faults.model_copy()
        self.lock = threading.RLock()
        self.link, self.listen, self.journal = link, listen, journal
        self.cabinet = Cabinet.create(self.config, time.monotonic())
        self.stats = {"frames_in": 0, "bad_frames_in": 0, "replies": 0, "dropped": 0}
        self._rng = self.cabinet.rng
        self._decoder = StreamDecoder()
        self._fd: int | None = None  # pty master or connected socket
        self._slave: int | None = None
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self._out: list[tuple[float, int, bytes]] = []  # heap of (due, order, bytes)
        self._in: list[tuple[float, int, Packet]] = []
        self._order = itertools.count()
        self._tx_free = 0.0
        self._notes: deque[Notification] = deque(maxlen=64)
        self._inflight: tuple[int, Notification, float, int] | None = None
        self._note_seq = 0
        self._timeline = sorted(self.config.events, key=lambda event: event.at)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._journal: TextIO | None = None
        self._journaled = 0
        self._started = time.monotonic()
        self._open()
        self._notes.extend(self.cabinet.booted())

    # -- the line ------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """What to give the driver: the pty path, its link, or the socket URL."""
        if self.listen is not None and self._server is not None:
            host, port = self._server.getsockname()[:2]
            return f"socket://{host}:{port}"
        if self.link is not None:
            return str(self.link)
        assert self._slave is not None
        return os.ttyname(self._slave)

    def _open(self) -> None:
        if self.listen is not None:
            self._server = socket.create_server(self.listen)
            self._server.setblocking(False)
            return
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._fd, self._slave = master, slave
        if self.link is not None:
            temporary = self.link.with_name(self.link.name + ".new")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(os.ttyname(slave))
            temporary.replace(self.link)

    def _close_line(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client, self._fd = None, None
        for fd in (self._fd, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._slave = None
        if self.link is not None:
            self.link.unlink(missing_ok=True)

    def unplug(self) -> None:
        """Pull the cable: the pty disappears (and its link with it)."""
        with self.lock:
            self._close_line()
            self._out.clear()
            self._decoder.reset()

    def replug(self) -> None:
        """Plug it back: a new pty behind the same link."""
        with self.lock:
            if self._fd is None:
                self._open()

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):  # nobody reading: bytes are lost
            os.write(self._fd, data)

    def _corrupt(self, data: bytes) -> bytes:
        rate = self.faults.corrupt_rate
        if not rate:
            return data
        out = bytearray(data)
        for index in range(len(out)):
            if self._rng.random() < rate:
                out[index] ^= self._rng.randrange(1, 256)
        return bytes(out)

    def _send(self, frame: bytes, delay: float = 0.0, *, reply: bool = True) -> None:
        frame = self._corrupt(frame)
        if reply and self.faults.corrupt_next:  # a notification's repeat never uses one up
            self.faults.corrupt_next -= 1
            position = self._rng.randrange(2, len(frame) - 1)
            frame = frame[:position] + bytes([frame[position] ^ 0x20]) + frame[position + 1 :]
        due = time.monotonic() + delay
        if self.config.baud:  # the last byte leaves after the frame's time on the wire
            due = max(due, self._tx_free) + len(frame) * 10 / self.config.baud
            self._tx_free = due
        heapq.heappush(self._out, (due, next(self._order), frame))

    # -- the loop ------------------------------------------------------------------------

    def start(self) -> BoardSimulator:
        self._thread = threading.Thread(target=self.run, name="board-sim", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self.lock:
            self._close_line()
            if self._server is not None:
                self._server.close()
            if self._journal is not None:
                self._journal.close()

    def __enter__(self) -> BoardSimulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def run(self) -> None:
        if self.journal is not None:
            self._journal = self.journal.open("a", encoding="utf-8")
        while not self._stop.is_set():
            readable = [fd for fd in (self._fd, self._server) if fd is not None]
            try:
                ready, _, _ = select.select(readable, [], [], TICK_S)
            except (OSError, ValueError):
                ready = []
            with self.lock:
                self._serve(ready)

    def _serve(self, ready: list[Any]) -> None:
        now = time.monotonic()
        if self._server is not None and self._server in ready:
            with contextlib.suppress(BlockingIOError):
                client, _ = self._server.accept()
                if self._client is not None:
                    self._client.close()
                self._client, self._fd = client, client.fileno()
        elif self._fd is not None and self._fd in ready:
            self._receive()
            now = time.monotonic()
        while self._in and self._in[0][0] <= now:
            self._answer(heapq.heappop(self._in)[2])
        self._timeline_due(now)
        self._notes.extend(self.cabinet.tick(now))
        self._journal_ejects()
        if self.faults.garbage:
            self._write(bytes(self._rng.randrange(256) for _ in range(48)))
        elif not self.faults.silent:
            self._notify(now)
        now = time.monotonic()
        while self._out and self._out[0][0] <= now:
            self._write(heapq.heappop(self._out)[2])

    def _receive(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the socket peer left (a pty master never reads EOF here)
            if self._client is not None:
                self._client.close()
                self._client, self._fd = None, None
            return
        for item in self._decoder.feed(self._corrupt(data)):
            if isinstance(item, ProtocolError):
                self.stats["bad_frames_in"] += 1
                self._refuse(item)
                continue
            self.stats["frames_in"] += 1
            wire_s = (
                len(encode(item.seq, item.message)) * 10 / self.config.baud
                if self.config.baud
                else 0.0
            )
            heapq.heappush(self._in, (time.monotonic() + wire_s, next(self._order), item))

    def _refuse(self, error: ProtocolError) -> None:
        """A request with a good CRC that the board cannot run gets a NACK."""
        if not isinstance(error, UnknownMessageError | PayloadError):
            return  # a framing error: the frame's SEQ cannot be trusted
        if error.seq is None or error.type_byte is None or error.type_byte >= 0x40:
            return
        if self.faults.silent or self.faults.garbage:
            return
        code = (
            NackCode.UNKNOWN_COMMAND
            if isinstance(error, UnknownMessageError)
            else NackCode.BAD_PAYLOAD
        )
        self._send(encode(error.seq, Nack(code, error.type_byte)), self.faults.slow_s)

    def _answer(self, packet: Packet) -> None:
        message = packet.message
        if isinstance(message, NotifyAck):
            if self.faults.lose_acks:  # lost on the line: the notification is sent again
                self.faults.lose_acks -= 1
                return
            if self._inflight is not None and self._inflight[0] == packet.seq:
                self._inflight = None
            return
        if not isinstance(message, Request) or self.faults.silent or self.faults.garbage:
            return
        reply, notes = self.cabinet.handle(message, time.monotonic())
        if notes:  # a reset: the board restarts and numbers its notifications afresh
            self._notes.clear()
            self._inflight, self._note_seq = None, 0
            self._notes.extend(notes)
        if self.faults.drop_next:
            self.faults.drop_next -= 1
            self.stats["dropped"] += 1
            return
        if self.faults.drop_rate and self._rng.random() < self.faults.drop_rate:
            self.stats["dropped"] += 1
            return
        self.stats["replies"] += 1
        lied = tell(self.faults.lie, reply, len(self.cabinet.slots))
        self._send(encode(packet.seq, lied), self.faults.slow_s)

    def _notify(self, now: float) -> None:
        """Send notifications one at a time, each repeated until acknowledged."""
        if self._inflight is None and self._notes:
            self._inflight = (self._note_seq, self._notes.popleft(), 0.0, 0)
            self._note_seq = (self._note_seq + 1) & 0xFF
        if self._inflight is None:
            return
        seq, note, sent_at, tries = self._inflight
        if tries and now - sent_at < self.config.notify_retry_s:
            return
        if tries >= self.config.notify_tries:
            self._inflight = None
            return
        delay = self.faults.slow_notify_s  # a repeat is due notify_retry_s after it leaves
        frame = encode(seq, tell(self.faults.lie, note, len(self.cabinet.slots)))
        self._send(frame, delay, reply=False)
        self._inflight = (seq, note, now + delay, tries + 1)

    def _timeline_due(self, now: float) -> None:
        while self._timeline and self._timeline[0].at <= now - self._started:
            event = self._timeline.pop(0)
            self.act(event.action, event.slot, event.value, event.powerbank_id, event.door)

    def _journal_ejects(self) -> None:
        if self._journal is None:
            return
        if len(self.cabinet.ejects) == self._journaled:
            return
        for record in self.cabinet.ejects[self._journaled :]:
            self._journal.write(json.dumps(_record(record)) + "\n")
        self._journal.flush()
        self._journaled = len(self.cabinet.ejects)

    # -- what tests and scenarios do -----------------------------------------------------

    def act(
        self,
        action: Action,
        slot: int | None = None,
        value: int | None = None,
        powerbank_id: str | None = None,
        door: Any = None,
    ) -> None:
        """Make something happen: ``return``, ``remove``, ``jam``, ``overheat``, ``silent``..."""
        with self.lock:
            if action in ("silent", "garbage", "normal"):
                self.faults.silent = action == "silent"
                self.faults.garbage = action == "garbage"
                return
            self._notes.extend(self.cabinet.act(action, slot, value, powerbank_id, door))

    @property
    def ejects(self) -> list[EjectRecord]:
        """Every physical eject so far (copies of the records)."""
        with self.lock:
            return [EjectRecord(**vars(record)) for record in self.cabinet.ejects]


def _record(record: EjectRecord) -> dict[str, Any]:
    return {
        "slot": record.slot,
        "request_id": f"{record.request_id:016x}",
        "powerbank_id": record.powerbank_id,
        "started": record.started,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m hardware.sim`` and ``kiosk board-sim``: see ``hardware.sim_cli``."""
    from hardware.sim_cli import main as run

    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
