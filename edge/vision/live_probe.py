"""Probes as the live kiosk sees them, for ``kiosk faces eval``'s live figures.

The offline figures run each photo through ``kiosk faces identify``'s single-frame path:
detection at ``vision.detect_width`` with its upsampling. The kiosk's camera gives 640x480
frames, and ``kiosk run`` looks for faces with the live pipeline's search
(``FaceEngine.search`` at ``vision.live_detect_width``: a quick pass whose candidates the
offline detector then judges). ``encode_live`` puts each photo in such a camera frame
(scaled down to fit, grey around it), finds its faces with that search and only then runs
the same choice, quality gate and encoding; a face the live search misses is a probe
missed with the reason ``no face``, so a miss of the live path shows in the figures. The
frames exist only in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from edge.vision.evaluation import Sample, read_sample
from edge.vision.policy import UNREADABLE
from models.analysis import analyse
from models.encoder import FaceEngine
from models.images import DEFAULT_MAX_PIXELS, Image
from models.quality import QualityConfig

CAMERA_SIZE = (640, 480)  # the kiosk camera's frame (width, height)


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


def live_encoder(live_width: int) -> Callable[..., list[Sample]]:
    """An ``evaluation.Encode`` that probes each photo as ``encode_live`` does."""

    def encode(
        engine: FaceEngine,
        samples: Sequence[Sample],
        quality: QualityConfig,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[Sample]:
        return encode_live(engine, samples, quality, live_width, max_pixels)

    return encode


def encode_live(
    engine: FaceEngine,
    samples: Sequence[Sample],
    quality: QualityConfig,
    live_width: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Sample]:
    """Each sample in a camera frame, found by the live search, checked and encoded."""
    done = []
    for sample in samples:
        image = read_sample(sample, max_pixels)
        if image is None:
            done.append(Sample(sample.path, sample.label, None, UNREADABLE, None))
            continue
        frame = camera_frame(image)
        found = analyse(engine, frame, quality, boxes=engine.search(frame, live_width))
        done.append(Sample(sample.path, sample.label, found.encoding, found.reason, found.faces))
    return done
