"""Structured logs for every process of the kiosk and the cloud (the shared core's setup).

JSON lines when the log stream is not a terminal (systemd's journal, files, pipes), a
readable console format when it is. ``kiosk_id`` is bound on every line. Logs go to
standard error so that a command's own output on standard output stays clean.

No face image or template ever reaches a log line: ``scrub_biometrics`` replaces any
array, bytes object or long run of numbers with a short placeholder before rendering, and
a traceback is always the plain one (file, line, source; never a frame's local variables,
which hold templates and frames where the face pipeline, the matcher or the roster fails):
structlog's console renderer would otherwise print every frame's locals through rich.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog

Format = Literal["auto", "json", "console"]

# A sequence of this many numbers or more is treated as a possible template.
_MAX_NUMBERS = 16


def _is_number_run(value: Any) -> bool:
    if not isinstance(value, (list, tuple)) or len(value) < _MAX_NUMBERS:
        return False
    return all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value)


def _scrub(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes withheld>"
    if hasattr(value, "__array_interface__") or type(value).__name__ == "ndarray":
        shape = getattr(value, "shape", "?")
        return f"<array {shape} withheld>"
    if _is_number_run(value):
        return f"<{len(value)} numbers withheld>"
    if isinstance(value, Mapping):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(item) for item in value]
    return value


def scrub_biometrics(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: withhold anything that could be a face image or template."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _scrub(value)
    return event_dict


def configure_logging(
    kiosk_id: str,
    level: str = "info",
    fmt: Format = "auto",
    stream: TextIO | None = None,
) -> None:
    """Set up structlog and the standard library's loggers for this process.

    Both end in one handler on one stream, so lines from many threads never interleave,
    and records of other libraries (httpx, uvicorn) get the same format, ``kiosk_id`` and
    scrubbing as our own.
    """
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        scrub_biometrics,
        # a traceback as plain text, for our lines and other libraries' alike (uvicorn's
        # "Exception in ASGI application"): never a frame's locals, and in JSON the text
        # itself rather than the repr of a traceback object
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(kiosk_id=kiosk_id)
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # uvicorn's records go through the root, as ours do: its default logging config (any
    # server started with it in this process) gives its loggers handlers of their own and
    # stops them propagating, which would print its tracebacks past this formatter
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        detached = logging.getLogger(name)
        for old in list(detached.handlers):
            detached.removeHandler(old)
        detached.propagate = True
    # One line per HTTP request is the cloud API's and the sync daemon's own business.
    logging.getLogger("httpx").setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str) -> Any:
    """A structlog logger named after its module."""
    return structlog.get_logger(name)
