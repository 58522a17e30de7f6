"""Request bodies, read bounded and parsed strictly, for every route of the cloud API.

``read_body`` reads at most ``limit`` bytes (413 past it, whatever Content-Length says).
``StrictJSONRoute`` is the route class of the app and its routers: before FastAPI
validates a JSON body against its model, the body is read through ``read_body`` (the
server's ``max_body_bytes``), refused with 415 when its Content-Type is not JSON or its
Content-Encoding is neither absent, ``identity`` nor ``gzip`` (gzip is read, bounded,
as the batch's is: ``ingest.decode_body``), and parsed by ``wire_values.loads_strict``, so that NaN,
Infinity, a key twice in one object, text that is not UTF-8 or nesting too deep is a
``400 malformed_json`` with the reason, and a string (or key) no store can keep is a
``422 invalid_request`` naming where it is, on every route alike. The event batch reads its
body itself (it is signed as sent), with the same checks of its Content-Type and encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from cloud_sync.errors import WireError
from cloud_sync.server.ingest import decode_body
from cloud_sync.server.problems import Problem
from cloud_sync.wire_values import first_unstorable, loads_strict, printable

DEFAULT_LIMIT = 4 * 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
        raise Problem(413, "body_too_large", f"the body is {length} bytes; at most {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body_too_large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _says_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI reads a body without a Content-Type as JSON
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def check_media_type(content_type: str | None) -> None:
    """A body that says it is something other than JSON is a 415 on every route (none
    reads forms, text or XML); no Content-Type at all is read as JSON."""
    if not _says_json(content_type):
        shown = printable(content_type or "", 100)
        raise Problem(
            415,
            "unsupported_media_type",
            f"Content-Type {shown!r}: the body must be application/json",
        )


class _ReadRequest(Request):
    """A request whose body was read (bounded) and parsed (strictly) already."""

    def __init__(self, request: Request, body: bytes, parsed: Any) -> None:
        super().__init__(request.scope, request.receive)
        self._body = body
        self._parsed = parsed

    async def body(self) -> bytes:
        return self._body

    async def json(self) -> Any:
        return self._parsed


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is bounded and strict (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict_handler(request: Request) -> Response:
            service = getattr(request.app.state, "service", None)
            limit = service.settings.max_body_bytes if service is not None else DEFAULT_LIMIT
            body = await read_body(request, limit)
            parsed: Any = None
            if body:
                check_media_type(request.headers.get("content-type"))
                body = decode_body(body, request.headers.get("content-encoding"), limit)
                try:
                    parsed = loads_strict(body)
                except WireError as exc:
                    raise Problem(
                        400, "malformed_json", f"the body is not strict JSON: {exc}"
                    ) from None
                bad = first_unstorable(parsed, "body")
                if bad is not None:
                    raise Problem(422, "invalid_request", f"{printable(bad[0], 200)}: {bad[1]}")
            return await handler(_ReadRequest(request, body, parsed))

        return strict_handler
