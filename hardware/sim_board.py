"""The simulated cabinet behind the board simulator: slots, latches, riders and faults.

Pure state with time passed in: ``handle(request, now)`` answers one request and
``tick(now)`` advances the mechanics (ejects that take time, a rider who takes the
powerbank or leaves it, returns into empty slots, charging, scheduled faults) and returns
the notifications they cause. ``hardware.sim`` puts this model on a real serial line.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hardware.messages import (
    PROTOCOL_VERSION,
    Ack,
    Booted,
    Door,
    DoorState,
    Eject,
    Ejected,
    EjectOutcome,
    EjectReply,
    Fault,
    FaultCleared,
    FaultCode,
    Hello,
    HelloReply,
    Inserted,
    Jammed,
    Nack,
    NackCode,
    Notification,
    Relocked,
    Removed,
    Reply,
    Request,
    Reset,
    SetEnabled,
    SetIndicator,
    SlotCondition,
    SlotReport,
    Status,
    StatusReply,
)
from hardware.sim_lies import Lie

Action = Literal[
    "return",
    "remove",
    "jam",
    "unjam",
    "overheat",
    "heat",
    "cool",
    "stall",
    "unstall",
    "door",
    "silent",
    "garbage",
    "normal",
]
HOT_C = 55  # a battery that runs hot ("heat") without the board calling it a fault
REMEMBERED_EJECTS = 64  # request ids the board remembers for idempotency


class LineFaults(BaseModel):
    """Faults of the serial line and of the board's firmware, changeable at run time."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    corrupt_rate: float = Field(default=0.0, ge=0, le=1, description="per byte, both ways")
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="replies never sent")
    slow_s: float = Field(default=0.0, ge=0, le=60, description="delay before each reply")
    slow_notify_s: float = Field(
        default=0.0, ge=0, le=60, description="delay before each notification leaves"
    )
    drop_next: int = Field(default=0, ge=0, description="drop this many next replies")
    corrupt_next: int = Field(default=0, ge=0, description="corrupt this many next replies")
    lose_acks: int = Field(
        default=0, ge=0, description="lose this many next NotifyAcks: the board repeats"
    )
    silent: bool = False
    garbage: bool = False
    lie: Lie | None = Field(default=None, description="answers that contradict their request")


class TimedEvent(BaseModel):
    """One scheduled happening of a scenario file."""

    model_config = ConfigDict(extra="forbid")

    at: float = Field(ge=0, description="seconds after the simulator starts")
    action: Action
    slot: int | None = Field(default=None, ge=1, le=64)
    value: int | None = Field(default=None, ge=0, le=127, description="charge or temperature")
    powerbank_id: str | None = Field(default=None, pattern=r"^[!-~]{1,16}$")
    door: DoorState | None = None


class SimConfig(BaseModel):
    """Everything about the simulated cabinet; a scenario file (TOML) has these fields."""

    model_config = ConfigDict(extra="forbid")

    slots: int = Field(default=8, ge=1, le=64)
    seed: int | None = None
    firmware: str = Field(default="sim-1.0", pattern=r"^[ -~]{0,32}$")
    filled: int | None = Field(default=None, ge=0, le=64, description="docked at start")
    charge_rate: float = Field(default=0.5, ge=0, le=100, description="% per second")
    eject_s: float = Field(default=0.8, ge=0, le=30)
    take_rate: float = Field(default=1.0, ge=0, le=1)
    take_after_s: float = Field(default=2.0, ge=0, le=600)
    relock_after_s: float = Field(default=10.0, ge=0, le=600)
    return_after_s: float | None = Field(default=None, ge=0, le=3600)
    notify_retry_s: float = Field(default=0.1, gt=0, le=10)
    notify_tries: int = Field(default=5, ge=1, le=100)
    baud: int | None = Field(default=None, ge=1200, le=3_000_000)
    jammed: list[int] = Field(default_factory=list)
    overheat: list[int] = Field(default_factory=list)
    hot: list[int] = Field(default_factory=list, description=f"run at {HOT_C} C, no fault")
    stalled: list[int] = Field(default_factory=list, description="never gain charge")
    faults: LineFaults = Field(default_factory=LineFaults)
    events: list[TimedEvent] = Field(default_factory=list)


@dataclass
class SimSlot:
    number: int
    condition: SlotCondition = SlotCondition.EMPTY
    powerbank_id: str = ""
    charge: float = 0.0
    temperature: int = 25
    disabled: bool = False
    fault: FaultCode = FaultCode.NONE
    jammed: bool = False
    stalled: bool = False  # the battery gains no charge while docked
    due: float | None = None  # when the pending mechanical step happens
    step: str = ""  # "eject", "take", "relock", "return"
    request_id: int | None = None

    def report(self) -> SlotReport:
        docked = self.condition != SlotCondition.EMPTY and self.powerbank_id
        return SlotReport(
            slot=self.number,
            condition=self.condition,
            disabled=self.disabled,
            fault=self.fault,
            charge=int(self.charge) if docked else None,
            temperature=self.temperature,
            powerbank_id=self.powerbank_id,
        )


