"""The rider page in a real headless Chromium: what a rider sees in each state, at each
screen size, in each language, with axe-core; the keypad; the language buttons; the
preview. The screens come from a ``ScreenHub`` here; tests/integration/test_rider_live.py
drives the same page from the real ``kiosk run`` (a face photo, the board simulator, a
killed service).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cloud_sync.claim_code import CLAIM_MAX_DIGITS, CLAIM_MIN_DIGITS
from edge.flow import Screen
from edge.ui.preview import PreviewFrames
from edge.ui.server import MAX_STREAMS, ScreenHub, create_app, load_strings
from models.hints import Hint
from models.images import decode_image, read_image
from tests.browser import ARTIFACTS, SIZES, axe_violations, chromium, lonely_words, misfits, serve

#: one screen of each kind the flow shows, with the values it sends
CATALOGUE = [
    Screen("idle"),
    Screen("checking", detail=Hint.COME_CLOSER),
    Screen("one_at_a_time"),
    Screen("claim", tries=3, seconds=30),
    Screen("claim", detail="wrong", tries=2, seconds=30),
    Screen("claim_checking"),
    Screen("claim_cancelled"),
    Screen("claim_locked", "error"),
    Screen("no_claim", "error"),
    Screen("ejecting", slot=4),
    Screen("eject_wait", slot=4),
    Screen("take", "ok", slot=4),
    Screen("enjoy", "ok"),
    Screen("already_served"),
    Screen("not_recognised", "error"),
    Screen("not_eligible", "error"),
    Screen("no_powerbank", "error"),
    Screen("eject_failed", "error", slot=2),
    Screen("eject_unconfirmed", "error", slot=2),
    Screen("not_taken", "error", slot=3),
    Screen("returned", "ok", slot=7),
    Screen("boarded", "ok"),
    Screen("out_of_service", "error", detail="maintenance"),
]


def expected_title(screen: Screen, language: str) -> str:
    entry = load_strings(language)[screen.key]
    title = entry["title_named"] if screen.name and "title_named" in entry else entry["title"]
    values = {"name": screen.name, "slot": screen.slot, "tries": screen.tries}
    values |= {"min": CLAIM_MIN_DIGITS, "max": CLAIM_MAX_DIGITS}
    for key, value in values.items():
        title = title.replace("{" + key + "}", "" if value is None else str(value))
    return str(title)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def kiosk_page() -> Iterator[tuple[ScreenHub, str]]:
    hub = ScreenHub()
    with serve(create_app(hub, "en", ["en", "es"])) as url:
        yield hub, url


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def show(page: Any, hub: ScreenHub, screen: Screen, title: str) -> None:
    hub.publish(screen)
    try:
        page.wait_for_function(
            "([key, title]) => document.getElementById('screen').dataset.key === key"
            " && document.getElementById('title').textContent === title",
            arg=[screen.key, title],
            timeout=1000,  # the rider must see it within a second
        )
    except Exception:  # say what the rider saw instead
        seen = text(page, "#title")
        raise AssertionError(f"{screen.key}: the rider sees {seen!r}, not {title!r}") from None


def choose(page: Any, language: str) -> None:
    page.click(f"#langs button[data-lang='{language}']")
    page.wait_for_function("(lang) => document.documentElement.lang === lang", arg=language)


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_every_screen_fits_reads_right_and_passes_axe_in_both_languages(
    browser: Any, kiosk_page: tuple[ScreenHub, str], width: int, height: int
) -> None:
    hub, url = kiosk_page
    hub.publish(Screen("idle"), offline=False)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_function("() => document.getElementById('title').textContent !== ''")
    folder = ARTIFACTS / "rider-page"
    folder.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for language in ("en", "es"):
        show(page, hub, Screen("idle"), expected_title(Screen("idle"), "en"))
        choose(page, language)
        for index, screen in enumerate(CATALOGUE):
            show(page, hub, screen, expected_title(screen, language))
            where = f"{screen.key}/{screen.detail} {language} {width}x{height}"
            problems += [f"{where}: {wrong}" for wrong in misfits(page)]
            problems += [f"{where}: one-word line {w!r}" for w in lonely_words(page, "title")]
            # axe on every screen at the first size, on a sample of them at the others
            if (width, height) == SIZES[0] or index % 5 == 0:
                problems += [f"{where}: axe {v}" for v in axe_violations(page)]
            name = f"{screen.key}-{screen.detail or ''}-{language}-{width}x{height}.png"
            page.screenshot(path=str(folder / name))
    assert problems == []
    page.close()


def test_a_hint_names_what_to_do_in_the_riders_language(
    browser: Any, kiosk_page: tuple[ScreenHub, str]
) -> None:
    hub, url = kiosk_page
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.goto(url)
    for language in ("en", "es"):
        choose(page, language)
        for hint in Hint:
            hub.publish(Screen("checking", detail=hint))
            words = load_strings(language)["hint"][hint.value]
            page.wait_for_function(
                "(w) => document.getElementById('detail').textContent === w", arg=words
            )
    assert page.locator("#guide").is_visible()  # the oval to put the face in
    hub.publish(Screen("take", "ok", slot=3))
    page.wait_for_function("() => document.getElementById('screen').dataset.key === 'take'")
    assert page.locator("#guide").is_hidden()
    page.close()


def test_every_code_length_the_page_states_is_the_claims(
    browser: Any, kiosk_page: tuple[ScreenHub, str]
) -> None:
    """The claim screens and the "set a code first" screen state the code's real length
    (``CLAIM_MIN_DIGITS`` to ``CLAIM_MAX_DIGITS``), never a number of their own."""
    import re

    hub, url = kiosk_page
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.goto(url)
    lengths = {str(CLAIM_MIN_DIGITS), str(CLAIM_MAX_DIGITS)}
    for language in ("en", "es"):
        choose(page, language)
        for screen in (Screen("no_claim", "error"), Screen("claim", tries=3, seconds=30)):
            hub.publish(screen)
            page.wait_for_function(
                "(key) => document.getElementById('screen').dataset.key === key", arg=screen.key
            )
            words = text(page, "#title") + " " + text(page, "#body")
            stated = set(re.findall(r"\d+", words)) - {"3"}  # the tries left
            assert stated == lengths, f"{language} {screen.key}: {words!r}"
    choose(page, "en")
    hub.publish(Screen("idle"))
    page.close()


def test_out_of_service_hides_the_offline_note_and_refusals_name_nobody(
    browser: Any, kiosk_page: tuple[ScreenHub, str]
) -> None:
    hub, url = kiosk_page
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.goto(url)
    hub.publish(Screen("idle"), offline=True)
    page.wait_for_function("() => !document.getElementById('offline').hidden", timeout=1000)
    assert "rentals still work" in text(page, "#offline")
    show(page, hub, Screen("out_of_service", "error", detail="maintenance"), "Out of service")
    assert page.locator("#offline").is_hidden()  # never "cannot rent" beside "rentals work"
    show(page, hub, Screen("not_eligible", "error"), "Sorry, you cannot rent right now")
    assert "use the app" in text(page, "#body")
    assert text(page, "#detail") == ""
    hub.publish(Screen("idle"), offline=False)
    page.close()


def test_a_name_is_shown_only_when_the_screen_carries_one(
    browser: Any, kiosk_page: tuple[ScreenHub, str]
) -> None:
    hub, url = kiosk_page
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.goto(url)
    show(page, hub, Screen("enjoy", "ok"), "Enjoy your powerbank!")
    show(page, hub, Screen("enjoy", "ok", name="Asha"), "Enjoy, Asha!")  # greet_by_name on
    hub.publish(Screen("idle"))
    page.close()


def test_the_page_loads_nothing_from_outside(
    browser: Any, kiosk_page: tuple[ScreenHub, str]
) -> None:
    _, url = kiosk_page
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url)
    page.wait_for_function("() => document.getElementById('title').textContent !== ''")
    assert requested and all(item.startswith(url) for item in requested), requested
    page.close()


def test_the_touch_screen_does_not_zoom_select_or_open_menus(
    browser: Any, kiosk_page: tuple[ScreenHub, str]
) -> None:
    _, url = kiosk_page
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.goto(url)
    page.wait_for_function("() => document.getElementById('title').textContent !== ''")
    style = page.evaluate(
        "() => { const s = getComputedStyle(document.body);"
        " return [s.userSelect, s.touchAction, s.overscrollBehaviorY]; }"
    )
    assert style == ["none", "pan-x pan-y", "none"]
    blocked = page.evaluate(
        "() => { const e = new MouseEvent('contextmenu', {bubbles: true, cancelable: true});"
        " return !document.getElementById('title').dispatchEvent(e); }"
    )
    assert blocked
    page.close()


# -- the claim keypad ------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_the_keypad_is_big_enough_and_posts_the_code(browser: Any, width: int, height: int) -> None:
    hub = ScreenHub()
    received: list[str] = []
    cancelled: list[bool] = []
    hub.on_claim(received.append)
    hub.on_cancel(lambda: cancelled.append(True))
    with serve(create_app(hub, "en", ["en", "es"])) as url:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.wait_for_function("() => document.getElementById('title').textContent !== ''")
        assert page.locator("#keypad").is_hidden()
        hub.publish(Screen("claim", tries=3, seconds=30))
        page.wait_for_function("() => !document.getElementById('keypad').hidden", timeout=1000)
        assert text(page, "#title") == "Type your code of 4 to 6 digits"
        assert "Tries left: 3" in text(page, "#body")
        page.wait_for_function(
            "() => /^(30|29) s left$/.test(document.getElementById('left').textContent)"
        )
        boxes = page.evaluate(
            "() => [...document.querySelectorAll('#keys button')].map(b => {"
            " const r = b.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })"
        )
        assert len(boxes) == 12
        assert all(w >= 45 and h >= 45 for _, _, w, h in boxes), boxes  # 12 mm at 96 dpi
        gap = boxes[1][0] - (boxes[0][0] + boxes[0][2])
        assert gap >= 6, gap  # keys apart, not one slab
        assert misfits(page) == []
        # too few digits: said, not silently ignored
        page.click("#keys button[data-digit='1']")
        page.click("#keys button[data-digit='2']")
        page.click("#ok")
        assert text(page, "#detail") == "Type at least 4 digits."
        assert received == []
        # a correction with the backspace key, then OK
        for digit in "349":
            page.click(f"#keys button[data-digit='{digit}']")
        page.click("#back")
        assert text(page, "#typed") == "●●●●"  # never the digits themselves
        page.click("#ok")
        deadline = time.monotonic() + 2
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == ["1234"]
        # no more digits than a code has
        page.keyboard.type("98765432")
        assert text(page, "#typed") == "●" * CLAIM_MAX_DIGITS
        page.keyboard.press("Enter")
        deadline = time.monotonic() + 2
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == ["1234", "987654"]
        # a wrong code: in the warning colour, bold, and axe finds the contrast fine
        hub.publish(Screen("claim", detail="wrong", tries=2, seconds=30))
        page.wait_for_function("() => document.getElementById('detail').textContent !== ''")
        assert text(page, "#detail") == "That code did not match. Please try again."
        colour = page.evaluate("() => getComputedStyle(document.getElementById('detail')).color")
        assert colour == "rgb(255, 179, 71)", colour
        assert axe_violations(page) == []
        page.screenshot(path=str(ARTIFACTS / f"rider-claim-wrong-{width}x{height}.png"))
        page.click("#cancel")
        deadline = time.monotonic() + 2
        while not cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cancelled == [True]
        page.close()


def test_the_claim_endpoints_refuse_what_they_should() -> None:
    hub = ScreenHub()
    received: list[str] = []
    hub.on_claim(received.append)
    hub.on_cancel(lambda: received.append("cancel"))
    with serve(create_app(hub, "en")) as url:
        assert httpx.post(url + "/claim", json={"code": "1234"}).status_code == 409  # not asked
        assert httpx.post(url + "/claim/cancel", json={}).status_code == 409
        hub.publish(Screen("claim", tries=3))
        assert httpx.post(url + "/claim", json={"code": "12a4"}).status_code == 422
        assert httpx.post(url + "/claim", json={"code": "123"}).status_code == 422
        assert httpx.post(url + "/claim", json={"code": "1234567"}).status_code == 422
        json_type = {"Content-Type": "application/json"}
        assert httpx.post(url + "/claim", content=b"nonsense", headers=json_type).status_code == 422
        answer = httpx.post(url + "/claim", json={"code": "1234"})
        assert answer.status_code == 202 and "1234" not in answer.text
        assert httpx.post(url + "/claim/cancel", json={}).status_code == 202
    assert received == ["1234", "cancel"]


def test_a_page_elsewhere_or_a_greedy_client_cannot_claim_cancel_peek_or_crowd_the_screen(
    dev_faces: Any,
) -> None:
    """The endpoints answer the kiosk's own page only: a foreign Host (DNS rebinding) or
    Origin, a form post, an oversize or absurd body are refused before the rider's claim is
    touched; the preview shows only while the screen does; streams are capped."""
    hub = ScreenHub()
    received: list[str] = []
    hub.on_claim(received.append)
    hub.on_cancel(lambda: received.append("cancel"))
    preview = PreviewFrames(fps=10)
    preview.offer(read_image(dev_faces / "person_03" / "02.jpg"), 1.0)
    with serve(create_app(hub, "en", preview=preview)) as url:
        assert httpx.get(url + "/preview.jpg").status_code == 200  # idle: the screen shows it
        hub.publish(Screen("claim", tries=3))
        assert httpx.get(url + "/preview.jpg").status_code == 204  # a rider typing a code
        claim = url + "/claim"
        rebound = {"Host": "evil.example:8080"}
        assert httpx.post(claim, json={"code": "1234"}, headers=rebound).status_code == 421
        assert httpx.get(url + "/state", headers=rebound).status_code == 421
        assert httpx.get(url + "/preview.jpg", headers=rebound).status_code == 421
        foreign = {"Origin": "http://evil.example"}
        assert httpx.post(claim, json={"code": "1234"}, headers=foreign).status_code == 403
        assert httpx.post(url + "/claim/cancel", json={}, headers=foreign).status_code == 403
        form = {"Content-Type": "text/plain"}
        assert httpx.post(claim, content=b'{"code": "1234"}', headers=form).status_code == 415
        json_type = {"Content-Type": "application/json"}
        big = b'{"code": "1234", "pad": "' + b"x" * 5000 + b'"}'
        assert httpx.post(claim, content=big, headers=json_type).status_code == 413
        deep = b"[" * 1020  # nested past the parser's recursion limit, within the size
        assert httpx.post(claim, content=deep, headers=json_type).status_code == 422
        assert received == []  # none of them reached the rider's claim
        own = {"Origin": url.rstrip("/")}
        assert httpx.post(claim, json={"code": "1234"}, headers=own).status_code == 202
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(httpx.Client(timeout=5))
            opened = [
                stack.enter_context(client.stream("GET", url + "/events"))
                for _ in range(MAX_STREAMS)
            ]
            assert all(each.status_code == 200 for each in opened)
            reading = [each.iter_lines() for each in opened]  # kept: dropping one closes it
            assert all(next(lines) == "retry: 1000" for lines in reading)  # each one started
            assert httpx.get(url + "/events", timeout=5).status_code == 503
    assert received == ["1234"]


# -- languages and the preview ------------------------------------------------------------------


def test_riders_choose_their_language_and_the_next_rider_starts_in_the_kiosks(
    browser: Any,
) -> None:
    hub = ScreenHub()
    with serve(create_app(hub, "en", ["en", "es"], language_reset_s=2)) as url:
        choose_and_return(browser, hub, url)


def choose_and_return(browser: Any, hub: ScreenHub, url: str) -> None:
    page = browser.new_page(viewport={"width": 480, "height": 800})
    page.goto(url)
    page.wait_for_function(
        "() => document.getElementById('title').textContent === 'Rent a powerbank'"
    )
    # the buttons appear once every offered language's words are there, each in its own
    page.wait_for_function("() => !document.getElementById('langs').hidden")
    assert page.locator("#langs button").all_inner_texts() == ["English", "Español"]
    assert page.get_attribute("#langs button[data-lang='en']", "aria-pressed") == "true"
    choose(page, "es")
    assert text(page, "#title") == "Alquila una batería"
    assert page.get_attribute("#langs button[data-lang='es']", "aria-pressed") == "true"
    show(page, hub, Screen("returned", "ok", slot=2), "Gracias, batería devuelta en la ranura 2")
    show(page, hub, Screen("idle"), "Alquila una batería")  # the rider may still be there
    page.wait_for_function(  # nobody for a while: the next rider starts in English
        "() => document.getElementById('title').textContent === 'Rent a powerbank'", timeout=5000
    )
    assert page.get_attribute("html", "lang") == "en"
    page.close()


def test_one_language_shows_no_buttons(browser: Any) -> None:
    hub = ScreenHub()
    with serve(create_app(hub, "es", ["es"])) as url:
        page = browser.new_page(viewport={"width": 800, "height": 480})
        page.goto(url)
        page.wait_for_function(
            "() => document.getElementById('title').textContent === 'Alquila una batería'"
        )
        assert page.get_attribute("html", "lang") == "es"
        assert page.locator("#langs").is_hidden()
        assert httpx.get(url + "/strings?lang=en").status_code == 404  # not offered here
        page.close()


def test_the_preview_shows_the_camera_mirrored_in_the_oval(browser: Any, dev_faces: Any) -> None:
    hub = ScreenHub()
    preview = PreviewFrames(fps=10)
    photo = read_image(dev_faces / "person_03" / "02.jpg")
    with serve(create_app(hub, "en", preview=preview)) as url:
        assert httpx.get(url + "/preview.jpg").status_code == 204  # no frame yet
        preview.offer(photo, 1.0)
        answer = httpx.get(url + "/preview.jpg")
        assert answer.headers["content-type"] == "image/jpeg"
        assert answer.headers["cache-control"] == "no-store"
        picture = decode_image(answer.content, "preview.jpg")
        assert picture.shape[1] == 320  # low resolution only
        page = browser.new_page(viewport={"width": 800, "height": 480})
        page.goto(url)
        page.wait_for_function(
            "() => { const i = document.getElementById('preview');"
            " return !i.hidden && i.complete && i.naturalWidth > 0; }"
        )
        mirrored = page.evaluate(
            "() => getComputedStyle(document.getElementById('preview')).transform"
        )
        assert mirrored.startswith("matrix(-1")
        assert axe_violations(page) == []
        page.screenshot(path=str(ARTIFACTS / "rider-preview-800x480.png"))
        page.close()
    with serve(create_app(ScreenHub(), "en")) as url:
        assert httpx.get(url + "/preview.jpg").status_code == 404  # off by default
