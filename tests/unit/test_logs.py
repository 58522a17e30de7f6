"""Logs: JSON off a terminal, kiosk_id on every line, nothing biometric ever written."""

from __future__ import annotations

import io
import json

import numpy as np
import structlog

from cloud_sync.logs import configure_logging, scrub_biometrics


def test_json_lines_carry_kiosk_id_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("kiosk-0042", stream=stream)
    structlog.get_logger("test").info("rental.summary", slot=4, outcome="ok")
    record = json.loads(stream.getvalue().strip())
    assert record["event"] == "rental.summary"
    assert record["kiosk_id"] == "kiosk-0042"
    assert record["slot"] == 4
    assert record["level"] == "info"


def test_console_format_when_asked() -> None:
    stream = io.StringIO()
    configure_logging("kiosk-0042", fmt="console", stream=stream)
    structlog.get_logger("test").warning("board.slow", slot=2)
    text = stream.getvalue()
    assert "board.slow" in text
    assert "kiosk_id=kiosk-0042" in text
    assert not text.lstrip().startswith("{")


def test_level_filters_debug() -> None:
    stream = io.StringIO()
    configure_logging("k1", level="info", stream=stream)
    structlog.get_logger("test").debug("hidden")
    assert stream.getvalue() == ""


def test_templates_and_images_are_withheld() -> None:
    template = np.random.default_rng(1).normal(size=128)
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    stream = io.StringIO()
    configure_logging("k1", stream=stream)
    structlog.get_logger("test").info(
        "oops",
        encoding=template,
        as_list=template.tolist(),
        frame=image,
        jpeg=b"\xff\xd8\xff\xe0" + bytes(100),
        nested={"inner": template.tolist()},
        ok=[1, 2, 3],
    )
    line = stream.getvalue()
    record = json.loads(line)
    assert record["encoding"] == "<array (128,) withheld>"
    assert record["as_list"] == "<128 numbers withheld>"
    assert record["frame"] == "<array (4, 4, 3) withheld>"
    assert record["jpeg"] == "<104 bytes withheld>"
    assert record["nested"] == {"inner": "<128 numbers withheld>"}
    assert record["ok"] == [1, 2, 3]
    assert f"{template[0]:.6f}"[:8] not in line


def test_scrub_leaves_ordinary_values() -> None:
    event = {"event": "x", "distance": 0.31, "person_id": "p1", "counts": [1, 2]}
    assert scrub_biometrics(None, "info", dict(event)) == event
