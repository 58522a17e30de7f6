"""Slot board: eject round trip over a pty at 115200 baud, and a soak on a noisy line.

The simulator runs as its own process (``python -m hardware.sim``), as a board would, and
journals every physical eject; the driver is the real one.

1. Round trip: ``eject()`` from the request to the ``Ejected`` notification with a latch
   that takes no time, so what is measured is the protocol over a line paced as a UART at
   115200 baud (the simulator delays each frame by its wire time), plus ``Status``.
2. Soak: a mix of commands (70 % eject, 10 % each hello, indicator, status) with 1 % of
   bytes corrupted in both directions and 5 % of replies dropped, unpaced. It prints the
   ejects the board performed for a request naming another slot (wrong slot) or twice for
   one request (double), both of which must be 0, and the failures the caller saw.

``KIOSK_BENCH_QUICK=1``: 2,000 soak commands instead of 100,000.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cloud_sync.logs import configure_logging
from hardware.driver import SerialBoard
from hardware.errors import BoardError, BoardRefusedError
from hardware.messages import Colour, Pattern
from hardware.protocol import wire_request_id
from tests.benchmarks.common import REPO, quick, report, summary_ms

SLOTS = 8


def start_sim(*flags: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "hardware.sim", "--slots", str(SLOTS), *flags],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def stop_sim(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(timeout=10)


def round_trips(count: int) -> list[dict[str, Any]]:
    process, path = start_sim(
        "--baud",
        "115200",
        "--eject-s",
        "0",
        "--take-rate",
        "1",
        "--take-after-s",
        "0",
        "--return-after-s",
        "0",
    )
    rows = []
    try:
        with SerialBoard(path, baudrate=115200, timeout_s=0.5) as board:
            board.hello()
            ejects, status = [], []
            for index in range(count):
                started = time.perf_counter()
                board.eject(index % SLOTS + 1, f"rtt-{index}")
                ejects.append(time.perf_counter() - started)
                time.sleep(0.01)  # let the take and the return settle
                started = time.perf_counter()
                board.status()
                status.append(time.perf_counter() - started)
            rows.append({"case": "eject round trip, pty at 115200 baud", **summary_ms(ejects)})
            rows.append({"case": f"status of {SLOTS} slots, 115200 baud", **summary_ms(status)})
    finally:
        stop_sim(process)
    return rows


def soak(commands: int, journal: Path) -> dict[str, Any]:
    process, path = start_sim(
        "--seed", "11", "--eject-s", "0", "--take-rate", "1", "--take-after-s", "0",
        "--return-after-s", "0", "--notify-retry-s", "0.02",
        "--corrupt-rate", "0.01", "--drop-rate", "0.05", "--journal", str(journal),
    )  # fmt: skip
    asked: dict[int, int] = {}
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    try:
        with SerialBoard(path, timeout_s=0.015, retries=5, backoff_s=0.002) as board:
            board.eject_timeout_s = 2.0
            board.hello()
            for index in range(commands):
                slot, kind = index % SLOTS + 1, index % 10
                try:
                    if kind < 7:
                        request_id = f"soak-{index}"
                        asked[wire_request_id(request_id)] = slot
                        board.eject(slot, request_id)
                        outcomes["ejected"] += 1
                    elif kind == 7:
                        board.hello()
                    elif kind == 8:
                        board.set_indicator(slot, Colour.GREEN, Pattern.BLINK_SLOW)
                    else:
                        board.status()
                    outcomes["ok"] += 1
                except BoardRefusedError as exc:
                    outcomes[f"refused {exc.code}"] += 1
                except BoardError as exc:
                    outcomes[f"failed: {type(exc).__name__}"] += 1
            stats = board.stats
    finally:
        stop_sim(process)
    elapsed = time.perf_counter() - started
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    per_request = Counter(record["request_id"] for record in records)
    wrong = sum(
        1 for record in records if asked.get(int(record["request_id"], 16)) != record["slot"]
    )
    failed = {key: value for key, value in outcomes.items() if key.startswith("failed")}
    return {
        "case": "soak: 1% bytes corrupted, 5% replies dropped",
        "commands": commands,
        "seconds": round(elapsed, 1),
        "eject_requests": len(asked),
        "physical_ejects": len(records),
        "confirmed_ejects": outcomes["ejected"],
        "wrong_slot_ejects": wrong,
        "double_ejects": sum(count - 1 for count in per_request.values() if count > 1),
        "failures_reported": sum(failed.values()),
        "failures": dict(failed),
        "refused": sum(v for k, v in outcomes.items() if k.startswith("refused")),
        "retries": stats.retries,
        "damaged_frames_seen": stats.bad_frames,
    }


def main() -> None:
    configure_logging("bench", level="error", fmt="console", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        rows = round_trips(50 if quick() else 500)
        result = soak(2_000 if quick() else 100_000, Path(folder) / "ejects.jsonl")
    soak_row = {key: value for key, value in result.items() if key != "failures"}
    report(
        "slot_board",
        [*rows, soak_row],
        notes={
            "failures by kind": result["failures"] or "none",
            "must be 0": f"wrong-slot ejects {result['wrong_slot_ejects']}, "
            f"double ejects {result['double_ejects']}",
        },
    )
    if result["wrong_slot_ejects"] or result["double_ejects"]:
        raise SystemExit("slot board soak: a wrong-slot or double eject happened")


if __name__ == "__main__":
    main()
