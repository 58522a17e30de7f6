"""Helpers every benchmark uses: where results go, and how they are printed.

Each benchmark is a script ``tests/benchmarks/bench_<name>.py`` with a ``main()`` that
measures, then calls ``report``: a table on standard output and ``bench-results/<name>.json``
(git ignores the folder). ``KIOSK_BENCH_QUICK=1`` asks for smaller sizes (used by a test
that checks every benchmark still runs).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED_FACES = REPO.parent / "shared" / "faces"


def quick() -> bool:
    return os.environ.get("KIOSK_BENCH_QUICK") == "1"


def results_dir() -> Path:
    folder = Path(os.environ.get("KIOSK_BENCH_RESULTS", REPO / "bench-results"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95, mean and max of a list of durations, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "n": len(ms),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MiB.

    Unlike ``ru_maxrss``, VmHWM starts afresh at exec, so a child process does not
    report its parent's peak.
    """
    with Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def report(name: str, rows: list[dict[str, Any]], notes: dict[str, Any] | None = None) -> Path:
    """Print ``rows`` as a table and write them, with machine facts, to JSON."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    widths = {col: max(len(col), *(len(_cell(row.get(col))) for row in rows)) for col in columns}
    print(f"\n== {name} ==")
    print("  ".join(col.ljust(widths[col]) for col in columns))
    for row in rows:
        print("  ".join(_cell(row.get(col)).ljust(widths[col]) for col in columns))
    for key, value in (notes or {}).items():
        print(f"  {key}: {value}")
    path = results_dir() / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick(),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "rows": rows,
        "notes": notes or {},
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"  -> {path}")
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)
