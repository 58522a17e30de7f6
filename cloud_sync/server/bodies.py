"""Request bodies, read bounded and parsed strictly, for every route of the cloud API.

``read_body`` reads at most ``limit`` bytes (413 past it, whatever Content-Length says)
within ``timeout_s`` (408 when the whole body has not arrived by then; both answers close
the connection, whose unread rest is never waited for).
``StrictJSONRoute`` is the route class of the app and its routers. Before anything is read,
the route's authentication dependencies run (those marked ``checks_before_body``: operator
and app tokens), so a caller without a right token is answered 401 without its body being
read, inflated or parsed. Then, before FastAPI validates a JSON body against its model, the
body is read through ``read_body`` within the route's own limit (``body_limit``: the body
model's ``max_body_bytes``, else ``ROUTE_LIMIT``, never more than the server's
``max_body_bytes``; the same limit once inflated), refused with 415 when its Content-Type
is not JSON or its Content-Encoding is neither absent, ``identity`` nor ``gzip`` (gzip is
read, bounded, as the batch's is: ``ingest.decode_body``), and parsed by
``wire_values.loads_strict`` (in a worker thread when it is gzip or larger than
``INLINE_PARSE_BYTES``, so that no body holds up the event loop), so that NaN, Infinity, a
key twice in one object, text that is not UTF-8 or nesting too deep is a ``400
malformed_json`` with the reason, and a string (or key) no store can keep is a ``422
invalid_request`` naming where it is, on every route alike. The event batch reads its body
itself (it is signed as sent), with the same checks of its Content-Type and encoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from cloud_sync.errors import WireError
from cloud_sync.server.ingest import decode_body
from cloud_sync.server.problems import Problem
from cloud_sync.wire_values import first_unstorable, loads_strict, printable

DEFAULT_LIMIT = 4 * 1024 * 1024
#: The body limit of a JSON route whose body model names none (``max_body_bytes``).
ROUTE_LIMIT = 64 * 1024
#: Bodies up to this size (and not gzip) are parsed on the event loop; larger ones in a
#: worker thread.
INLINE_PARSE_BYTES = 16 * 1024
DEFAULT_TIMEOUT_S = 30.0
#: An answer given before the body was read to its end: the connection cannot be reused.
_CLOSE = {"Connection": "close"}


async def read_body(request: Request, limit: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes, and with 408
    when it has not all arrived within ``timeout_s`` seconds."""
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
        raise Problem(
            413, "body_too_large", f"the body is {length} bytes; at most {limit}", headers=_CLOSE
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Problem(
                        413, "body_too_large", f"the body exceeds {limit} bytes", headers=_CLOSE
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise Problem(
            408,
            "body_timeout",
            f"the body did not arrive within {timeout_s:g} s ({size} bytes came)",
            headers=_CLOSE,
        ) from None
    return b"".join(chunks)


def body_limit(model: Any, server_limit: int) -> int:
    """The largest body a route whose body is ``model`` reads: the model's
    ``max_body_bytes`` (else ``ROUTE_LIMIT``), at most the server's limit."""
    own = getattr(model, "max_body_bytes", None)
    return min(own if isinstance(own, int) else ROUTE_LIMIT, server_limit)


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
        scope = request.scope
        if body and "content-type" not in request.headers:
            # read as JSON, as documented: FastAPI's strict_content_type would validate
            # the bytes themselves ("body: Input should be a valid dictionary")
            headers = [*scope["headers"], (b"content-type", b"application/json")]
            scope = {**scope, "headers": headers}
        super().__init__(scope, request.receive)
        self._body = body
        self._parsed = parsed

    async def body(self) -> bytes:
        return self._body

    async def json(self) -> Any:
        return self._parsed


def _decode_and_parse(body: bytes, encoding: str | None, limit: int) -> tuple[bytes, Any]:
    """The body inflated (within ``limit``) and parsed strictly; ``Problem`` otherwise."""
    body = decode_body(body, encoding, limit)
    try:
        parsed = loads_strict(body)
    except WireError as exc:
        raise Problem(400, "malformed_json", f"the body is not strict JSON: {exc}") from None
    bad = first_unstorable(parsed, "body")
    if bad is not None:
        raise Problem(422, "invalid_request", f"{printable(bad[0], 200)}: {bad[1]}")
    return body, parsed


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is bounded and strict, and read only once the caller's
    token is right (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        model = self.body_field.field_info.annotation
        checks: list[Callable[[Request], Any]] = [
            dependency.call
            for dependency in self.dependant.dependencies
            if dependency.call is not None and getattr(dependency.call, "checks_before_body", False)
        ]

        async def strict_handler(request: Request) -> Response:
            for check in checks:  # a wrong token is refused before the body is read
                try:
                    await run_in_threadpool(check, request)
                except Problem as problem:
                    problem.headers.update(_CLOSE)  # the unread body is never waited for
                    raise
            service = getattr(request.app.state, "service", None)
            server_limit = DEFAULT_LIMIT
            timeout_s = DEFAULT_TIMEOUT_S
            if service is not None:
                server_limit = service.settings.max_body_bytes
                timeout_s = service.settings.body_timeout_s
            limit = body_limit(model, server_limit)
            body = await read_body(request, limit, timeout_s)
            parsed: Any = None
            if body:
                check_media_type(request.headers.get("content-type"))
                encoding = request.headers.get("content-encoding")
                if len(body) > INLINE_PARSE_BYTES or (encoding or "").strip().lower() == "gzip":
                    body, parsed = await run_in_threadpool(_decode_and_parse, body, encoding, limit)
                else:
                    body, parsed = _decode_and_parse(body, encoding, limit)
            return await handler(_ReadRequest(request, body, parsed))

        return strict_handler
