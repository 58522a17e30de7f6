"""Face pipeline benchmark: stage times, the live pipeline against face_recognition's
webcam recipe on the same frames, matching at roster scale, peak memory.

Run: ``scripts/bench face_pipeline`` (``KIOSK_BENCH_QUICK=1`` for a short run). Needs
``../shared/faces/dev``. Frames are made in memory from the photos (see ``face_clips``).

1. **Stages** at 640x480: each dev identity photo framed as a kiosk camera would (face
   about 200 px wide); HOG detection (full frame at 640 and at the live pipeline's 320),
   5-point landmarks, 68-point eye landmarks (liveness), quality gate, encoding, matching
   against the 52 dev templates.
2. **Live**: the first photo of 14 identities is enrolled; visits (30 frames, then 12 empty
   frames) by the other photos of those identities (genuine), by every photo of three
   identities never enrolled and by 20 strangers from ``lfw-dev`` (unknown), and by four
   photos with no face. Our
   ``LivePipeline`` (liveness off: the recipe has none, and still photos cannot blink) and
   the README recipe (quarter-size frame, HOG with one upsampling, encode every face,
   ``compare_faces`` at tolerance 0.6, every other frame) see the same frames. Reported:
   frames decided per second (each frame gets an identity or none from both), per-visit
   outcomes, and our time from a rider's first frame to the accepted decision.
3. **Matching**: random dlib-like templates (1 to 5 per person) at 1k/10k/100k, 50
   probes; ``Gallery.search`` (nearest person and the nearest other person, exact)
   against ``face_recognition.face_distance`` over a float64 matrix plus ``argmin``;
   checks both pick the same nearest template.
"""

from __future__ import annotations

import csv
import random
import resource
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import VisionSection
from edge.vision import setup
from edge.vision.live import LiveConfig, LivePipeline
from edge.vision.matcher import Gallery
from edge.vision.policy import ThresholdMarginPolicy
from hardware.cameras import Frame
from models.encoder import FaceEngine
from models.images import Image, read_image
from models.quality import QualityConfig, assess
from tests.benchmarks.common import SHARED_FACES, quick, report, summary_ms
from tests.benchmarks.face_clips import Visit, blank_frame, face_box, visit_frames

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import face_recognition

DEV = SHARED_FACES / "dev"
HELD_OUT = ("person_04", "person_12", "person_17")
NO_FACE = ("noface_01.jpg", "noface_02.png", "noface_03.png", "noface_04.jpg")
FPS = 15.0
GAP_FRAMES = 12
STRANGERS = 0 if quick() else 20


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def identity_photos() -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    for folder in sorted(p for p in DEV.iterdir() if p.is_dir() and not p.name.startswith("_")):
        people[folder.name] = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    return people


def timed(fn: Callable[[], Any], runs: list[float]) -> Any:
    started = time.perf_counter()
    result = fn()
    runs.append(time.perf_counter() - started)
    return result


# -- 1. stages ---------------------------------------------------------------------------


def bench_stages(engine: FaceEngine, people: dict[str, list[Path]]) -> list[dict[str, Any]]:
    stages: dict[str, list[float]] = {
        k: []
        for k in (
            "detect_640",
            "detect_320",
            "live_search_320",
            "landmarks_5",
            "landmarks_68",
            "quality",
            "encode",
            "match_52",
        )
    }
    photos = [p for files in people.values() for p in files]
    if quick():
        photos = photos[::4]
    templates = []
    frames = []
    warm = read_image(photos[0])
    engine.eye_landmarks(warm, engine.detect(warm)[0])  # loads the 68-point model once
    for number, path in enumerate(photos):
        image = read_image(path)
        frame = next(visit_frames(image, face_box(engine, image), 1, seed=number))
        frames.append(frame)
    for frame in frames:
        boxes = timed(lambda f=frame: engine.detect(f, 640, 0), stages["detect_640"])
        timed(lambda f=frame: engine.detect(f, 320, 0), stages["detect_320"])
        timed(lambda f=frame: engine.search(f, 320), stages["live_search_320"])
        if not boxes:
            continue
        box = boxes[0]
        points = timed(lambda f=frame, b=box: engine.landmarks(f, b), stages["landmarks_5"])
        timed(lambda f=frame, b=box: engine.eye_landmarks(f, b), stages["landmarks_68"])
        timed(lambda f=frame, b=box, p=points: assess(f, b, p, QualityConfig()), stages["quality"])
        templates.append(
            timed(lambda f=frame, b=box, p=points: engine.encode(f, b, p), stages["encode"])
        )
    gallery = Gallery([(str(i), t) for i, t in enumerate(templates)])
    for template in templates:
        timed(lambda t=template: gallery.search(t), stages["match_52"])
    rows = [{"stage": name, **summary_ms(runs)} for name, runs in stages.items()]
    path_ms = (
        sum(
            statistics.fmean(stages[k])
            for k in ("detect_320", "landmarks_5", "quality", "encode", "match_52")
        )
        * 1000
    )
    rows.append(
        {
            "stage": "one vote (320 detect + 5pt + gate + encode + match)",
            "mean_ms": round(path_ms, 1),
        }
    )
    return rows + bench_far_rider(engine, photos)


