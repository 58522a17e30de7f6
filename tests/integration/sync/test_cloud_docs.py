"""The cloud API's /docs (Swagger UI) and /redoc pages work without internet.

A real ``kiosk-cloud`` app on uvicorn, opened in Chromium with every request that leaves
the machine aborted (as on a network with no route out): the pages must still list the
API's operations, and must not even try to reach anything but the server itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import ARTIFACTS, chromium
from tests.integration.sync.cloudkit import Cloud, sqlite_cloud

pytestmark = pytest.mark.service

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def docs_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with sqlite_cloud(tmp_path_factory.mktemp("docs") / "cloud.sqlite") as running:
        yield running


def offline_page(browser: Any, outside: list[str]) -> Any:
    """A page whose requests to anywhere but this machine fail, and are noted in ``outside``."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def route(route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        local = parts.scheme in {"http", "https"} and parts.hostname in LOCAL_HOSTS
        if local or parts.scheme in {"data", "blob"}:
            route.continue_()
        else:
            outside.append(f"{route.request.resource_type} {url}")
            route.abort("internetdisconnected")

    page.route("**/*", route)
    return page


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS) / name), full_page=False)


def test_swagger_ui_lists_the_operations_offline(docs_cloud: Cloud) -> None:
    outside: list[str] = []
    with chromium() as browser:
        page = offline_page(browser, outside)
        page.goto(docs_cloud.url + "/docs", wait_until="load")
        paths = page.locator(".opblock-summary-path")
        paths.first.wait_for(state="visible", timeout=15_000)
        shown = {text.strip() for text in paths.all_inner_texts()}
        shot(page, "cloud-docs-offline.png")
    assert "/v1/events:batch" in {p.replace("\u200b", "") for p in shown}, shown
    assert "/v1/roster" in {p.replace("\u200b", "") for p in shown}, shown
    assert outside == []


def test_redoc_lists_the_operations_offline(docs_cloud: Cloud) -> None:
    outside: list[str] = []
    with chromium() as browser:
        page = offline_page(browser, outside)
        page.goto(docs_cloud.url + "/redoc", wait_until="load")
        page.get_by_text("events:batch").first.wait_for(state="attached", timeout=15_000)
        shot(page, "cloud-redoc-offline.png")
    # ReDoc's own "API docs by Redocly" footer links its logo from the vendor; offline that
    # one decorative image is missing, nothing the page needs.
    assert [url for url in outside if not url.startswith("image ")] == []
