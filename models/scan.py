"""Where HOG looks in a picture: the scale of a pass and the tiles of the finer levels.

Pure code. A pass scans a picture at most ``detect_width`` wide and at most ``SCAN_AREA``
times ``detect_width`` squared (HOG takes about 11 bytes per pixel it scans, four times as
many pixels in its upsampled pass). When the scaled passes find no face in a large
picture, ``finer_levels`` gives the finer scales to scan it at, in tiles of that same
area (``tiles``), so that a face small in a large photo is found in bounded memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

# The most pixels one pass scans, in squares of the detection width: a 1:2 portrait at
# full width; a taller strip is scaled by its area
SCAN_AREA = 2
# a finer level is scanned when it looks at least this much closer than the passes before;
# the finer levels of one picture scan at most FINER_PIXELS (a large photo with no face
# takes 3 s more here; 12 MP is scanned up to full resolution, 40 MP up to 5100 px wide)
FINER_STEP = 1.5
FINER_PIXELS = 24_000_000


def scan_scale(width: int, height: int, detect_width: int) -> float:
    """The scale a ``width`` x ``height`` picture is scanned at: at most ``detect_width``
    wide and at most ``SCAN_AREA`` * ``detect_width``**2 pixels (never enlarged)."""
    scale = min(1.0, detect_width / max(1, width))
    most = SCAN_AREA * detect_width * detect_width
    if width * height * scale * scale > most:
        scale = math.sqrt(most / (width * height))
    return scale


def finer_levels(width: int, height: int, reached: float) -> list[float]:
    """The scales after ``reached`` (the passes' finest look, upsampling counted): twice,
    then twice that, up to full resolution, while they scan at most ``FINER_PIXELS``."""
    levels: list[float] = []
    scanned = 0.0
    while reached * FINER_STEP <= 1.0:
        reached = min(1.0, 2 * reached)
        scanned += width * height * reached * reached
        if scanned > FINER_PIXELS:
            break
        levels.append(reached)
    return levels


def tiles(
    width: int, height: int, scale: float, detect_width: int, overlap: int
) -> Iterator[tuple[int, int, int]]:
    """``(left, top, span)`` of square regions covering the picture, each ``SCAN_AREA``
    times ``detect_width`` squared once scaled by ``scale``, sharing ``overlap`` scanned
    pixels with the next (a face the coarser level missed fits in that margin)."""
    side = round(math.sqrt(SCAN_AREA) * detect_width)
    step, span, margin = round((side - overlap) / scale), round(side / scale), overlap / scale
    for top in range(0, max(1, height - round(margin)), step):
        for left in range(0, max(1, width - round(margin)), step):
            yield left, top, span
