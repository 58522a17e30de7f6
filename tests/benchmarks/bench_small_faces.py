"""Small faces in kiosk frames: what the closer look costs and what it recognises.

Run: ``scripts/bench small_faces`` (``KIOSK_BENCH_QUICK=1`` for a short run). Needs
``../shared/faces/dev``. Two live pipelines, built as ``kiosk run`` builds them from the
shipped settings, see the same frames in the same run:

- **before**: boxes as HOG gives them (``FaceEngine(look_closer=False)``) and the gate's
  previous minimum face of 80 px;
- **now**: a face found in a box under 90 px looked at again on its region, upsampled once
  (``FaceEngine._closer``), and the gate's minimum of 56 px.

Frames (640x480, in memory): an empty scene that does not change (sensor noise only: the
pipeline skips most of its frames), an empty scene that changes on every frame (light
flicker: every frame is searched), and visits of 30 frames by each dev photo degraded as a
kiosk camera degrades it (``edge.vision.degrade``: face 50-80 px, gamma 1.4, noise, JPEG
55); the first photo of each identity is enrolled from the photo itself. Reported: the
time per frame of each pipeline on each kind of frame, the small-face pass alone on the
small-face frames (where the closer look runs), and the visits' outcomes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import VisionSection
from edge.vision import setup
from edge.vision.degrade import degrade_photo
from edge.vision.live import FrameOutcome, LivePipeline, small_face_pass
from edge.vision.matcher import Gallery, rider_gallery
from hardware.cameras import Frame
from models.analysis import analyse
from models.encoder import FaceEngine
from models.images import Image, read_image
from models.quality import QualityConfig
from tests.benchmarks.common import SHARED_FACES, quick, report, summary_ms
from tests.benchmarks.face_clips import blank_frame

VISION = VisionSection.model_validate({"liveness": {"method": "off"}})
FRAMES = 30


def identity_photos() -> dict[str, list[Path]]:
    """Each dev identity's photos (not ``bench_face_pipeline``'s: that imports
    face_recognition, which loads every model)."""
    dev = SHARED_FACES / "dev"
    people: dict[str, list[Path]] = {}
    for folder in sorted(p for p in dev.iterdir() if p.is_dir() and not p.name.startswith("_")):
        people[folder.name] = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    return people


def pipeline(engine: FaceEngine, gallery: Gallery, quality: QualityConfig) -> LivePipeline:
    return LivePipeline(
        engine,
        gallery,
        setup.policy(VISION),
        quality=quality,
        config=setup.live_config(VISION),
        liveness=setup.liveness(VISION),
    )


def empty_scene(changing: bool, count: int) -> list[Image]:
    frames = []
    for n in range(count):
        frame = blank_frame(n).astype(np.int16)
        if changing:  # a flickering light: the thumbnail differs on every frame
            frame += 12 if n % 2 else -12
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def per_frame(live: LivePipeline, frames: list[Image]) -> list[float]:
    runs: list[float] = []
    for n, image in enumerate(frames):
        started = time.perf_counter()
        live.process(Frame(image, n / 15, n, "empty"))
        runs.append(time.perf_counter() - started)
    return runs


def visit(live: LivePipeline, frame: Image, runs: list[float]) -> list[FrameOutcome]:
    """``FRAMES`` frames of ``frame`` through ``live``, each one's time added to ``runs``."""
    seen = []
    for n in range(FRAMES):
        started = time.perf_counter()
        seen.append(live.process(Frame(frame, n / 15, n, "visit")))
        runs.append(time.perf_counter() - started)
    return seen


def main() -> None:
    now_engine = setup.engine(VISION)
    before_engine = FaceEngine(
        detect_width=VISION.detect_width,
        max_upsample=VISION.max_upsample,
        min_score=VISION.min_detection_score,
        look_closer=False,
    )
    now_quality = setup.quality_config(VISION.quality)
    before_quality = QualityConfig(min_face_px=80)
    people = identity_photos()
    enrolled, templates = [], []
    probes: list[tuple[str, Path]] = []
    for person, photos in people.items():
        first = analyse(now_engine, read_image(photos[0]), now_quality)
        if first.encoding is not None and len(photos) > 1:
            enrolled.append(person)
            templates.append(first.encoding)
            probes += [(person, p) for p in photos[1:]]
    gallery = rider_gallery(enrolled, templates, [], VISION.fuse_templates)
    if quick():
        probes = probes[:3]
    paths = {
        "before": (before_engine, before_quality),
        "now": (now_engine, now_quality),
    }
    rows: list[dict[str, Any]] = []
    count = 30 if quick() else 150
    for kind, changing in (("empty scene, unchanged", False), ("empty scene, changing", True)):
        frames = empty_scene(changing, count)
        for name, (engine, quality) in paths.items():
            runs = per_frame(pipeline(engine, gallery, quality), frames)
            rows.append({"frames": kind, "path": name, **summary_ms(runs)})
    visit_runs: dict[str, list[float]] = {name: [] for name in paths}
    pass_runs: dict[str, list[float]] = {name: [] for name in paths}
    outcomes: dict[str, dict[str, int]] = {
        name: {"visits": 0, "correct": 0, "wrong_person": 0, "come_closer": 0} for name in paths
    }
    for person, photo in probes:
        frame = degrade_photo(now_engine, read_image(photo), photo)
        for name, (engine, quality) in paths.items():
            started = time.perf_counter()
            small_face_pass(engine, frame)
            pass_runs[name].append(time.perf_counter() - started)
            live = pipeline(engine, gallery, quality)
            seen = visit(live, frame, visit_runs[name])
            decided = {o.record.person_id for o in seen if o.record and o.record.person_id}
            tally = outcomes[name]
            tally["visits"] += 1
            tally["correct"] += decided == {person}
            tally["wrong_person"] += bool(decided - {person})
            tally["come_closer"] += any(o.hint == "come_closer" for o in seen)
    for name in paths:
        rows.append(
            {
                "frames": "small-face pass on a small face",
                "path": name,
                **summary_ms(pass_runs[name]),
            }
        )
        rows.append(
            {
                "frames": "visit, face 50-80 px (30 frames)",
                "path": name,
                **summary_ms(visit_runs[name]),
                **outcomes[name],
            }
        )
    report(
        "small_faces",
        rows,
        {
            "frame": "640x480",
            "degrade": "face 50-80 px, gamma 1.4, noise 4, JPEG 55 (edge.vision.degrade)",
            "enrolled": len(enrolled),
            "visits": len(probes),
        },
    )


if __name__ == "__main__":
    main()
