"""The rider screen's server: the page, its strings, and the live screen as server-sent events.

The runtime calls ``ScreenHub.publish`` (from any thread) whenever the flow shows a new
screen; every open page receives it within milliseconds. Nothing is loaded from the
internet: the page, its script, its style and its strings are files in this package.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from edge.flow import Screen

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