def far_frame(image: Image, box: Any, face_px: int = 45) -> Image:
    """``image`` scaled so its face is about ``face_px`` wide, in a grey 640x480 frame."""
    scale = face_px / max(1, box.width)
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)[:480, :640]
    frame = np.full((480, 640, 3), 128, np.uint8)
    top, left = (480 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
    frame[top : top + small.shape[0], left : left + small.shape[1]] = small
    return frame


def bench_far_rider(engine: FaceEngine, photos: list[Path]) -> list[dict[str, Any]]:
    """What a rider too far away (face about 45 px in 640x480) costs: the small-face pass
    (full frame, upsampled) that finds them, the tracked search around the face, and each
    frame of the live pipeline while it says "come closer"."""
    runs: dict[str, list[float]] = {"far_small_face_pass": [], "far_track_near": []}
    per_frame: list[float] = []
    told = 0
    vision = VisionSection.model_validate({"liveness": {"method": "off"}})
    for path in photos[: 4 if quick() else 12]:
        image = read_image(path)
        box = face_box(engine, image)
        if box is None:
            continue
        frame = far_frame(image, box)
        found = timed(lambda f=frame: engine.detect(f, 640, None), runs["far_small_face_pass"])
        if found:
            timed(lambda f=frame, b=found[0]: engine.detect_near(f, b), runs["far_track_near"])
        pipeline = LivePipeline(
            engine,
            Gallery([]),
            setup.policy(vision),
            quality=setup.quality_config(vision.quality),
            config=setup.live_config(vision),
        )
        hints = [
            timed(lambda n=n, f=frame, p=pipeline: p.process(Frame(f, n / 15, n, "far")), per_frame)
            for n in range(30)
        ]
        told += any(o.hint == "come_closer" for o in hints)
    rows = [{"stage": name, **summary_ms(r)} for name, r in runs.items() if r]
    rows.append(
        {"stage": "far rider, live pipeline per frame (30 frames)", **summary_ms(per_frame)}
    )
    rows.append({"stage": "far riders told to come closer", "count": told})
    return rows


# -- 2. live pipeline against the README recipe ----------------------------------------------


def lfw_strangers(count: int) -> list[Path]:
    """``count`` people with a single photo in ``lfw-dev`` (seeded pick): strangers at the kiosk."""
    labels = SHARED_FACES / "lfw-dev" / "labels.csv"
    if not labels.is_file() or count == 0:
        return []
    with labels.open(encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["images_of_person_here"] == "1"]
    picked = random.Random(5).sample(rows, min(count, len(rows)))
    return [SHARED_FACES / "lfw-dev" / row["file"] for row in picked]


def plan_visits(people: dict[str, list[Path]], frames: int) -> tuple[dict[str, Path], list[Visit]]:
    enrolled = {person: files[0] for person, files in people.items() if person not in HELD_OUT}
    visits = []
    for person, files in people.items():
        probes = files if person in HELD_OUT else files[1:]
        visits += [Visit(p, person, person not in HELD_OUT, frames) for p in probes]
    visits += [Visit(DEV / "_other" / name, None, False, frames) for name in NO_FACE]
    visits += [Visit(path, path.parent.name, False, frames) for path in lfw_strangers(STRANGERS)]
    order = np.random.default_rng(4).permutation(len(visits))
    visits = [visits[i] for i in order]
    if quick():
        visits = visits[:12]
    return enrolled, visits


def frames_of(
    visits: list[Visit], boxes: dict[Path, Any], images: dict[Path, Image]
) -> Iterator[tuple[int, Image]]:
    """(visit number or -1 for an empty frame, frame), the same sequence every call."""
    for number, visit in enumerate(visits):
        yield from (
            (number, f)
            for f in visit_frames(
                images[visit.photo], boxes[visit.photo], visit.frames, seed=number
            )
        )
        yield from ((-1, blank_frame(number * 100 + i)) for i in range(GAP_FRAMES))


def score(visits: list[Visit], accepted: dict[int, set[str]]) -> dict[str, int]:
    out = {
        "correct": 0,
        "wrong_person": 0,
        "missed": 0,
        "unknown_accepted": 0,
        "genuine": 0,
        "unknown": 0,
    }
    for number, visit in enumerate(visits):
        names = accepted.get(number, set())
        if visit.enrolled:
            out["genuine"] += 1
            if names - {visit.truth}:
                out["wrong_person"] += 1
            elif visit.truth in names:
                out["correct"] += 1
            else:
                out["missed"] += 1
        else:
            out["unknown"] += 1
            out["unknown_accepted"] += bool(names)
    return out


def run_ours(
    engine: FaceEngine,
    gallery: Gallery,
    visits: list[Visit],
    boxes: dict[Path, Any],
    images: dict[Path, Image],
    config: LiveConfig | None = None,
) -> dict[str, Any]:
    pipe = LivePipeline(
        engine, gallery, setup.policy(VisionSection()), config=config or LiveConfig()
    )
    accepted: dict[int, set[str]] = {}
    first_frame_at: dict[int, tuple[int, float]] = {}
    latency_camera, latency_cpu = [], []
    busy = 0.0
    frames = 0
    for index, (number, image) in enumerate(frames_of(visits, boxes, images)):
        started = time.perf_counter()
        outcome = pipe.process(Frame(image, index / FPS, index, "bench"))
        spent = time.perf_counter() - started
        busy += spent
        frames += 1
        if number < 0:
            continue
        if number not in first_frame_at:
            first_frame_at[number] = (index, busy - spent)
        if outcome.person_id is not None:
            accepted.setdefault(number, set()).add(outcome.person_id)
        record = outcome.record
        if record is not None and record.person_id is not None and visits[number].enrolled:
            start_index, start_busy = first_frame_at[number]
            latency_cpu.append(busy - start_busy)
            latency_camera.append((index - start_index) / FPS)
    return {
        "frames": frames,
        "seconds": busy,
        "outcomes": score(visits, accepted),
        "encodings": pipe.encodings,
        "latency_cpu": latency_cpu,
        "latency_camera": latency_camera,
    }


def run_recipe(
    known: list[np.ndarray],
    names: list[str],
    visits: list[Visit],
    boxes: dict[Path, Any],
    images: dict[Path, Image],
) -> dict[str, Any]:
    """face_recognition's README "faster" webcam example, step for step (tolerance 0.6).

    The best distance of every face it labels is kept too, so the same run is also scored
    at our threshold (``compare_faces`` is ``face_distance <= tolerance``).
    """
    seen: dict[int, list[tuple[str, float]]] = {}
    busy = 0.0
    frames = 0
    encodings = 0
    process_this_frame = True
    face_names: list[tuple[str, float]] = []
    for number, image in frames_of(visits, boxes, images):
        started = time.perf_counter()
        if process_this_frame:
            small_frame = cv2.resize(image, (0, 0), fx=0.25, fy=0.25)
            face_locations = face_recognition.face_locations(small_frame)
            face_encodings = face_recognition.face_encodings(small_frame, face_locations)
            encodings += len(face_encodings)
            face_names = []
            for face_encoding in face_encodings:
                matches = face_recognition.compare_faces(known, face_encoding)
                name = "Unknown"
                face_distances = face_recognition.face_distance(known, face_encoding)
                best_match_index = int(np.argmin(face_distances))
                if matches[best_match_index]:
                    name = names[best_match_index]
                face_names.append((name, float(face_distances[best_match_index])))
        process_this_frame = not process_this_frame
        busy += time.perf_counter() - started
        frames += 1
        if number >= 0:
            seen.setdefault(number, []).extend(face_names)

    def accepted(tolerance: float) -> dict[int, set[str]]:
        return {
            n: {name for name, d in pairs if name != "Unknown" and d <= tolerance}
            for n, pairs in seen.items()
        }

    return {
        "frames": frames,
        "seconds": busy,
        "outcomes": score(visits, accepted(0.6)),
        "outcomes_strict": score(visits, accepted(ThresholdMarginPolicy().threshold)),
        "encodings": encodings,
    }


def enrol(engine: FaceEngine, path: Path) -> np.ndarray:
    observation = engine.observe(read_image(path))
    assert observation is not None, f"{path}: no face"
    return observation.encoding


def bench_live(
    engine: FaceEngine, people: dict[str, list[Path]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    enrolled, visits = plan_visits(people, 10 if quick() else 30)
    images = {v.photo: read_image(v.photo) for v in visits}
    boxes = {photo: face_box(engine, image) for photo, image in images.items()}
    enroller = setup.enrol_engine(VisionSection(), engine)  # as kiosk enroll makes templates
    ours_gallery = Gallery([(person, enrol(enroller, path)) for person, path in enrolled.items()])
    jittered = engine.with_jitters(10)
    jitter_gallery = Gallery([(person, enrol(jittered, path)) for person, path in enrolled.items()])
    known, names = [], []
    for person, path in enrolled.items():  # the README's way: load_image_file, face_encodings()[0]
        known.append(face_recognition.face_encodings(face_recognition.load_image_file(path))[0])
        names.append(person)
    ours = run_ours(engine, ours_gallery, visits, boxes, images)
    unfused = run_ours(engine, ours_gallery, visits, boxes, images, LiveConfig(fuse_frames=1))
    with_jitter = run_ours(engine, jitter_gallery, visits, boxes, images)
    recipe = run_recipe(known, names, visits, boxes, images)
    rows = []
    strict = {**recipe, "outcomes": recipe["outcomes_strict"]}
    threshold = ThresholdMarginPolicy().threshold
    for name, run in (
        ("kiosk LivePipeline (defaults: 3 frames fused, 2 of 3 agree)", ours),
        ("  same, each frame decided alone (fuse_frames 1)", unfused),
        ("  same, templates from 10 jittered copies (enrol_jitters 10)", with_jitter),
        ("face_recognition README recipe (tolerance 0.6)", recipe),
        (f"  same recipe run, scored at tolerance {threshold}", strict),
    ):
        o = run["outcomes"]
        rows.append(
            {
                "pipeline": name,
                "frames": run["frames"],
                "seconds": round(run["seconds"], 2),
                "frames_per_s": round(run["frames"] / run["seconds"], 1),
                "encodings": run["encodings"],
                "correct": f"{o['correct']}/{o['genuine']}",
                "wrong_person": o["wrong_person"],
                "missed": o["missed"],
                "unknown_accepted": f"{o['unknown_accepted']}/{o['unknown']}",
            }
        )
    ratio = (ours["frames"] / ours["seconds"]) / (recipe["frames"] / recipe["seconds"])
    notes = {
        "speed_ratio": round(ratio, 2),
        "visits": len(visits),
        "frames_per_visit": visits[0].frames,
        "time_to_decision_cpu_ms": summary_ms(ours["latency_cpu"]),
        "time_to_decision_camera_ms": summary_ms(ours["latency_camera"]),
    }
    return rows, notes


# -- 3. matching at roster scale ---------------------------------------------------------------


def bench_matching(seed_templates: np.ndarray) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    sizes = (1_000, 10_000) if quick() else (1_000, 10_000, 100_000)
    rows = []
    for size in sizes:
        picks = rng.integers(0, len(seed_templates), size)
        matrix = (seed_templates[picks] + rng.normal(0, 0.08, (size, 128))).astype(np.float32)
        owners = [f"r{i}" for i in np.repeat(np.arange(size), rng.integers(1, 6, size))[:size]]
        gallery = Gallery.from_matrix(owners, matrix)
        known64 = matrix.astype(np.float64)  # face_distance's best case: one float64 ndarray
        probes = (
            seed_templates[rng.integers(0, len(seed_templates), 50)]
            + rng.normal(0, 0.05, (50, 128))
        ).astype(np.float32)
        ours, theirs = [], []
        same = 0
        for probe in probes:
            found = timed(lambda p=probe, g=gallery: g.search(p, k=2), ours)
            distances = timed(
                lambda p=probe, k=known64: face_recognition.face_distance(k, p.astype(np.float64)),
                theirs,
            )
            best = int(np.argmin(distances))
            same += (
                owners[best] == found.nearest[0].person_id
                and abs(distances[best] - found.nearest[0].distance) < 1e-9
            )
        a, b = summary_ms(ours), summary_ms(theirs)
        rows.append(
            {
                "templates": size,
                "search_p50_ms": a["p50_ms"],
                "search_p95_ms": a["p95_ms"],
                "face_distance_p50_ms": b["p50_ms"],
                "face_distance_p95_ms": b["p95_ms"],
                "ratio_p50": round(b["p50_ms"] / a["p50_ms"], 1),
                "same_nearest": f"{same}/{len(probes)}",
                "gallery_mb": round(gallery.nbytes / 1e6, 1),
            }
        )
    return rows


def main() -> None:
    engine = FaceEngine()
    people = identity_photos()
    stage_rows = bench_stages(engine, people)
    report(
        "face_pipeline_stages",
        stage_rows,
        {"frame": "640x480, face about 200 px", "peak_rss_mb": peak_mb()},
    )
    live_rows, live_notes = bench_live(engine, people)
    report("face_pipeline_live", live_rows, {**live_notes, "peak_rss_mb": peak_mb()})
    observed = (engine.observe(read_image(p)) for files in people.values() for p in files)
    seeds = np.stack([o.encoding for o in observed if o is not None])
    match_rows = bench_matching(seeds)
    report("face_pipeline_matching", match_rows, {"probes": 50, "peak_rss_mb": peak_mb()})


if __name__ == "__main__":
    main()
