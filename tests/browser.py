"""A real headless Chromium (Debian's) driven by Playwright, and a uvicorn server in a thread."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn

from tests.conftest import free_port, need

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            log_config=None,  # uvicorn's own would detach its loggers from the root for good
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright browser on Debian's chromium (never a downloaded one)."""
    need(Path(CHROMIUM).exists(), "Chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


# -- what a rider would notice, measured in the page ----------------------------------------------

#: the screens the rider page is checked on: the Pi's 7" display both ways, the Touch
#: Display 2 upright, and a Full HD screen upright
SIZES = [(800, 480), (480, 800), (720, 1280), (1080, 1920)]

AXE_JS = (Path(str(resources.files("axe_playwright_python"))) / "axe.min.js").read_text("utf-8")

# Every shown element inside the window, nothing scrolled away, no text cut off; the
# answer lists what is wrong (empty when all fits).
FITS_JS = """() => {
  const W = innerWidth, H = innerHeight, wrong = [];
  const d = document.documentElement;
  if (d.scrollWidth > d.clientWidth || d.scrollHeight > d.clientHeight) wrong.push('page scrolls');
  for (const el of document.querySelectorAll('main *, footer *')) {
    if (!el.getClientRects().length || getComputedStyle(el).visibility === 'hidden') continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    const name = el.id || el.tagName.toLowerCase();
    if (r.left < -0.5 || r.top < -0.5 || r.right > W + 0.5 || r.bottom > H + 0.5)
      wrong.push(name + ' outside the window');
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflow !== 'visible')
      wrong.push(name + ' clips its text');
  }
  for (const box of [document.getElementById('screen'), document.querySelector('footer')])
    if (box.scrollHeight > box.clientHeight + 1 || box.scrollWidth > box.clientWidth + 1)
      wrong.push(box.tagName.toLowerCase() + ' overflows');
  return wrong;
}"""

# For the title and the body: the words of each line (by their position on the screen).
LINES_JS = """(id) => {
  const el = document.getElementById(id), node = el.firstChild;
  if (!node || !el.textContent.trim()) return [];
  const text = node.textContent, range = document.createRange(), lines = [];
  let top = null, at = 0;
  for (const word of text.split(/\\s+/).filter(Boolean)) {
    const start = text.indexOf(word, at); at = start + word.length;
    range.setStart(node, start); range.setEnd(node, at);
    const y = Math.round(range.getClientRects()[0].top);
    if (top === null || Math.abs(y - top) > 4) { lines.push([]); top = y; }
    lines[lines.length - 1].push(word);
  }
  return lines;
}"""


def misfits(page: Any) -> list[str]:
    """What does not fit the window on this page now (empty when everything does)."""
    return list(page.evaluate(FITS_JS))


def lonely_words(page: Any, element: str = "title") -> list[str]:
    """Lines of a single word in ``element`` where the text has four words or more."""
    lines: list[list[str]] = page.evaluate(LINES_JS, element)
    if sum(len(line) for line in lines) < 4:
        return []
    return [" ".join(line) for line in lines if len(line) == 1]


def axe_violations(page: Any) -> list[str]:
    """axe-core's violations on the page as it is now: ``rule: target`` lines."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_JS)
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{item['id']}: {node['target']}" for item in result["violations"] for node in item["nodes"]
    ]