@dataclass
class EjectRecord:
    """One physical eject, kept for idempotency and for the simulator's journal."""

    slot: int
    request_id: int
    powerbank_id: str
    started: float
    outcome: EjectOutcome = EjectOutcome.ACCEPTED


@dataclass
class Cabinet:
    config: SimConfig
    now: float = 0.0
    slots: list[SimSlot] = field(default_factory=list)
    ejects: list[EjectRecord] = field(default_factory=list)
    remembered: OrderedDict[int, EjectRecord] = field(default_factory=OrderedDict)
    indicators: dict[int, tuple[int, int]] = field(default_factory=dict)
    door: DoorState = DoorState.CLOSED
    rng: random.Random = field(default_factory=random.Random)
    _serial: int = 0

    @classmethod
    def create(cls, config: SimConfig, now: float = 0.0) -> Cabinet:
        cabinet = cls(config=config, now=now, rng=random.Random(config.seed))
        filled = config.slots if config.filled is None else min(config.filled, config.slots)
        for number in range(1, config.slots + 1):
            slot = SimSlot(number, jammed=number in config.jammed)
            slot.stalled = number in config.stalled
            if number in config.hot:
                slot.temperature = HOT_C
            if number <= filled:
                slot.condition = SlotCondition.DOCKED
                slot.powerbank_id = cabinet.new_powerbank_id()
                slot.charge = float(cabinet.rng.randint(40, 100))
            cabinet.slots.append(slot)
        return cabinet

    def new_powerbank_id(self) -> str:
        self._serial += 1
        return f"PB{self.rng.randrange(16**4):04X}{self._serial:04d}"

    def slot(self, number: int) -> SimSlot | None:
        return self.slots[number - 1] if 1 <= number <= len(self.slots) else None

    def booted(self) -> list[Notification]:
        notes: list[Notification] = [
            Booted(PROTOCOL_VERSION, len(self.slots), self.config.firmware)
        ]
        for number in self.config.overheat:
            notes += self.act("overheat", number, 70)
        return notes

    # -- requests ------------------------------------------------------------------------

    def handle(self, request: Request, now: float) -> tuple[Reply, list[Notification]]:
        """Answer one request; the notifications are those it caused at once (a reset)."""
        self.now = now
        if isinstance(request, Hello):
            return HelloReply(PROTOCOL_VERSION, len(self.slots), self.config.firmware), []
        if isinstance(request, Status):
            if self.slot(request.first) is None:
                return Nack(NackCode.SLOT_OUT_OF_RANGE, request.first), []
            chosen = self.slots[request.first - 1 : request.first - 1 + request.count]
            return StatusReply(len(self.slots), tuple(s.report() for s in chosen)), []
        if isinstance(request, Eject):
            return self._eject(request), []
        if isinstance(request, SetEnabled | SetIndicator):
            slot = self.slot(request.slot)
            if slot is None:
                return Nack(NackCode.SLOT_OUT_OF_RANGE, request.slot), []
            if isinstance(request, SetEnabled):
                slot.disabled = not request.enabled
            else:
                self.indicators[request.slot] = (request.colour, request.pattern)
            return Ack(), []
        if isinstance(request, Reset):
            return Ack(), self.reset()
        return Nack(NackCode.UNKNOWN_COMMAND, request.TYPE), []

    def _eject(self, request: Eject) -> Reply:
        known = self.remembered.get(request.request_id)
        if known is not None:
            return EjectReply(known.slot, known.request_id, known.outcome, True, known.powerbank_id)
        slot = self.slot(request.slot)
        if slot is None:
            return Nack(NackCode.SLOT_OUT_OF_RANGE, request.slot)
        refusal = None
        if slot.disabled:
            refusal = NackCode.SLOT_DISABLED
        elif slot.condition == SlotCondition.FAULT:
            refusal = NackCode.SLOT_FAULT
        elif slot.condition in (SlotCondition.EJECTING, SlotCondition.PRESENTED):
            refusal = NackCode.SLOT_BUSY
        elif slot.condition == SlotCondition.EMPTY:
            refusal = NackCode.SLOT_EMPTY
        elif any(s.condition == SlotCondition.EJECTING for s in self.slots):
            refusal = NackCode.BOARD_BUSY
        if refusal is not None:
            return Nack(refusal, request.slot)
        record = EjectRecord(slot.number, request.request_id, slot.powerbank_id, self.now)
        self.ejects.append(record)
        self.remembered[request.request_id] = record
        while len(self.remembered) > REMEMBERED_EJECTS:
            self.remembered.popitem(last=False)
        slot.condition, slot.request_id = SlotCondition.EJECTING, request.request_id
        slot.step, slot.due = "eject", self.now + self.config.eject_s
        return EjectReply(
            slot.number, request.request_id, record.outcome, False, record.powerbank_id
        )

    def reset(self) -> list[Notification]:
        """The board restarts: volatile settings are lost, latched faults re-tested."""
        self.remembered.clear()
        self.indicators.clear()
        for slot in self.slots:
            slot.disabled = False
            if slot.fault == FaultCode.LATCH_JAMMED and not slot.jammed:
                slot.fault = FaultCode.NONE
                slot.condition = SlotCondition.DOCKED if slot.powerbank_id else SlotCondition.EMPTY
        return [Booted(PROTOCOL_VERSION, len(self.slots), self.config.firmware)]

    # -- time ----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Notification]:
        elapsed, self.now = max(0.0, now - self.now), now
        notes: list[Notification] = []
        for slot in self.slots:
            charging = slot.fault == FaultCode.NONE and not slot.stalled
            if slot.condition == SlotCondition.DOCKED and charging:
                slot.charge = min(100.0, slot.charge + self.config.charge_rate * elapsed)
            if slot.due is not None and slot.due <= now:
                slot.due = None
                notes += self._step(slot)
        return notes

    def _step(self, slot: SimSlot) -> list[Notification]:
        step, rid = slot.step, slot.request_id or 0
        record = self.remembered.get(rid)
        if step == "eject":
            if slot.jammed:
                slot.condition, slot.fault = SlotCondition.FAULT, FaultCode.LATCH_JAMMED
                self._outcome(record, EjectOutcome.JAMMED)
                return [Jammed(slot.number, rid)]
            slot.condition = SlotCondition.PRESENTED
            self._outcome(record, EjectOutcome.PRESENTED)
            if self.rng.random() < self.config.take_rate:
                slot.step, slot.due = "take", self.now + self.config.take_after_s
            else:
                slot.step, slot.due = "relock", self.now + self.config.relock_after_s
            return [Ejected(slot.number, rid, slot.powerbank_id)]
        if step == "take":
            self._outcome(record, EjectOutcome.TAKEN)
            taken = slot.powerbank_id
            slot.condition, slot.powerbank_id, slot.charge = SlotCondition.EMPTY, "", 0.0
            if self.config.return_after_s is not None:
                slot.step, slot.due = "return", self.now + self.config.return_after_s
            return [Removed(slot.number, taken)]
        if step == "relock":
            self._outcome(record, EjectOutcome.RELOCKED)
            slot.condition = SlotCondition.DOCKED
            return [Relocked(slot.number, rid, slot.powerbank_id)]
        if step == "return":
            return self.act("return", slot.number)
        return []

    @staticmethod
    def _outcome(record: EjectRecord | None, outcome: EjectOutcome) -> None:
        if record is not None:
            record.outcome = outcome

    # -- things that happen to the cabinet -----------------------------------------------

    def act(
        self,
        action: Action,
        number: int | None = None,
        value: int | None = None,
        powerbank_id: str | None = None,
        door: DoorState | None = None,
    ) -> list[Notification]:
        """Something happens: a return, a forced removal, a jam, a hot battery, the door.

        ``overheat`` is a battery the board itself calls a fault (a ``Fault`` notification,
        the slot refuses ejects); ``heat`` one that only runs hot (its temperature, ``value``
        or 55 C, shows in the status replies and nothing else changes); ``cool`` ends
        either. ``stall`` stops the slot's battery gaining charge, ``unstall`` lets it."""
        if action == "door":
            self.door = door if door is not None else DoorState.OPEN
            return [Door(self.door)]
        slot = self.slot(number or 0)
        if slot is None:
            return []
        if action == "return" and slot.condition == SlotCondition.EMPTY:
            slot.condition = SlotCondition.DOCKED
            slot.powerbank_id = powerbank_id or self.new_powerbank_id()
            slot.charge = float(value if value is not None else self.rng.randint(5, 60))
            slot.step, slot.due = "", None
            return [Inserted(slot.number, int(slot.charge), slot.powerbank_id)]
        if action == "remove" and slot.powerbank_id:
            taken, slot.powerbank_id = slot.powerbank_id, ""
            slot.condition, slot.charge, slot.due = SlotCondition.EMPTY, 0.0, None
            return [Removed(slot.number, taken)]
        if action in ("jam", "unjam"):
            slot.jammed = action == "jam"
            return []
        if action in ("stall", "unstall"):
            slot.stalled = action == "stall"
            return []
        if action == "heat":
            slot.temperature = value if value is not None else HOT_C
            return []
        if action == "overheat":
            slot.temperature = value if value is not None else 70
            slot.condition, slot.fault = SlotCondition.FAULT, FaultCode.OVERHEAT
            return [Fault(slot.number, FaultCode.OVERHEAT, slot.temperature)]
        if action == "cool" and slot.fault == FaultCode.OVERHEAT:
            slot.temperature, slot.fault = 25, FaultCode.NONE
            slot.condition = SlotCondition.DOCKED if slot.powerbank_id else SlotCondition.EMPTY
            return [FaultCleared(slot.number, FaultCode.OVERHEAT)]
        if action == "cool":
            slot.temperature = 25
        return []
