"""``kiosk demo``: replay frames through the real face model, decide, and record events.

The first real end-to-end path of the appliance: riders are enrolled from images, a replay
camera delivers frames, the face engine finds and encodes the face to act on, the matcher
decides, every decision is printed as one line, and each face seen is appended to the
SQLite outbox as an event with a ULID. Later pieces (slot board, sync, rider screen) plug
in behind the same command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from cloud_sync.outbox import Outbox
from edge import __version__
from edge.enrol import enrol_folder
from edge.errors import InputError
from edge.samples import write_sample_set
from edge.settings import Settings
from edge.vision.engine import FaceEngine
from edge.vision.matcher import Gallery
from hardware.camera import ReplayCamera
from hardware.errors import CameraOpenError

log = structlog.get_logger("edge.demo")


@dataclass
class DemoSummary:
    frames: int = 0
    recognised: int = 0
    unrecognised: int = 0
    no_face: int = 0
    events: int = 0
    outbox: Path | None = None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_demo(
    settings: Settings,
    images: Path | None,
    enroll: Path | None,
    say: Callable[[str], None],
) -> DemoSummary:
    """Run the demo once over the frame folder and return what happened."""
    state_dir = settings.kiosk.state_dir
    if images is None or enroll is None:
        samples = write_sample_set(state_dir / "samples")
        images = images or samples.frames_dir
        enroll = enroll or samples.enroll_dir
    try:
        camera = ReplayCamera(
            images, fps=settings.camera.fps, max_pixels=settings.vision.max_image_pixels
        )
    except CameraOpenError as exc:
        raise InputError(f"--images {exc}") from None

    started = time.perf_counter()
    engine = FaceEngine(settings.vision.detect_width, settings.vision.max_upsample)
    report = enrol_folder(engine, enroll, settings.vision.max_image_pixels)
    for refusal in report.refused:
        say(f"enrol   {refusal.image.name}: refused, {refusal.reason}")
    if not report.templates:
        raise InputError(f"--enroll {enroll}: no rider could be enrolled (every image was refused)")
    gallery = Gallery(report.templates)
    say(
        f"enrolled {gallery.people} rider(s) from {len(report.templates)} photo(s): {', '.join(report.people)}"
    )

    outbox = Outbox(settings.outbox_path, settings.kiosk.id)
    summary = DemoSummary(outbox=outbox.path)
    try:
        outbox.append("kiosk.started", version=__version__, mode="demo")
        summary.events += 1
        threshold, margin = settings.vision.match_threshold, settings.vision.match_margin
        for frame in camera.frames():
            summary.frames += 1
            observation = engine.observe(frame.image)
            if observation is None:
                summary.no_face += 1
                say(f"frame   {frame.source:<28} no face")
                continue
            decision = gallery.decide(observation.encoding, threshold, margin)
            if decision.person_id is not None:
                event = outbox.append(
                    "face.recognised",
                    person_id=decision.person_id,
                    distance=round(decision.distance or 0.0, 4),
                    margin=None if decision.margin is None else round(decision.margin, 4),
                    frames=1,
                    model=engine.model_version,
                )
                summary.recognised += 1
                verdict = f"RECOGNISED {decision.person_id}"
            else:
                event = outbox.append("face.unrecognised", count=1, reason=decision.reason)
                summary.unrecognised += 1
                verdict = f"not recognised ({decision.reason})"
            summary.events += event is not None
            recorded = f"event {event.seq} {event.id}" if event else "event dropped: outbox full"
            say(
                f"frame   {frame.source:<28} {verdict:<32} distance {_fmt(decision.distance)}"
                f"  margin {_fmt(decision.margin)}  {recorded}"
            )
    finally:
        camera.close()
        outbox.close()
    log.info(
        "demo.finished",
        frames=summary.frames,
        recognised=summary.recognised,
        unrecognised=summary.unrecognised,
        no_face=summary.no_face,
        seconds=round(time.perf_counter() - started, 2),
    )
    return summary
