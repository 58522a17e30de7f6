"""The rider screen's server: the page, its strings, and the live screen as server-sent events.

The runtime calls ``ScreenHub.publish`` (from any thread) whenever the flow shows a new
screen; every open page receives it within milliseconds, and an ``alive`` message every
``ALIVE_S`` seconds besides, so that a page which hears nothing for a few seconds knows the
kiosk is gone and says so (the page's out-of-service screen). Each stream starts with a
``hello`` naming this server's start (``boot``): a page that reconnects to a restarted
kiosk reloads itself, so it always runs the page the kiosk serves now.

On the claim screen the keypad posts the typed code to ``POST /claim`` and "not me" to
``POST /claim/cancel`` (from 127.0.0.1 only), handed to the runtime's listeners
(``ScreenHub.on_claim``, ``on_cancel``); the code is never logged or echoed. With the
preview on (``ui.preview``), ``GET /preview.jpg`` gives the camera's latest low-rate picture
to a browser on 127.0.0.1 only (``edge.ui.preview``). Nothing is loaded from the internet:
the page, its script, its style and its strings are files in this package.
"""

from __future__ import annotations

import asyncio
import html
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_sync.claim_code import CLAIM_MAX_DIGITS, CLAIM_MIN_DIGITS, CLAIM_PATTERN
from edge.flow import Screen
from edge.ui.preview import PreviewFrames
from edge.ui.texts import LANGUAGES, UI_DIR, load_strings

__all__ = ["LANGUAGES", "ScreenHub", "create_app", "load_strings"]

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1"})
#: the names a request may give in its Host (and Origin): the page is the kiosk's own, so a
#: web page elsewhere that points a name of its own at 127.0.0.1 (DNS rebinding) is refused
LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
ALIVE_S = 2.0  # the page declares the kiosk lost after a few of these go missing
RETRY_MS = 1000  # how soon a page's EventSource tries again after losing the stream
MAX_BODY = 1024  # a claim or a cancel is a few bytes: more is refused unread
MAX_STREAMS = 16  # open /events streams: the screen needs one, a page reloading two
PREVIEW_SCREENS = frozenset({"idle", "checking"})  # where the page shows the camera preview


