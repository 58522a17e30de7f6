"""Schema-driven fuzzing: schemathesis reads the committed ``docs/openapi.json`` and sends
what it generates from it, valid and not, to every operation of a real cloud API on
uvicorn (SQLite and PostgreSQL), as the admin for the admin routes, unsigned and signed by
a registered kiosk for the kiosk routes. Not one answer may be a 5xx.

The budget is small (a few examples per operation, no shrinking of passing runs), so the
whole file runs in well under a minute; ``test_sync_cli.py`` keeps the document true to
the code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from cloud_sync.server.openapi import COMMITTED
from cloud_sync.server.roster_keys import RosterKeyFiles
from cloud_sync.signing import new_nonce, sign_request
from tests.integration.sync.cloudkit import ADMIN_TOKEN, Cloud, empty_database, start_cloud

SCHEMA = schemathesis.openapi.from_path(str(COMMITTED))
KIOSK_ROUTES = ("/v1/events:batch", "/v1/roster", "/v1/rentals:closed")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FUZZ = settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)


class Fleet:
    """A cloud API per store, with one registered kiosk, shared by the module's tests."""

    def __init__(self, clouds: dict[str, Cloud]) -> None:
        self.clouds = clouds
        self.key = Ed25519PrivateKey.generate()
        for cloud in clouds.values():
            cloud.register("kiosk-fuzz", self.key)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pg_session_url: str) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("fuzz")
    keys = RosterKeyFiles(folder / "roster-ed25519.pem", folder / "roster-data.key")
    keys.init()  # PostgreSQL serves the roster only with key files (kiosk-cloud keys init)
    lax: dict[str, Any] = {  # fuzzing is not an attack: no lockouts, no request limits
        "kiosk_batch_limit": 1_000_000,
        "kiosk_pull_limit": 1_000_000,
        "auth_max_failures": 100_000,
        "kiosk_auth_max_failures": 100_000,
    }
    empty_database(pg_session_url)
    clouds = {
        "sqlite": start_cloud(
            f"sqlite:///{tmp_path_factory.mktemp('fuzz-sqlite') / 'c.sqlite'}", **lax
        ),
        "postgres": start_cloud(
            pg_session_url,
            roster_key_file=keys.signing_path,
            roster_data_key_file=keys.data_path,
            **lax,
        ),
    }
    try:
        yield Fleet(clouds)
    finally:
        for cloud in clouds.values():
            cloud.stop()


def _signed(fleet: Fleet, cloud: Cloud, case: Any) -> httpx.Response:
    """Send the generated request as the registered kiosk would: signed over the exact
    path, query and body bytes."""
    kwargs = case.as_transport_kwargs(base_url=cloud.url)
    body = b""
    if kwargs.get("json") is not None:
        body = json.dumps(kwargs["json"]).encode()
    elif isinstance(kwargs.get("data"), bytes | str):
        data = kwargs["data"]
        body = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    request = httpx.Request(kwargs["method"], kwargs["url"], params=kwargs.get("params"))
    target = request.url.raw_path.decode("ascii")
    headers = sign_request(
        fleet.key,
        "kiosk-fuzz",
        request.method,
        target,
        body,
        int(time.time()),
        new_nonce(),
    )
    headers["Content-Type"] = "application/json"
    return cloud.http.request(request.method, str(request.url), content=body, headers=headers)


@SCHEMA.parametrize()
@FUZZ
def test_no_generated_request_gets_a_5xx(case: Any, fleet: Fleet) -> None:
    for name, cloud in fleet.clouds.items():
        case.call_and_validate(base_url=cloud.url, headers=ADMIN, checks=[not_a_server_error])
        if case.path in KIOSK_ROUTES:
            response = _signed(fleet, cloud, case)
            assert response.status_code < 500, (name, case.path, response.text)
