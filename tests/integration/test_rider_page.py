"""The rider page in a real headless Chromium: what a rider sees in each state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
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


@pytest.mark.parametrize(("width", "height"), [(800, 480), (1920, 1080)])
def test_the_claim_keypad_posts_the_typed_code(browser: Any, width: int, height: int) -> None:
    hub = ScreenHub()
    received: list[str] = []
    hub.on_claim(received.append)
    with serve(create_app(hub, "en")) as url:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.wait_for_function("() => document.getElementById('title').textContent !== ''")
        assert page.locator("#keypad").is_hidden()
        hub.publish(Screen("claim", tries=3))
        page.wait_for_function("() => !document.getElementById('keypad').hidden", timeout=1000)
        assert text(page, "#title") == "Type your 4-digit code"
        assert text(page, "#body") == "The code you chose in the app. Tries left: 3."
        fits = page.evaluate(
            "() => { const k = document.getElementById('keypad').getBoundingClientRect();"
            " const t = document.getElementById('title').getBoundingClientRect();"
            " return document.documentElement.scrollHeight <= innerHeight && k.bottom <= innerHeight"
            " && k.right <= innerWidth && t.right <= k.left + 1 && k.top >= 0; }"
        )
        assert fits, f"the keypad does not fit {width}x{height}"
        page.screenshot(path=str(ARTIFACTS / f"rider-claim-{width}x{height}.png"))
        for digit in "12":
            page.click(f"#keys button[data-digit='{digit}']")
        page.keyboard.type("34")
        assert text(page, "#typed") == "●●●●"  # never the digits themselves
        page.click("#ok")
        deadline = time.monotonic() + 2
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == ["1234"]
        assert text(page, "#typed") == ""
        # the keyboard alone: digits, a correction, Enter
        page.keyboard.type("5679")
        page.keyboard.press("Backspace")
        page.keyboard.type("8")
        page.keyboard.press("Enter")
        deadline = time.monotonic() + 2
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == ["1234", "5678"]
        hub.publish(Screen("claim", detail="wrong", tries=2))
        page.wait_for_function(
            "() => document.getElementById('body').textContent.includes('2')", timeout=1000
        )
        assert text(page, "#detail") == "That code did not match. Please try again."
        assert page.get_attribute("#title", "aria-live") == "assertive"
        for screen, title in [
            (Screen("claim_locked", "error"), "Too many wrong codes"),
            (Screen("no_claim", "error"), "Please set a code in the app first"),
        ]:
            hub.publish(screen)
            page.wait_for_function(
                "(title) => document.getElementById('title').textContent === title",
                arg=title,
                timeout=1000,
            )
            assert page.locator("#keypad").is_hidden()
        assert "app" in text(page, "#body")
        page.close()


def test_the_claim_endpoint_refuses_what_it_should() -> None:
    hub = ScreenHub()
    received: list[str] = []
    hub.on_claim(received.append)
    with serve(create_app(hub, "en")) as url:
        assert httpx.post(url + "/claim", json={"code": "1234"}).status_code == 409  # not asked
        hub.publish(Screen("claim", tries=3))
        assert httpx.post(url + "/claim", json={"code": "12a4"}).status_code == 422
        assert httpx.post(url + "/claim", json={"code": "123"}).status_code == 422
        assert httpx.post(url + "/claim", content=b"nonsense").status_code == 422
        answer = httpx.post(url + "/claim", json={"code": "1234"})
        assert answer.status_code == 202 and "1234" not in answer.text
    assert received == ["1234"]
