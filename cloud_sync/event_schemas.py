"""The JSON Schemas of the event envelope, each payload and the batch wire format.

``python -m cloud_sync.event_schemas`` writes them into ``cloud_sync/schemas/``, the files
the cloud team and the kiosk's own checks read; a test fails when those files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cloud_sync.events import (
    CLASS_OF,
    PAYLOADS,
    SCHEMA_VERSION,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    Event,
)

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for the envelope, each payload and the batch wire format."""
    schemas: dict[str, dict[str, Any]] = {
        "event.json": Event.model_json_schema(by_alias=True),
        "batch-request.json": BatchRequest.model_json_schema(by_alias=True),
        "batch-response.json": BatchResponse.model_json_schema(by_alias=True),
        "error.json": ErrorBody.model_json_schema(by_alias=True),
    }
    for event_type, model in PAYLOADS.items():
        schema = model.model_json_schema(by_alias=True)
        schema["description"] = (
            f"Payload of a {event_type} event (class {CLASS_OF[event_type]}). "
            + schema.get("description", "")
        ).strip()
        schemas[f"payload.{event_type}.json"] = schema
    for name, schema in schemas.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://schemas.powerbank-kiosk.invalid/v{SCHEMA_VERSION}/{name}"
    return schemas


def render_schema(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(folder: Path = SCHEMAS_DIR) -> list[Path]:
    """Write every schema into ``folder`` (removing stale ones); return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = json_schemas()
    for old in folder.glob("*.json"):
        if old.name not in wanted:
            old.unlink()
    written = []
    for name, schema in wanted.items():
        path = folder / name
        path.write_text(render_schema(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m cloud_sync.event_schemas: regenerate cloud_sync/schemas/
    for path in write_schemas():
        sys.stdout.write(f"{path}\n")
