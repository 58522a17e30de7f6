"""The rider screen's server: the page, its strings, and the live screen as server-sent events.

The runtime calls ``ScreenHub.publish`` (from any thread) whenever the flow shows a new
screen; every open page receives it within milliseconds. On the claim screen the page's
keypad posts the typed code to ``POST /claim`` (from 127.0.0.1 only), which hands it to
the runtime's listener (``ScreenHub.on_claim``); the code is never logged or echoed. Nothing is loaded from the
internet: the page, its script, its style and its strings are files in this package.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from edge.flow import Screen

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1"})
CLAIM_CODE = re.compile(r"^[0-9]{4,6}$")

UI_DIR = Path(str(resources.files("edge.ui")))
LANGUAGES = tuple(sorted(path.stem for path in (UI_DIR / "strings").glob("*.json")))


def load_strings(language: str) -> dict[str, Any]:
    if language not in LANGUAGES:
        raise ValueError(f"no strings for language {language!r} (have {', '.join(LANGUAGES)})")
    data: dict[str, Any] = json.loads(
        (UI_DIR / "strings" / f"{language}.json").read_text(encoding="utf-8")
    )
    return data


class ScreenHub:
    """The latest screen and the pages waiting for the next one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {**asdict(Screen("idle")), "offline": False}
        self._version = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._claim_listener: Callable[[str], None] | None = None

    def on_claim(self, listener: Callable[[str], None]) -> None:
        """Who receives the codes typed on the claim screen (the runtime)."""
        self._claim_listener = listener

    def claim(self, code: str) -> bool:
        """Hand a typed code on; ``False`` when no claim is being asked for."""
        with self._lock:
            asking = self._state.get("key") == "claim"
            listener = self._claim_listener
        if not asking or listener is None:
            return False
        listener(code)
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

    async def updates(self) -> AsyncIterator[dict[str, Any]]:
        """The current state at once, then every change."""
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
                    await asyncio.wait_for(event.wait(), timeout=15.0)
                except TimeoutError:
                    yield {}  # a keep-alive comment, so proxies and the page know we are here
                event.clear()
        finally:
            with self._lock:
                self._waiters.discard(entry)


def create_app(hub: ScreenHub, language: str = "en") -> FastAPI:
    """The rider screen's web app."""
    load_strings(language)  # fail at start on a bad language, not in front of a rider
    app = FastAPI(title="Rider screen", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=UI_DIR / "static"), name="static")
    page = (UI_DIR / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page.replace('<html lang="en">', f'<html lang="{language}" data-lang="{language}">')

    @app.get("/strings")
    def strings(lang: str | None = None) -> JSONResponse:
        chosen = lang or language
        if chosen not in LANGUAGES:
            raise HTTPException(404, f"no strings for language {chosen!r}")
        return JSONResponse({"lang": chosen, "strings": load_strings(chosen)})

    @app.get("/state")
    def state() -> dict[str, Any]:
        return hub.state

    @app.post("/claim", status_code=202)
    async def claim(request: Request) -> dict[str, str]:
        if request.client is None or request.client.host not in LOCAL_HOSTS:
            raise HTTPException(403, "the claim is typed at the kiosk only")
        try:
            body = await request.json()
        except ValueError:
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        if not isinstance(code, str) or not CLAIM_CODE.match(code):
            raise HTTPException(422, "a claim is 4 to 6 digits")
        if not hub.claim(code):
            raise HTTPException(409, "no claim is asked for now")
        return {"status": "checking"}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            async for state in hub.updates():
                if await request.is_disconnected():
                    return
                if not state:
                    yield ": keep-alive\n\n"
                else:
                    yield f"event: screen\ndata: {json.dumps(state)}\n\n"

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return app
