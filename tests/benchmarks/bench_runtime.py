"""Runtime benchmark: from the first frame showing an enrolled rider to the eject command on
the wire, through the whole appliance; and the idle CPU use of ``kiosk run``.

Run: ``scripts/bench runtime`` (``KIOSK_BENCH_QUICK=1`` for a short run). Needs
``../shared/faces/dev``.

1. **Rider to eject.** The appliance of ``kiosk demo`` (``edge.demo.appliance``: the cloud API on
   loopback, the board simulator on a pty behind the real driver, the kiosk runtime, the
   sync daemon) with one photo of each dev identity enrolled. For each trial a different
   rider's other photo is held up to the camera (8 frames per second, liveness off: still
   photos cannot blink); the time runs from the capture of the first frame showing them to
   the moment the simulated board receives the eject. Then the rider takes the powerbank,
   it is pushed back into another slot and the screen goes idle before the next trial.
   Baseline, same photos, same run: one pass of the single-frame path (``kiosk faces
   identify``: detect, quality gate, landmarks, encode, match, decide), the least any
   decision costs; the ratio shows what consensus over frames, the flow and the serial
   round trip add. Trials use the riders whose probe photo that path accepts (a rider the
   policy sends to the claim step waits for a typed code, which is not what this measures);
   the others are counted by reason.
2. **Idle CPU.** ``kiosk run`` as its own process, with a replay camera looping an empty
   scene at 8 frames per second and the simulator on a pty; CPU seconds over a window after
   warm-up, as a share of one core. Baseline: a process that only reads the same replay
   camera at the same rate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cloud_sync.logs import configure_logging
from edge.demo.appliance import Rider, appliance
from edge.enrol import enrol_folder
from edge.settings import Settings, load_settings
from edge.vision import setup
from edge.vision.analysis import identify
from edge.vision.matcher import Gallery
from models.images import read_image
from tests.benchmarks.common import SHARED_FACES, quick, report, summary_ms

DEV = SHARED_FACES / "dev"
FPS = 8.0


def _wait(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.005)
    raise TimeoutError("a step of the benchmark did not happen in time")


def riders(engine: Any, folder: Path) -> tuple[list[Rider], list[Path]]:
    """One enrolment photo per dev identity, and another photo of each to probe with."""
    people = sorted(p for p in DEV.iterdir() if p.is_dir() and not p.name.startswith("_"))
    enrol = folder / "enrol"
    probes = []
    for folder_of in people:
        photos = sorted(folder_of.glob("*.jpg")) + sorted(folder_of.glob("*.png"))
        if len(photos) < 2:
            continue
        (enrol / folder_of.name).mkdir(parents=True)
        (enrol / folder_of.name / photos[0].name).symlink_to(photos[0])
        probes.append(photos[1])
    report_ = enrol_folder(engine, enrol)
    found = []
    for probe in probes:
        person = probe.parent.name
        templates = [v for p, v in report_.templates if p == person]
        if templates:
            found.append(Rider(person, person.replace("_", " ").title(), templates, probe))
    return found, probes


def single_frame(
    settings: Settings, engine: Any, enrolled: list[Rider]
) -> tuple[list[float], list[Rider], dict[str, int]]:
    """The single-frame path on each rider's probe photo: its time, the riders it accepts
    (the ones the live trials use) and why the others are not accepted on one frame."""
    people = [r.person_id for r in enrolled for _ in r.templates]
    vectors = [t for r in enrolled for t in r.templates]
    gallery = Gallery.from_matrix(people, vectors)
    policy = setup.policy(settings.vision)
    quality = setup.quality_config(settings.vision.quality)
    times: list[float] = []
    accepted: list[Rider] = []
    others: dict[str, int] = {}
    for rider in enrolled:
        image = read_image(rider.photo)
        started = time.perf_counter()
        found = identify(engine, gallery, policy, image, quality)
        times.append(time.perf_counter() - started)
        if found.person_id == rider.person_id:
            accepted.append(rider)
        else:
            others[found.reason] = others.get(found.reason, 0) + 1
    return times, accepted, others


def rider_to_eject(trials: int) -> tuple[list[float], list[float], int, dict[str, int]]:
    settings = load_settings(
        None,
        kiosk={"state_dir": tempfile.mkdtemp(prefix="bench-runtime-")},
        camera={"fps": FPS},
        flow={"result_s": 1.0},
        log={"level": "warning"},
    )
    engine = setup.engine(settings.vision)
    folder = Path(tempfile.mkdtemp(prefix="bench-riders-"))
    enrolled, _ = riders(setup.enrol_engine(settings.vision, engine), folder)
    baseline, accepted, others = single_frame(settings, engine, enrolled)
    chosen = accepted[:trials]
    latencies: list[float] = []
    failed = 0
    root = settings.kiosk.state_dir / "appliance"
    with appliance(settings, root, enrolled, engine.model_version, lambda _line: None) as app:
        for rider in chosen:
            _wait(lambda: app.screen_key() == "idle")
            before = len(app.sim.ejects)
            app.camera.show(read_image(rider.photo))
            try:
                record = _wait(lambda b=before: app.sim.ejects[b:] and app.sim.ejects[b])
            except TimeoutError:
                failed += 1
                app.camera.show(None)
                continue
            shown_at = app.camera.first_frame_at
            assert shown_at is not None
            latencies.append(record.started - shown_at)
            _wait(lambda: app.screen_key() == "take")
            app.camera.show(None)
            _wait(lambda: app.screen_key() == "enjoy")
            empty = [s.number for s in app.sim.cabinet.slots if not s.powerbank_id]
            target = next(n for n in reversed(empty) if n != record.slot)
            app.sim.act("return", slot=target, powerbank_id=record.powerbank_id, value=95)
            _wait(lambda: app.screen_key() == "returned")
    return latencies, baseline, failed, others


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _share(process: subprocess.Popen[Any], warm_s: float, window_s: float) -> float:
    time.sleep(warm_s)
    start = _cpu_s(process.pid)
    time.sleep(window_s)
    return (_cpu_s(process.pid) - start) / window_s


CAMERA_ONLY = """
import sys
from pathlib import Path
from hardware.cameras.replay import ReplayCamera
camera = ReplayCamera(Path(sys.argv[1]), fps=float(sys.argv[2]), loop=True)
for _ in camera.frames():
    pass
