"""Simulated camera frames of a still photo, for measuring frame fusion on photo sets.

A rider in front of the kiosk gives the camera several frames of one face, each a little
different: the head moves and turns slightly, the light flickers, the sensor adds noise.
A labelled photo set has one still per visit. ``camera_frames`` makes ``count`` frames
from a still with that kind of variation (rotation up to 3 degrees, scale within 3%, a
shift of up to 2% of the picture, brightness within 10%, sensor noise of 2 grey levels),
seeded by the photo's name so every run sees the same frames. ``encode_frames`` sends
each frame through the kiosk's single-frame path and fuses the encodings of the frames
that pass the quality gate with ``consensus.fuse``, as the live pipeline does
(``kiosk faces eval --frames N``). The frames exist only in memory.

It is a simulation, and the docs say so where its figures appear: real frames also
differ in expression and pose more than this, and share the still's own flaws.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from edge.vision.consensus import fuse
from edge.vision.evaluation import Sample, read_sample
from edge.vision.policy import UNREADABLE
from models.analysis import analyse
from models.encoder import FaceEncoder
from models.images import DEFAULT_MAX_PIXELS, Image
from models.quality import QualityConfig


def _seed(sample: Sample) -> int:
    return zlib.crc32(f"{sample.path.parent.name}/{sample.path.name}".encode())


def camera_frames(image: Image, count: int, seed: int) -> list[Image]:
    """``count`` frames of ``image`` as a camera might give them (see the module docstring)."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    frames = []
    for _ in range(count):
        turn = cv2.getRotationMatrix2D(
            (width / 2, height / 2), rng.uniform(-3.0, 3.0), rng.uniform(0.97, 1.03)
        )
        matrix = np.asarray(turn, dtype=np.float64)
        matrix[:, 2] += rng.uniform(-0.02, 0.02, 2) * np.array([width, height], np.float64)
        moved = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
        lit = moved.astype(np.float32) * rng.uniform(0.9, 1.1)
        noisy = lit + rng.normal(0.0, 2.0, lit.shape)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return frames


def encode_frames(
    engine: FaceEncoder,
    samples: Sequence[Sample],
    quality: QualityConfig,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    count: int = 3,
    progress: Callable[[int], None] | None = None,
) -> list[Sample]:
    """Each sample as ``count`` simulated frames, fused: the encoding, or why there is none
    (the most common refusal among the frames)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    done = []
    for number, sample in enumerate(samples, start=1):
        still = read_sample(sample, max_pixels)
        if still is None:
            done.append(Sample(sample.path, sample.label, None, UNREADABLE, None))
            continue
        passed, refusals, faces = [], Counter[str](), 0
        for frame in camera_frames(still, count, _seed(sample)):
            found = analyse(engine, frame, quality)
            faces = max(faces, found.faces)
            if found.encoding is not None:
                passed.append(found.encoding)
            else:
                refusals[found.reason or "no face"] += 1
        if passed:
            done.append(Sample(sample.path, sample.label, fuse(passed), None, faces))
        else:
            reason = refusals.most_common(1)[0][0]
            done.append(Sample(sample.path, sample.label, None, reason, faces))
        if progress is not None:
            progress(number)
    return done