class ScreenHub:
    """The latest screen and the pages waiting for the next one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {**asdict(Screen("idle")), "offline": False}
        self._version = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._claim_listener: Callable[[str], None] | None = None
        self._cancel_listener: Callable[[], None] | None = None

    def on_claim(self, listener: Callable[[str], None]) -> None:
        """Who receives the codes typed on the claim screen (the runtime)."""
        self._claim_listener = listener

    def on_cancel(self, listener: Callable[[], None]) -> None:
        """Who hears the rider's "not me" on the claim screen (the runtime)."""
        self._cancel_listener = listener

    def _asking(self) -> bool:
        with self._lock:
            return self._state.get("key") == "claim"

    def claim(self, code: str) -> bool:
        """Hand a typed code on; ``False`` when no claim is being asked for."""
        listener = self._claim_listener
        if not self._asking() or listener is None:
            return False
        listener(code)
        return True

    def cancel(self) -> bool:
        """Hand the rider's "not me" on; ``False`` when no claim is being asked for."""
        listener = self._cancel_listener
        if not self._asking() or listener is None:
            return False
        listener()
        return True

    @property
    def state(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def publish(self, screen: Screen | None = None, offline: bool | None = None) -> None:
        """Show ``screen`` (and/or change the offline indicator) on every page."""
        with self._lock:
            if screen is not None:
                self._state.update(asdict(screen))
            if offline is not None:
                self._state["offline"] = offline
            self._version += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def updates(self, alive_s: float = ALIVE_S) -> AsyncIterator[dict[str, Any]]:
        """The current state at once, then every change; ``{}`` every ``alive_s`` quiet."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            self._waiters.add(entry)
        try:
            seen = -1
            while True:
                with self._lock:
                    version, state = self._version, dict(self._state)
                if version != seen:
                    seen = version
                    yield state
                    continue
                try:
                    await asyncio.wait_for(event.wait(), timeout=alive_s)
                except TimeoutError:
                    yield {}  # "still here": the page counts on hearing it
                event.clear()
        finally:
            with self._lock:
                self._waiters.discard(entry)


def _local(request: Request) -> bool:
    return request.client is not None and request.client.host in LOCAL_HOSTS


def host_name(value: str) -> str:
    """The name in a Host header or an origin's authority, without its port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _origin_name(origin: str) -> str | None:
    """The host name of an ``Origin`` header (None for "null" or anything else unreadable)."""
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https"):
        return None
    return host_name(rest.split("/", 1)[0])


class ThisKioskOnly:
    """ASGI middleware: 421 for a request whose Host is not one of ``names``, 403 for a POST
    whose Origin is another site's. Plain ASGI, so the screen's event stream passes through
    untouched (a ``BaseHTTPMiddleware`` would take it for disconnected)."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            refused = None
            if host_name(headers.get("host", "")) not in self.names:
                refused = JSONResponse({"detail": "not this kiosk's address"}, 421)
            elif (
                scope["method"] == "POST"
                and "origin" in headers
                and _origin_name(headers["origin"]) not in self.names
            ):
                refused = JSONResponse({"detail": "only the kiosk's own page may"}, 403)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _json_body(request: Request) -> Any:
    """A small JSON body, or ``HTTPException``: 415 unless JSON (a cross-site form cannot
    send that without the browser asking first), 413 past ``MAX_BODY`` (read no further),
    422 when it does not parse."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(415, "send JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"a body of at most {MAX_BODY} bytes")
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise HTTPException(413, f"a body of at most {MAX_BODY} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def create_app(
    hub: ScreenHub,
    language: str = "en",
    languages: Sequence[str] | None = None,
    preview: PreviewFrames | None = None,
    language_reset_s: float = 60.0,
    hosts: Sequence[str] = (),
) -> FastAPI:
    """The rider screen's web app: starts in ``language``, offers a button for each of
    ``languages`` (none when there is only one) and goes back to ``language`` after
    ``language_reset_s`` on the idle screen; shows ``preview`` when given.

    Every request must name this kiosk in its Host (a local name, or one of ``hosts``: the
    configured ``ui.host``), else 421; a POST from a page of another origin is 403."""
    offered = list(dict.fromkeys(languages or [language]))
    if language not in offered:
        offered.insert(0, language)
    for each in offered:
        load_strings(each)  # fail at start on a bad language, not in front of a rider
    boot = uuid.uuid4().hex
    app = FastAPI(title="Rider screen", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=UI_DIR / "static"), name="static")
    page = (UI_DIR / "static" / "index.html").read_text(encoding="utf-8")
    settings = {
        "lang": language,
        "languages": " ".join(offered),
        "claim-min": str(CLAIM_MIN_DIGITS),
        "claim-max": str(CLAIM_MAX_DIGITS),
        "preview": "on" if preview is not None else "off",
        "language-reset-s": f"{language_reset_s:g}",
    }
    attributes = " ".join(f'data-{key}="{html.escape(value)}"' for key, value in settings.items())
    page = page.replace('<html lang="en">', f'<html lang="{language}" {attributes}>')

    names = LOCAL_NAMES | {host_name(each) for each in hosts if each}
    streams = [0]  # the open /events streams (changed on the server's event loop only)

    app.add_middleware(ThisKioskOnly, names=names)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/strings")
    def strings(lang: str | None = None) -> JSONResponse:
        chosen = lang or language
        if chosen not in offered:
            raise HTTPException(404, f"no strings for language {chosen!r}")
        return JSONResponse({"lang": chosen, "strings": load_strings(chosen)})

    @app.get("/state")
    def state() -> dict[str, Any]:
        return hub.state

    @app.post("/claim", status_code=202)
    async def claim(request: Request) -> dict[str, str]:
        if not _local(request):
            raise HTTPException(403, "the claim is typed at the kiosk only")
        body = await _json_body(request)
        code = body.get("code") if isinstance(body, dict) else None
        if not isinstance(code, str) or not CLAIM_PATTERN.match(code):
            raise HTTPException(422, f"a claim is {CLAIM_MIN_DIGITS} to {CLAIM_MAX_DIGITS} digits")
        if not hub.claim(code):
            raise HTTPException(409, "no claim is asked for now")
        return {"status": "checking"}

    @app.post("/claim/cancel", status_code=202)
    async def cancel(request: Request) -> dict[str, str]:
        if not _local(request):
            raise HTTPException(403, "the claim is cancelled at the kiosk only")
        await _json_body(request)
        if not hub.cancel():
            raise HTTPException(409, "no claim is asked for now")
        return {"status": "cancelled"}

    @app.get("/preview.jpg")
    def preview_jpg(request: Request) -> Response:
        if preview is None:
            raise HTTPException(404, "the preview is off (ui.preview)")
        if not _local(request):
            raise HTTPException(403, "the preview is shown at the kiosk only")
        # only while the screen shows it: never the face of a rider typing a code, say
        jpeg = preview.latest() if hub.state.get("key") in PREVIEW_SCREENS else None
        if jpeg is None:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        if streams[0] >= MAX_STREAMS:  # held open by something else than the screen
            raise HTTPException(503, "too many open streams", headers={"Retry-After": "2"})

        async def stream() -> AsyncIterator[str]:
            streams[0] += 1  # counted while it runs: a stream never started holds nothing
            try:
                yield f"retry: {RETRY_MS}\nevent: hello\ndata: {json.dumps({'boot': boot})}\n\n"
                async for state in hub.updates():
                    if await request.is_disconnected():
                        return
                    if not state:
                        yield "event: alive\ndata: {}\n\n"
                    else:
                        yield f"event: screen\ndata: {json.dumps(state)}\n\n"
            finally:
                streams[0] -= 1

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return app
