"""The rider screen in a real Chromium: the "starting" page the screen opens first, and the
page lock-down shared by it and the rider page.

The waiting page is opened as kiosk-ui.service opens it (a file URL from ``kiosk screen
env``'s ``edge.ui.launch.start_url``) with the kiosk down: a calm screen with nothing to
tap. Then the real rider page starts on that port, and the browser must go there by itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import UiSection
from edge.runtime.serving import serve_in_thread
from edge.ui.launch import start_url
from edge.ui.server import ScreenHub, create_app
from tests.browser import ARTIFACTS, chromium
from tests.conftest import free_port

pytestmark = pytest.mark.service

#: What a finger (or a stray mouse) could act on.
TAPPABLE = "a[href], button, input, select, textarea, [tabindex], [onclick], [contenteditable]"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS) / name))


@pytest.mark.parametrize("size", [(800, 480), (720, 1280)], ids=["landscape", "portrait"])
def test_the_screen_waits_calmly_then_opens_the_rider_page(
    browser: Any, size: tuple[int, int]
) -> None:
    port = free_port()
    ui = UiSection(port=port)
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(start_url(ui))
    page.get_by_text("Starting up").wait_for(timeout=10_000)
    assert page.locator(TAPPABLE).count() == 0
    assert "The kiosk will be ready in a moment." in page.inner_text("body")
    page.wait_for_timeout(2500)  # it keeps asking, and keeps this page, while the kiosk is down
    assert page.url.startswith("file://") and page.get_by_text("Starting up").is_visible()
    shot(page, f"screen-starting-{size[0]}x{size[1]}.png")

    hub = ScreenHub()
    with serve_in_thread(create_app(hub, "en"), "127.0.0.1", port, "rider page") as url:
        page.wait_for_url(url, timeout=20_000)
        assert page.locator("#title").inner_text().strip() != ""
    assert errors == []


def test_the_waiting_page_speaks_the_kiosks_language(browser: Any) -> None:
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.goto(start_url(UiSection(port=free_port(), language="es")))
    page.get_by_text("Iniciando").wait_for(timeout=10_000)
    assert page.evaluate("document.documentElement.lang") == "es"


def test_a_kiosk_that_never_comes_says_it_is_out_of_service(browser: Any) -> None:
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.goto(start_url(UiSection(port=free_port())) + "&out_after=1")
    page.get_by_text("This kiosk is out of service").wait_for(timeout=10_000)
    assert page.locator(TAPPABLE).count() == 0
    shot(page, "screen-never-came.png")


def test_the_waiting_page_never_leaves_for_another_machine(browser: Any, tmp_path: Path) -> None:
    port = free_port()
    page = browser.new_page()
    page.goto(start_url(UiSection(port=port)).replace("127.0.0.1", "example.org"))
    page.get_by_text("This kiosk is out of service").wait_for(timeout=10_000)
    assert page.url.startswith("file://")


LOCKDOWN_PROBE = """() => {
  const fire = (event) => { document.body.dispatchEvent(event); return event.defaultPrevented; };
  const title = document.querySelector("h1");
  const touch = (n) => {
    const points = Array.from({length: n}, (_, i) => new Touch({
      identifier: i, target: document.body, clientX: 100 + 50 * i, clientY: 100}));
    return fire(new TouchEvent("touchmove", {bubbles: true, cancelable: true, touches: points}));
  };
  return {
    contextmenu: fire(new MouseEvent("contextmenu", {bubbles: true, cancelable: true})),
    selectstart: fire(new Event("selectstart", {bubbles: true, cancelable: true})),
    dragstart: fire(new Event("dragstart", {bubbles: true, cancelable: true})),
    ctrlWheel: fire(new WheelEvent("wheel", {bubbles: true, cancelable: true, ctrlKey: true, deltaY: -100})),
    plainWheel: fire(new WheelEvent("wheel", {bubbles: true, cancelable: true, deltaY: -100})),
    ctrlPlus: fire(new KeyboardEvent("keydown", {bubbles: true, cancelable: true, ctrlKey: true, key: "+"})),
    pinch: touch(2),
    swipe: touch(1),
    userSelect: getComputedStyle(title).userSelect,
    callout: getComputedStyle(title).webkitTouchCallout || "none",
    touchAction: getComputedStyle(document.documentElement).touchAction,
    overscroll: getComputedStyle(document.documentElement).overscrollBehaviorY,
    cursor: getComputedStyle(title).cursor,
    translate: document.documentElement.getAttribute("translate"),
  };
}"""


def assert_locked_down(page: Any) -> None:
    found = page.evaluate(LOCKDOWN_PROBE)
    assert found["contextmenu"] and found["selectstart"] and found["dragstart"], found
    assert found["ctrlWheel"] and found["ctrlPlus"] and found["pinch"], found
    assert not found["plainWheel"] and not found["swipe"], found  # scrolling still works
    assert found["userSelect"] == "none" and found["callout"] == "none", found
    assert found["touchAction"] == "pan-x pan-y", found  # no pinch or double-tap zoom
    assert found["overscroll"] == "none" and found["cursor"] == "none", found
    assert found["translate"] == "no", found


def test_the_rider_page_is_locked_down(browser: Any) -> None:
    hub = ScreenHub()
    port = free_port()
    with serve_in_thread(create_app(hub, "en"), "127.0.0.1", port, "rider page") as url:
        page = browser.new_page(viewport={"width": 800, "height": 480}, has_touch=True)
        page.goto(url)
        page.locator("#title").wait_for()
        assert_locked_down(page)
        # a long press selects nothing and opens no menu (Chromium's touch emulation)
        box = page.locator("#title").bounding_box()
        assert box is not None
        page.touchscreen.tap(box["x"] + 5, box["y"] + 5)
        assert page.evaluate("window.getSelection().toString()") == ""


def test_the_waiting_page_is_locked_down(browser: Any) -> None:
    page = browser.new_page(viewport={"width": 800, "height": 480}, has_touch=True)
    page.goto(start_url(UiSection(port=free_port())))
    page.get_by_text("Starting up").wait_for(timeout=10_000)
    assert_locked_down(page)
