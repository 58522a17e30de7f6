"""A crash while a template is in hand: the log gets a plain traceback and never the
template. Structlog's console renderer prints tracebacks through rich with every frame's
local variables, which, in the cloud's roster routes, the matcher or the face pipeline,
hold templates and frames; uvicorn logs each unexpected error of an app with its traceback.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloud_sync.claim_code import hash_claim
from cloud_sync.logs import configure_logging
from models.encoder import FaceEngine
from models.images import read_image
from tests.integration.sync.cloudkit import CONSENT, start_cloud


def _leaked(vector: np.ndarray, text: str) -> list[str]:
    """The template's values found in ``text``, each as its first 5 decimals standing alone
    (not inside a longer number: a timestamp's microseconds)."""
    found = []
    for value in vector[:16]:
        digits = f"{abs(value):.10f}"[:7]
        if re.search(rf"(?<![\d.]){re.escape(digits)}", text):
            found.append(digits)
    return found


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_crash_in_a_roster_route_logs_no_template(
    fmt: str, dev_faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    observation = FaceEngine().observe(read_image(dev_faces / "person_01" / "01.jpg"))
    assert observation is not None
    vector = np.asarray(observation.encoding, dtype=np.float64)
    claim_hash = hash_claim("4821", log2_n=10)
    cloud = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}")
    log = io.StringIO()
    try:
        configure_logging("cloud", fmt=fmt, stream=log)  # type: ignore[arg-type]
        cloud.accept_consent_text()
        model = cloud.service().roster
        assert model is not None

        def broken_seal(*_args: Any) -> bytes:
            raise RuntimeError("the sealing broke")

        # the rider's record, its plain bytes and the request body are locals of the
        # frames this unwinds
        monkeypatch.setattr("cloud_sync.server.roster.seal", broken_seal)
        body = {
            "person_id": "ann",
            "templates": [{"model": model.model, "vector": vector.tolist()}],
            "consent": CONSENT,
            "claim_hash": claim_hash,
        }
        response = cloud.admin("POST", "/v1/admin/riders", json=body)
        # uvicorn logs the app's error once the 500 is sent: wait for its line
        deadline = time.monotonic() + 15
        while "Exception in ASGI application" not in log.getvalue():
            assert time.monotonic() < deadline, log.getvalue()
            time.sleep(0.05)
    finally:
        cloud.stop()
    assert response.status_code == 500, response.text
    assert "the sealing broke" not in response.text
    text = log.getvalue()
    # the crash is logged, with the traceback as text (in JSON too: not the repr of a
    # traceback object), and uvicorn's own line about it as well
    assert "cloud.unexpected_error" in text
    assert "Exception in ASGI application" in text
    assert text.count("RuntimeError: the sealing broke") >= 2, text
    assert "<traceback object" not in text
    assert _leaked(vector, text) == [], text
    assert claim_hash.rsplit("$", 1)[1] not in text
