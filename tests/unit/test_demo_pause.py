"""``kiosk demo --pause``: the pause between two steps ends on Enter, and waits its time out
when nothing can be typed (a closed standard input, as under CI or systemd)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from edge.demo.scenario import pause


def test_enter_ends_the_pause_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reading, writing = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(reading))
    os.write(writing, b"\n")
    said: list[str] = []
    started = time.monotonic()
    pause(60, said.append)
    assert time.monotonic() - started < 30  # not the minute it would otherwise wait
    assert said == ["  (pause 60 s, Enter goes on)"]
    os.close(writing)


def test_a_closed_input_waits_the_whole_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    reading, writing = os.pipe()
    os.close(writing)  # the end of the input at once
    monkeypatch.setattr(sys, "stdin", os.fdopen(reading))
    started = time.monotonic()
    pause(0.5, lambda _: None)
    assert time.monotonic() - started >= 0.5


def test_other_keys_do_not_end_it_and_no_pause_says_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reading, writing = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(reading))
    os.write(writing, b"x")
    started = time.monotonic()
    pause(0.5, lambda _: None)
    assert time.monotonic() - started >= 0.5
    said: list[str] = []
    pause(0, said.append)
    assert said == []
    os.close(writing)
