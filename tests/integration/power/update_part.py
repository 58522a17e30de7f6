"""``kiosk update apply`` as a process the power-loss test cuts at a chosen point.

    python -m tests.integration.power.update_part ROOT BUNDLE POINT

The real ``Updater`` installs BUNDLE under ROOT; its installer unpacks the bundle's wheels
into the new version's folder (what pip would leave there, without pip's minutes). At POINT
the part prints ``at POINT`` and waits to be killed: ``mid-copy`` (half the wheels
unpacked), ``before-switch`` (installed, the rental check before the switch) or
``after-switch`` (``current`` switched, the services being restarted).
"""

from __future__ import annotations

import sys
import time
import zipfile
from pathlib import Path

from edge.update.bundle import Manifest
from edge.update.updater import Hooks, Policy, Updater


def unpack(bundle: Path, target: Path, stop_half_way: str | None = None) -> None:
    """The bundle's wheels unpacked into ``target/lib``, and a ``bin/kiosk``."""
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    for number, path in enumerate(wheels):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(target / "lib")
        if stop_half_way is not None and number == len(wheels) // 2:
            pause(stop_half_way)
    (target / "bin").mkdir(parents=True, exist_ok=True)
    (target / "bin" / "kiosk").write_text("#!/bin/sh\nexec python -m tinykiosk\n")


def pause(point: str) -> None:
    print(f"at {point}", flush=True)
    time.sleep(120)


def updater(root: Path, point: str | None) -> Updater:
    def install(bundle: Path, manifest: Manifest, target: Path, arch: str) -> None:
        unpack(bundle, target, "mid-copy" if point == "mid-copy" else None)

    def rental() -> str | None:
        if point == "before-switch":
            pause(point)
        return None

    def restart() -> None:
        if point == "after-switch" and (root / "current").readlink().name != "1.0":
            pause(point)

    return Updater(
        root,
        Hooks(install=install, restart=restart, health=lambda version: (True, "ok"), rental=rental),
        Policy(require_signature=False, health_passes=1, health_interval_s=0.01),
    )


if __name__ == "__main__":
    updater(Path(sys.argv[1]), sys.argv[3]).apply(Path(sys.argv[2]))
    print("done", flush=True)
