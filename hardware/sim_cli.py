"""The board simulator's command line: ``python -m hardware.sim`` and ``kiosk board-sim``."""

from __future__ import annotations

import argparse
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hardware.messages import DoorState
from hardware.sim import BoardSimulator
from hardware.sim_board import SimConfig
from hardware.sim_lies import LIES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk board-sim",
        description="Simulate the slot board on a pty (or a TCP socket) until interrupted.",
    )
    add = parser.add_argument
    add("--scenario", type=Path, metavar="TOML", help="cabinet and faults (SimConfig fields)")
    add("--slots", type=int, help="number of slots (default 8)")
    add("--seed", type=int, help="random seed, for a repeatable run")
    add("--link", type=Path, metavar="PATH", help="also make the pty reachable at PATH")
    add("--listen", metavar="HOST:PORT", help="serve socket://HOST:PORT instead of a pty")
    add("--journal", type=Path, metavar="FILE", help="append every physical eject as JSON")
    add("--baud", type=int, help="pace the line as a UART at this rate (default: no pacing)")
    add("--eject-s", type=float, help="seconds the latch takes to present a powerbank")
    add("--take-rate", type=float, help="chance a rider takes an ejected powerbank (0..1)")
    add("--take-after-s", type=float, help="seconds before the rider takes it")
    add("--notify-retry-s", type=float, help="repeat an unacknowledged notification after")
    add("--return-after-s", type=float, help="return a powerbank into emptied slots after")
    add("--corrupt-rate", type=float, help="chance each byte is corrupted, both ways")
    add("--drop-rate", type=float, help="chance a reply is never sent")
    add("--slow-s", type=float, help="delay before every reply")
    add("--slow-notify-s", type=float, help="delay before every notification leaves")
    add("--jam", type=int, action="append", metavar="SLOT", help="this slot's latch jams")
    add("--overheat", type=int, action="append", metavar="SLOT", help="this battery is hot")
    add(
        "--hot",
        type=int,
        action="append",
        metavar="SLOT",
        help="this battery runs hot (55 C in the status replies) without a board fault",
    )
    add("--stall", type=int, action="append", metavar="SLOT", help="this battery never charges")
    add(
        "--door-open-after-s",
        type=float,
        metavar="S",
        help="open the service door S seconds after start",
    )
    add(
        "--tamper-after-s",
        type=float,
        metavar="S",
        help="trip the tamper switch S seconds after start",
    )
    add("--silent", action="store_true", help="never answer")
    add("--garbage", action="store_true", help="send random bytes forever")
    add(
        "--lie",
        choices=LIES,
        help="answer with well-formed frames that contradict their request (one class)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The scenario file (if any), then each flag given over it."""
    data: dict[str, Any] = {}
    if args.scenario is not None:
        data = tomllib.loads(args.scenario.read_text(encoding="utf-8"))
    for flag, key in (
        ("slots", "slots"),
        ("seed", "seed"),
        ("baud", "baud"),
        ("eject_s", "eject_s"),
        ("take_rate", "take_rate"),
        ("take_after_s", "take_after_s"),
        ("notify_retry_s", "notify_retry_s"),
        ("return_after_s", "return_after_s"),
        ("jam", "jammed"),
        ("overheat", "overheat"),
        ("hot", "hot"),
        ("stall", "stalled"),
    ):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    faults = data.setdefault("faults", {})
    for flag in ("corrupt_rate", "drop_rate", "slow_s", "slow_notify_s"):
        if getattr(args, flag) is not None:
            faults[flag] = getattr(args, flag)
    faults.update({flag: True for flag in ("silent", "garbage") if getattr(args, flag)})
    if args.lie is not None:
        faults["lie"] = args.lie
    for flag, door in (("door_open_after_s", DoorState.OPEN), ("tamper_after_s", DoorState.TAMPER)):
        if getattr(args, flag) is not None:  # a timed event, as a scenario file writes it
            at = getattr(args, flag)
            data.setdefault("events", []).append({"at": at, "action": "door", "door": door})
    return SimConfig.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        print(f"board-sim: error: {exc}", file=sys.stderr)
        return 4
    listen = None
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        if not port.isdecimal() or not 0 < int(port) < 65536:
            print(
                f"board-sim: error: --listen {args.listen}: use HOST:PORT, PORT 1-65535",
                file=sys.stderr,
            )
            return 4
        listen = (host or "127.0.0.1", int(port))
    try:
        sim = BoardSimulator(config, link=args.link, listen=listen, journal=args.journal)
    except OSError as exc:  # a host that does not resolve, a port in use, a journal folder
        print(f"board-sim: error: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 4
    print(sim.path, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sim.request_stop())
    try:
        sim.run()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0
