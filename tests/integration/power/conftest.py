"""Fixtures of the power-loss suite: a folder on LazyFS that is proved to drop un-fsynced
writes before any test uses it, and the cloud API on a SQLite file off that folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.power.lazyfs import PowerFolder
from tests.integration.sync.cloudkit import Cloud, empty_database, sqlite_cloud


@pytest.fixture
def power() -> Iterator[PowerFolder]:
    """A mounted LazyFS folder (``power.path``); ``power.cut()`` then ``power.mount()``."""
    folder = PowerFolder()
    try:
        folder.mount()
        folder.prove_it_drops()
        yield folder
    finally:
        folder.close()


@pytest.fixture(scope="module")
def module_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with sqlite_cloud(tmp_path_factory.mktemp("cloud") / "cloud.sqlite") as running:
        yield running


@pytest.fixture
def cloud(module_cloud: Cloud) -> Cloud:
    """The cloud API (its disk is not the kiosk's: it never loses power here), emptied."""
    empty_database(module_cloud.settings.database_url)
    module_cloud.service().forget_keys()
    return module_cloud
