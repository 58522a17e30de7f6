"""Probes as the live kiosk sees them, for ``kiosk faces eval``'s live figures.

The offline figures run each photo through ``kiosk faces identify``'s single-frame path:
detection at ``vision.detect_width`` with its upsampling. The kiosk's camera gives 640x480
frames, and ``kiosk run`` looks for faces with the live pipeline's search
(``FaceEngine.search`` at ``vision.live_detect_width``: a quick pass whose candidates the
offline detector then judges) and, on every third search of a scene where nobody is
tracked, the small-face pass (``live.small_face_pass``). A rider standing in front of the
camera meets both within a few frames, so ``encode_live`` puts each photo in such a camera
frame (scaled down to fit, grey around it; or, with ``camera``, degraded as a kiosk camera
degrades it: ``edge.vision.degrade``), finds its faces with the search and, when that
finds none, with the small-face pass, and only then runs the same choice, quality gate
and encoding; a face both miss is a probe missed with the reason ``no face``, so a miss
of the live path shows in the figures. The frames exist only in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from edge.vision.degrade import KioskCamera, degrade_photo
from edge.vision.evaluation import Sample, read_sample
from edge.vision.live import small_face_pass
from edge.vision.policy import UNREADABLE
from models.analysis import analyse
from models.encoder import FaceEngine
from models.images import DEFAULT_MAX_PIXELS, Image
from models.quality import QualityConfig

CAMERA_SIZE = (640, 480)  # the kiosk camera's frame (width, height)
# How the live path finds a face, for the encodings cache: a change to it must not be
# answered by encodings the previous one made (2: the small-face pass, the closer look)
LIVE_PATH = "v2"


def camera_frame(image: Image, size: tuple[int, int] = CAMERA_SIZE) -> Image:
    """``image`` scaled down to fit a ``size`` camera frame, centred on grey."""
    width, height = size
    rows, cols = image.shape[:2]
    scale = min(1.0, width / cols, height / rows)
    if scale < 1.0:
        fitted = (max(1, round(cols * scale)), max(1, round(rows * scale)))
        image = np.asarray(cv2.resize(image, fitted, interpolation=cv2.INTER_AREA), np.uint8)
        rows, cols = image.shape[:2]
    frame = np.full((height, width, 3), 128, np.uint8)
    top, left = (height - rows) // 2, (width - cols) // 2
    frame[top : top + rows, left : left + cols] = image if image.ndim == 3 else image[..., None]
    return frame


def live_encoder(live_width: int, camera: KioskCamera | None = None) -> Callable[..., list[Sample]]:
    """An ``evaluation.Encode`` that probes each photo as ``encode_live`` does."""

    def encode(
        engine: FaceEngine,
        samples: Sequence[Sample],
        quality: QualityConfig,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[Sample]:
        return encode_live(engine, samples, quality, live_width, max_pixels, camera)

    return encode


def degraded_encoder(camera: KioskCamera) -> Callable[..., list[Sample]]:
    """An ``evaluation.Encode`` through the single-frame path (``kiosk faces identify``) of
    each photo degraded by ``camera``."""

    def encode(
        engine: FaceEngine,
        samples: Sequence[Sample],
        quality: QualityConfig,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[Sample]:
        done = []
        for sample in samples:
            image = read_sample(sample, max_pixels)
            if image is None:
                done.append(Sample(sample.path, sample.label, None, UNREADABLE, None))
                continue
            found = analyse(engine, degrade_photo(engine, image, sample.path, camera), quality)
            done.append(
                Sample(sample.path, sample.label, found.encoding, found.reason, found.faces)
            )
        return done

    return encode


def encode_live(
    engine: FaceEngine,
    samples: Sequence[Sample],
    quality: QualityConfig,
    live_width: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    camera: KioskCamera | None = None,
) -> list[Sample]:
    """Each sample in a camera frame (degraded by ``camera`` when given), found by the live
    search or the small-face pass, checked and encoded."""
    done = []
    for sample in samples:
        image = read_sample(sample, max_pixels)
        if image is None:
            done.append(Sample(sample.path, sample.label, None, UNREADABLE, None))
            continue
        if camera is None:
            frame = camera_frame(image)
        else:
            frame = degrade_photo(engine, image, sample.path, camera)
        boxes = engine.search(frame, live_width) or small_face_pass(engine, frame)
        found = analyse(engine, frame, quality, boxes=boxes)
        done.append(Sample(sample.path, sample.label, found.encoding, found.reason, found.faces))
    return done
