"""The rider page in a real headless Chromium: what a rider sees in each state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from edge.flow import Screen
from edge.ui.server import ScreenHub, create_app
from tests.browser import ARTIFACTS, chromium, serve

STATES = [
    (Screen("idle"), "Rent a powerbank", "Look at the camera to start.", ""),
    (
        Screen("checking", detail="come_closer"),
        "Hold still…",
        "Looking for you.",
        "Come a little closer.",
    ),
    (
        Screen("take", "ok", name="Asha", slot=4),
        "Hi Asha, take your powerbank from slot 4",
        "Pull it out gently.",
        "",
    ),
    (
        Screen("not_recognised", "error", detail="unknown"),
        "Sorry, we could not recognise you",
        "Ask staff or use the app.",
        "",
    ),
    (
        Screen("not_eligible", "error", name="Bo", detail="open_rental"),
        "Sorry Bo, you cannot rent right now",
        "Ask staff or use the app.",
        "You already have a powerbank: return it first.",
    ),
    (
        Screen("returned", "ok", slot=7),
        "Thanks, powerbank returned to slot 7",
        "Your rental is closed.",
        "",
    ),
    (
        Screen("eject_failed", "error", slot=2),
        "Sorry, slot 2 is stuck",
        "You have not been charged. Please try again or ask staff.",
        "",
    ),
    (
        Screen("out_of_service", "error", detail="maintenance"),
        "Out of service",
        "This kiosk cannot rent right now. Returns still work.",
        "A technician is looking after this kiosk.",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def kiosk_page(browser: Any) -> Iterator[tuple[ScreenHub, str]]:
    hub = ScreenHub()
    with serve(create_app(hub, "en")) as url:
        yield hub, url


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


@pytest.mark.parametrize(("width", "height"), [(800, 480), (1920, 1080)])
def test_each_state_reads_right_and_fits_the_screen(
    browser: Any, kiosk_page: tuple[ScreenHub, str], width: int, height: int
) -> None:
    hub, url = kiosk_page
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    ARTIFACTS.mkdir(exist_ok=True)
    for screen, title, body, detail in STATES:
        hub.publish(screen)
        page.wait_for_function(
            "([key, title]) => document.getElementById('screen').dataset.key === key"
            " && document.getElementById('title').textContent === title",
            arg=[screen.key, title],
            timeout=1000,  # the rider must see it within a second
        )
        assert text(page, "#body") == body
        assert text(page, "#detail") == detail
        fits = page.evaluate(
            "() => { const r = document.getElementById('title').getBoundingClientRect();"
            " const b = document.getElementById('body').getBoundingClientRect();"
            " return document.documentElement.scrollHeight <= innerHeight && r.right <= innerWidth"
            " && b.bottom <= innerHeight && r.top >= 0; }"
        )
        assert fits, f"{screen.key} does not fit {width}x{height}"
        page.screenshot(path=str(ARTIFACTS / f"rider-{screen.key}-{width}x{height}.png"))
    assert page.get_attribute("#title", "aria-live") == "assertive"
    page.close()


def test_offline_indicator_and_language(browser: Any) -> None:
    hub = ScreenHub()
    with serve(create_app(hub, "es")) as url:
        page = browser.new_page(viewport={"width": 800, "height": 480})
        page.goto(url)
        page.wait_for_function(
            "() => document.getElementById('title').textContent === 'Alquila una batería'"
        )
        assert page.get_attribute("html", "lang") == "es"
        assert page.locator("#offline").is_hidden()
        hub.publish(offline=True)
        page.wait_for_function("() => !document.getElementById('offline').hidden", timeout=1000)
        assert "Sin conexión" in text(page, "#offline")
        page.close()


def test_page_says_when_it_lost_the_kiosk(browser: Any) -> None:
    hub = ScreenHub()
    with serve(create_app(hub, "en")) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function(
            "() => document.getElementById('title').textContent === 'Rent a powerbank'"
        )
    page.wait_for_function("() => !document.getElementById('disconnected').hidden", timeout=10000)
    assert text(page, "#disconnected") == "Reconnecting to the kiosk…"
    page.close()


def test_page_loads_nothing_from_outside(browser: Any, kiosk_page: tuple[ScreenHub, str]) -> None:
    _, url = kiosk_page
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url)
    page.wait_for_function("() => document.getElementById('title').textContent !== ''")
    assert requested and all(item.startswith(url) for item in requested), requested
    page.close()
