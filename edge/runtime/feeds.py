"""The two threads that feed the flow's input queue: the camera and the slot board.

- ``watch_camera``: camera frames through the live face pipeline; posts faces as they come
  and go, and each decision: accepted (``Decided``), in need of the rider's claim
  (``NeedsClaim``), or not recognised.
- ``watch_board``: the board's notifications into the inventory, and returns, removals and
  re-locks into the flow; when the board boots or comes back, a status refresh soon.

Both only post to the queue (``post``); the flow's thread (``edge.runtime.loop``) decides what
an input means. Each runs until ``stopped`` is set (the camera also ends when its frames
do, or when it fails).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from edge import flow as f
from edge.cabinet.slots import Inventory
from edge.ops.metrics import KioskMetrics
from edge.runtime.board_worker import BoardWorker
from edge.runtime.claim_step import NeedsClaim
from edge.ui.preview import PreviewFrames
from edge.vision.consensus import DecisionRecord
from edge.vision.live import LivePipeline
from edge.vision.matcher import Vector
from hardware.board import BoardEvent, BoardOnline
from hardware.cameras import Camera
from hardware.errors import HardwareError
from hardware.messages import Booted, Inserted, Relocked, Removed

log = structlog.get_logger("edge.runtime")


@dataclass(frozen=True)
class Decided:
    """The vision thread's accepted decision, turned into ``flow.Recognised`` by the flow thread."""

    at: float
    record: DecisionRecord
    #: the visit's encodings (in memory only), for a learned template
    encodings: tuple[Vector, ...] = field(default=(), repr=False)


GONE_FRAMES = 3  # frames in a row without a face before a face in view is gone

#: What the camera posts; the board posts flow inputs only.
Seen = f.Input | Decided | NeedsClaim


def watch_camera(
    camera: Camera,
    pipeline: LivePipeline,
    post: Callable[[Seen], None],
    *,
    clock: Callable[[], float],
    stopped: threading.Event,
    metrics: KioskMetrics,
    decisions: list[DecisionRecord],
    preview: PreviewFrames | None = None,
) -> str | None:
    """Frames through the pipeline; every decision is also kept in ``decisions``; with
    ``preview``, the rider page's camera preview is offered each frame (in memory only).
    Returns why the frames stopped when it was a failure (the camera's error, or one of
    the pipeline's), None when they ended or ``stopped`` was set.

    A face is gone (``FaceGone``) once no face was found for the pipeline's
    ``track_lost_s`` (the time its track survives a missed detection) and over
    ``GONE_FRAMES`` frames: a frame or two where the detector misses a rider standing
    still, or a slow CPU, never sends the screen back to idle. When the
    frames end (or the camera fails) a face in view is gone too."""
    face_in_view = False
    missing_since: float | None = None  # first frame without a face, while one is in view
    missed = 0  # frames without a face since then
    gone_after_s = pipeline.config.track_lost_s
    last_seen: tuple[int, str | None] | None = None
    try:
        for frame in camera.frames():
            if stopped.is_set():
                return None
            outcome = pipeline.process(frame)
            now = clock()
            if preview is not None:
                preview.offer(frame.image, now)
            if outcome.record is not None:
                record = outcome.record
                decisions.append(record)
                metrics.decided(record.accepted, record.reason, record.latency_s)
                log.info("face.decision", **record.as_dict())
                if record.accepted:
                    post(Decided(now, record, outcome.encodings))
                elif outcome.claim is not None:
                    post(NeedsClaim(now, outcome.claim))
                else:
                    post(f.NotRecognised(now, record.reason))
                continue
            if outcome.faces == 0:
                missing_since = now if missing_since is None else missing_since
                missed += 1
                if face_in_view and (now - missing_since < gone_after_s or missed < GONE_FRAMES):
                    continue  # a missed detection, or the rider is leaving: not yet gone
                if face_in_view:
                    post(f.FaceGone(now))
                face_in_view, last_seen = False, None
                continue
            face_in_view, missing_since, missed = True, None, 0
            seen = (outcome.faces, outcome.hint)
            if seen != last_seen:
                post(f.FaceSeen(now, faces=outcome.faces, hint=outcome.hint))
                last_seen = seen
    except HardwareError as exc:
        log.error("camera.failed", error=str(exc))
        return str(exc)
    except Exception as exc:  # the pipeline's: a rider must not be seen by a dead thread
        log.error("vision.failed", error=f"{type(exc).__name__}: {exc}")  # no locals, no frame
        return f"the face pipeline stopped ({type(exc).__name__})"
    finally:
        if face_in_view:
            post(f.FaceGone(clock()))  # no frames, no face seen
        if preview is not None:
            preview.clear()
        log.info("vision.stopped")
    return None  # the frames ended


def watch_board(
    events: Callable[[float], BoardEvent | None],
    inventory: Inventory,
    worker: BoardWorker,
    post: Callable[[f.Input], None],
    *,
    clock: Callable[[], float],
    stopped: threading.Event,
) -> None:
    """Notifications into the inventory and the flow. An eject's own outcome (presented,
    jammed) reaches the flow from the board worker only, never twice."""
    while not stopped.is_set():
        event = events(0.2)
        if event is None:
            continue
        try:
            inventory.apply(event)
        except Exception as exc:  # the inventory must never stop the board's events
            log.error("inventory.failed", error=str(exc), event=type(event).__name__)
        now = clock()
        if isinstance(event, Booted):
            worker.booted()
        elif isinstance(event, BoardOnline):
            worker.refresh_soon()
        elif isinstance(event, Removed):
            post(f.Taken(now, event.slot))
        elif isinstance(event, Relocked):
            post(f.NotTaken(now, event.slot))
        elif isinstance(event, Inserted):
            post(f.Returned(now, event.slot, event.powerbank_id, event.charge))
