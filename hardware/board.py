"""What the kiosk needs from a slot cabinet: the ``SlotBoard`` contract and its values.

``hardware.driver.SerialBoard`` is the real implementation; the events it delivers are the
protocol's notifications (``hardware.messages``) and the two link events defined here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hardware.messages import Colour, EjectOutcome, Notification, Pattern, SlotReport


@dataclass(frozen=True)
class BoardInfo:
    protocol: int
    slots: int
    firmware: str


@dataclass(frozen=True)
class EjectResult:
    """A powerbank was presented (or already taken or relocked, when asked again)."""

    slot: int
    request_id: str
    powerbank_id: str
    outcome: EjectOutcome
    duplicate: bool  # the board answered from its memory of this request id


@dataclass(frozen=True)
class BoardOnline:
    """The board answers properly (again)."""


@dataclass(frozen=True)
class BoardOffline:
    """The board stopped answering properly, or its port vanished; ``reason`` says which."""

    reason: str


BoardEvent = Notification | BoardOnline | BoardOffline


class SlotBoard(Protocol):
    """What the kiosk needs from a slot cabinet."""

    def hello(self) -> BoardInfo: ...

    def status(self) -> tuple[SlotReport, ...]: ...

    def eject(self, slot: int, request_id: str) -> EjectResult: ...

    def set_enabled(self, slot: int, enabled: bool) -> None: ...

    def set_indicator(
        self, slot: int, colour: Colour, pattern: Pattern = Pattern.STEADY
    ) -> None: ...

    def close(self) -> None: ...


@dataclass
class LinkStats:
    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    bad_frames: int = 0
    stale_replies: int = 0
    notifications: int = 0
    duplicate_notifications: int = 0
    reconnects: int = 0
    contradictions: int = 0  # answers refused: they contradict their request or the hello
