"""Fixtures of the sync tests: the cloud API on SQLite and on PostgreSQL (see cloudkit), and
the same serving the roster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cloud_sync.server.roster_keys import RosterKeyFiles
from tests.integration.sync.cloudkit import Cloud, empty_database, fresh_pg_database, start_cloud


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def pg_url(pg_session_url: str) -> str:
    """The session's PostgreSQL database, emptied (creating one per test is slow)."""
    empty_database(pg_session_url)
    return pg_session_url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    """One server per test module and database kind (starting one per test is slow)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('cloud') / 'cloud.sqlite'}"
    else:
        url = request.getfixturevalue("pg_session_url")
    running = start_cloud(url)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def cloud(module_cloud: Cloud) -> Cloud:
    """A running cloud API with an empty database, on SQLite and on PostgreSQL."""
    empty_database(module_cloud.settings.database_url)
    module_cloud.service().forget_keys()
    return module_cloud


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def roster_module_cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    """A cloud that serves the roster, one per test module and database kind; on PostgreSQL
    its key files are made first, as an operator does with `kiosk-cloud keys init` (SQLite
    makes its own beside the file). A test module may set cloud settings of its own in a
    module-level ``CLOUD_SETTINGS`` dict (an app token, a sweep turned off)."""
    folder = tmp_path_factory.mktemp("roster-cloud")
    extra: dict[str, Any] = dict(getattr(request.module, "CLOUD_SETTINGS", {}))
    if request.param == "sqlite":
        running = start_cloud(f"sqlite:///{folder / 'cloud.sqlite'}", **extra)
    else:
        keys = RosterKeyFiles(folder / "roster-ed25519.pem", folder / "roster-data.key")
        keys.init()
        running = start_cloud(
            request.getfixturevalue("pg_session_url"),
            roster_key_file=keys.signing_path,
            roster_data_key_file=keys.data_path,
            **extra,
        )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def roster_cloud(roster_module_cloud: Cloud) -> Cloud:
    """A running cloud that serves the roster, with an empty database, on both stores."""
    empty_database(roster_module_cloud.settings.database_url)
    roster_module_cloud.service().forget_keys()
    return roster_module_cloud
