"""Where the detector looks: the finer levels' tiles cover the whole picture, in bounded
pieces, and the levels stop at their pixel budget."""

from __future__ import annotations

import numpy as np
import pytest

from models.scan import FINER_PIXELS, SCAN_AREA, finer_levels, scan_scale, tiles


@pytest.mark.parametrize(
    ("width", "height"), [(6000, 4000), (4000, 6000), (2000, 1500), (7700, 5133)]
)
def test_each_finer_level_covers_the_picture_in_bounded_tiles(width: int, height: int) -> None:
    reached = scan_scale(width, height, 640) * 2
    levels = finer_levels(width, height, reached)
    assert levels and levels[0] > reached and levels == sorted(set(levels))
    assert sum(width * height * s * s for s in levels) <= FINER_PIXELS
    for scale in levels:
        seen = np.zeros((height, width), dtype=bool)
        for left, top, span in tiles(width, height, scale, 640, 180):
            assert (span * scale) ** 2 <= SCAN_AREA * 640 * 640 * 1.01
            seen[top : top + span, left : left + span] = True
        assert seen.all()


def test_a_picture_the_passes_saw_at_full_resolution_has_no_finer_level() -> None:
    assert finer_levels(1000, 750, scan_scale(1000, 750, 640) * 2) == []
    assert finer_levels(640, 480, 1.0) == []


def test_a_strip_is_scanned_by_its_area_and_a_portrait_by_its_width() -> None:
    assert scan_scale(640, 40_000, 640) == pytest.approx((2 * 640 * 640 / (640 * 40_000)) ** 0.5)
    assert scan_scale(1000, 2000, 640) == pytest.approx(0.64)
    assert scan_scale(300, 400, 640) == 1.0