"""


def idle_cpu(window_s: float) -> dict[str, float]:
    import cv2
    import numpy as np

    from hardware.sim import BoardSimulator
    from hardware.sim_board import SimConfig

    state = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    scene = state / "scene"
    scene.mkdir()
    cv2.imwrite(str(scene / "empty.png"), np.full((480, 640, 3), 96, dtype=np.uint8))
    config = state / "kiosk.toml"
    with BoardSimulator(SimConfig(slots=6, filled=4, charge_rate=50)) as sim:
        config.write_text(
            f'[kiosk]\nid = "bench-idle"\nstate_dir = "{state}"\n'
            f'[camera]\nkind = "replay"\nsource = "{scene}"\nfps = {FPS}\nloop = true\n'
            f'[board]\nurl = "{sim.path}"\nslots = 6\n[ui]\nport = 0\n',
            encoding="utf-8",
        )
        bin_dir = Path(sys.executable).parent
        kiosk = subprocess.Popen(
            [str(bin_dir / "kiosk"), "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            run_share = _share(kiosk, 8.0, window_s)
        finally:
            kiosk.terminate()
            kiosk.wait(timeout=30)
    camera = subprocess.Popen([sys.executable, "-c", CAMERA_ONLY, str(scene), str(FPS)])
    try:
        camera_share = _share(camera, 2.0, window_s)
    finally:
        camera.terminate()
        camera.wait(timeout=10)
    return {"kiosk_run": run_share, "camera_only": camera_share}


def main() -> None:
    trials = 4 if quick() else 15
    configure_logging("bench", level="warning")
    latencies, baseline, failed, others = rider_to_eject(trials)
    window = 5.0 if quick() else 20.0
    idle = idle_cpu(window)
    e2e = summary_ms(latencies)
    floor = summary_ms(baseline)
    rows = [
        {"measure": "first rider frame -> eject on the wire", **e2e, "failed": failed},
        {"measure": "single-frame path (baseline)", **floor, "failed": 0},
    ]
    report(
        "runtime",
        rows,
        {
            "p50 ratio to the single-frame path": round(e2e["p50_ms"] / floor["p50_ms"], 2),
            "idle CPU, kiosk run (share of one core)": round(idle["kiosk_run"], 3),
            "idle CPU, camera only (baseline)": round(idle["camera_only"], 3),
            "riders not accepted on one frame (left out of the trials)": others,
            "fps": FPS,
            "trials": trials,
        },
    )


if __name__ == "__main__":
    main()
