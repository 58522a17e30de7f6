"""The OpenAPI document of the cloud API, as committed in ``docs/openapi.json``.

Regenerate with ``kiosk-cloud openapi --output docs/openapi.json``; a test fails when the
committed file differs from what the code serves.
"""

from __future__ import annotations

import json
from pathlib import Path

from cloud_sync.server.app import create_app
from cloud_sync.server.config import CloudSettings

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def render_openapi() -> str:
    app = create_app(CloudSettings())  # the document does not depend on settings
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
