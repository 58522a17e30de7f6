"""CLI start-up: how long ``kiosk --help``, ``kiosk --version``, ``kiosk status`` and
``kiosk-cloud --help`` take, each a fresh process, as a technician types them.

Run: ``scripts/bench cli`` (``KIOSK_BENCH_QUICK=1`` for 3 runs each instead of 15).

Each command runs N times as a subprocess of this virtualenv; the table gives the median
and p90 wall time. The baseline in the same run is the same command after every command
module is imported first (``load_all()``), which is what each call cost before the
commands were loaded lazily (``cloud_sync.lazy_cli``); ``speedup`` is baseline / lazy
at the median. ``kiosk status`` runs twice: on an empty state folder, and on one that
holds an outbox of 20 events and a roster of 3 riders (a kiosk in service).

Targets on the development machine: ``--help`` and ``--version`` under 300 ms,
``status`` under 1 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.benchmarks.common import REPO, percentile, quick, report

KIOSK_ID = "kiosk-0042"

#: Runs the named entry point with ``sys.argv[1:]``, optionally after building every command.
LAUNCH = (
    "import sys\nsys.argv[0] = {prog!r}\nfrom {module} import load_all, main\n{preload}main()\n"
)

CASES: tuple[tuple[str, str, str, tuple[str, ...], str], ...] = (
    # label, program, entry module, arguments, state folder ("" none, "empty", "in service")
    ("kiosk --help", "kiosk", "edge.cli.main", ("--help",), ""),
    ("kiosk --version", "kiosk", "edge.cli.main", ("--version",), ""),
    ("kiosk status (empty state)", "kiosk", "edge.cli.main", ("status", "--json"), "empty"),
    ("kiosk status (in service)", "kiosk", "edge.cli.main", ("status", "--json"), "in service"),
    ("kiosk-cloud --help", "kiosk-cloud", "cloud_sync.cli", ("--help",), ""),
)


def seed_in_service(folder: Path) -> None:
    """An outbox with 20 events and a roster with 3 riders, as ``kiosk status`` finds them."""
    from cloud_sync.outbox import Outbox
    from edge.vault.live import open_roster
    from tests.vault_helpers import record

    outbox = Outbox(folder / "outbox.sqlite", KIOSK_ID)
    for index in range(20):
        outbox.append("rental.returned", slot=1 + index % 8, powerbank_id=f"PB-{index}")
    outbox.close()
    store = open_roster(folder / "roster.sqlite", folder / "keys", KIOSK_ID)
    for n in range(3):
        store.enrol(f"rider-{n}", record(f"Rider {n}", n))
    store.close()


def environment(state_dir: Path | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KIOSK_")}
    env["PYTHONPATH"] = str(REPO)
    if state_dir is not None:
        env["KIOSK_KIOSK__ID"] = KIOSK_ID
        env["KIOSK_KIOSK__STATE_DIR"] = str(state_dir)
    return env


def timed_runs(command: Sequence[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` runs of ``command``; any failing run stops the benchmark."""
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, env=env, check=False)
        seconds.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)}: exit {result.returncode}: {result.stderr!r}")
    return seconds


def main() -> None:
    runs = 3 if quick() else 15
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        folders = {"empty": Path(tmp, "empty"), "in service": Path(tmp, "service")}
        for folder in folders.values():
            folder.mkdir()
        seed_in_service(folders["in service"])
        for label, prog, module, args, state in CASES:
            env = environment(folders.get(state))
            figures: dict[str, list[float]] = {}
            for mode, preload in (("lazy", ""), ("eager", "load_all()\n")):
                code = LAUNCH.format(prog=prog, module=module, preload=preload)
                figures[mode] = timed_runs([sys.executable, "-c", code, *args], env, runs)
            lazy_ms = [s * 1000 for s in figures["lazy"]]
            eager_ms = [s * 1000 for s in figures["eager"]]
            rows.append(
                {
                    "command": label,
                    "p50_ms": round(percentile(lazy_ms, 50), 1),
                    "p90_ms": round(percentile(lazy_ms, 90), 1),
                    "eager_p50_ms": round(percentile(eager_ms, 50), 1),
                    "eager_p90_ms": round(percentile(eager_ms, 90), 1),
                    "speedup": round(percentile(eager_ms, 50) / percentile(lazy_ms, 50), 2),
                    "runs": runs,
                }
            )
    report(
        "cli",
        rows,
        {
            "lazy": "the command as installed: command modules imported when their command runs",
            "eager": "the same after load_all(): every command module imported first",
            "targets": "--help and --version under 300 ms, status under 1000 ms",
        },
    )


if __name__ == "__main__":
    main()
