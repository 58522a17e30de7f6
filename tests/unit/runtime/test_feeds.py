"""The camera thread's faces, as the flow hears them: a face stays in view through a few
missed detections and a slow CPU; it is gone once missed for the track's lifetime over
several frames, and when the frames end."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from edge import flow as f
from edge.ops.metrics import KioskMetrics
from edge.runtime.feeds import Seen, watch_camera
from hardware.cameras import Frame
from tests.unit.test_live_pipeline import frame, pipeline


class Frames:
    def __init__(self, frames: list[Frame]) -> None:
        self._frames = frames

    def frames(self) -> Iterator[Frame]:
        yield from self._frames

    def close(self) -> None:
        pass


def heard(frames: list[Frame]) -> list[str]:
    posted: list[Seen] = []
    pipe, _ = pipeline()
    clock = iter(x.timestamp for x in frames)
    last = [0.0]

    def now() -> float:
        last[0] = next(clock, last[0])
        return last[0]

    watch_camera(
        Frames(frames),
        pipe,
        posted.append,
        clock=now,
        stopped=threading.Event(),
        metrics=KioskMetrics("kiosk-t", "0"),
        decisions=[],
    )
    return [type(item).__name__ for item in posted if isinstance(item, f.FaceSeen | f.FaceGone)]


def test_missed_detections_of_a_face_standing_still_are_not_a_face_gone() -> None:
    shots = [frame(i, person=3) for i in range(10)]
    for start in (10, 40):  # two frames missed, then found again
        shots += [frame(start, person=0), frame(start + 1, person=0)]
        shots += [frame(i, person=3) for i in range(start + 2, start + 30)]
    shots += [frame(i, person=3) for i in range(85, 200, 15)]  # a slow CPU: a frame a second
    assert heard(shots[:-1])[:1] == ["FaceSeen"]
    assert "FaceGone" not in heard(shots)[:-1]  # only the end of the frames


def test_a_face_missed_for_long_is_gone_and_the_end_of_the_frames_too() -> None:
    shots = [frame(i, person=3) for i in range(5)] + [frame(i, person=0) for i in range(5, 25)]
    assert heard(shots) == ["FaceSeen", "FaceGone"]
    assert heard([frame(i, person=3) for i in range(5)]) == ["FaceSeen", "FaceGone"]
