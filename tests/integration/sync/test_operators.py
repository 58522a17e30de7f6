"""Operator accounts on a real API (SQLite and PostgreSQL): each role does what it may and
gets a 403 naming the role otherwise, with nothing changed; the bootstrap token retires once
an admin exists; every action is in the audit log under the operator's name and request id;
wrong tokens lock the source out whoever's token comes next, a wrong role never does; bad
input is a clear 4xx. A walk over the app's routes checks that every admin route names
the role it needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from cloud_sync.server.app import create_app
from cloud_sync.server.config import CloudSettings
from cloud_sync.server.deps import Needs
from tests.helpers import run_cli
from tests.integration.sync.cloudkit import ADMIN_TOKEN, Cloud, at_once, start_cloud
from tests.integration.sync.test_roster_sync import add_rider


@pytest.fixture
def cloud(roster_cloud: Cloud) -> Cloud:
    """The roster-serving cloud of conftest, empty, on SQLite and PostgreSQL."""
    return roster_cloud


def as_(cloud: Cloud, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return cloud.http.request(method, cloud.url + path, headers=headers, **kwargs)


def add_operator(cloud: Cloud, token: str, name: str, role: str) -> str:
    answer = as_(cloud, token, "POST", "/v1/admin/operators", json={"name": name, "role": role})
    assert answer.status_code == 201, answer.text
    assert answer.json()["role"] == role
    made: str = answer.json()["token"]
    return made


def refused(answer: httpx.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == code
    reason: str = answer.json()["reason"]
    return reason


def test_each_role_does_what_it_may_and_nothing_else(cloud: Cloud) -> None:
    add_rider(cloud, "ann", 1)  # by the bootstrap token: no admin operator yet
    ada = add_operator(cloud, ADMIN_TOKEN, "ada", "admin")
    sue = add_operator(cloud, ada, "sue", "support")
    ian = add_operator(cloud, ada, "ian", "installer")
    reason = refused(as_(cloud, ADMIN_TOKEN, "GET", "/v1/admin/riders"), 403, "bootstrap_retired")
    assert "operator" in reason

    # support reads everything and may block or unblock; nothing more
    for path in ("/v1/admin/riders", "/v1/admin/rentals", "/v1/admin/powerbanks",
                 "/v1/admin/fleet", "/v1/admin/kiosks", "/v1/admin/riders/ann/consent"):  # fmt: skip
        assert as_(cloud, sue, "GET", path).status_code == 200, path
    blocked = as_(cloud, sue, "PATCH", "/v1/admin/riders/ann", json={"may_rent": False})
    assert blocked.status_code == 200 and blocked.json()["may_rent"] is False
    version = as_(cloud, ada, "GET", "/v1/admin/roster").json()["version"]
    for method, path, body in (
        ("PATCH", "/v1/admin/riders/ann", {"max_open_rentals": 5}),
        ("PATCH", "/v1/admin/riders/ann", {"may_rent": True, "boarding_allowed": False}),
        ("DELETE", "/v1/admin/riders/ann", None),
        ("POST", "/v1/admin/riders/ann/consent:withdraw", None),
        ("POST", "/v1/admin/provisioning-tokens", {}),
        ("POST", "/v1/admin/roster:rotate-key", None),
        ("POST", "/v1/admin/operators", {"name": "eve", "role": "admin"}),
        ("GET", "/v1/admin/audit", None),
    ):
        answer = as_(cloud, sue, method, path, json=body)
        assert "admin role" in refused(answer, 403, "role_required"), (method, path)
    # the installer issues provisioning tokens and nothing else
    issued = as_(cloud, ian, "POST", "/v1/admin/provisioning-tokens", json={"kiosk_id": "kiosk-n"})
    assert issued.status_code == 201 and issued.json()["token"]
    for method, path in (("GET", "/v1/admin/riders"), ("GET", "/v1/admin/kiosks")):
        assert "support or admin" in refused(as_(cloud, ian, method, path), 403, "role_required")
    refused(as_(cloud, ian, "DELETE", "/v1/admin/riders/ann"), 403, "role_required")
    # nothing the refusals touched changed
    rider = as_(cloud, ada, "GET", "/v1/admin/riders/ann").json()["rider"]
    assert (rider["may_rent"], rider["max_open_rentals"], rider["boarding_allowed"]) == (
        False,
        1,
        True,
    )
    assert as_(cloud, ada, "GET", "/v1/admin/roster").json()["version"] == version
    names = [o["name"] for o in as_(cloud, ada, "GET", "/v1/admin/operators").json()]
    assert names == ["ada", "ian", "sue"]

    # the admin does the rest; every change is in the audit log with its request id
    unblocked = as_(cloud, ada, "PATCH", "/v1/admin/riders/ann", json={"max_open_rentals": 2})
    deleted = as_(cloud, ada, "DELETE", "/v1/admin/riders/ann")
    assert unblocked.status_code == deleted.status_code == 200
    log = as_(cloud, ada, "GET", "/v1/admin/audit").json()
    assert [(e["actor"], e["action"], e["target"]) for e in log] == [
        ("bootstrap", "consent_text.add", "test-1"),
        ("bootstrap", "rider.add", "ann"),
        ("bootstrap", "operator.add", "ada"),
        ("ada", "operator.add", "sue"),
        ("ada", "operator.add", "ian"),
        ("sue", "rider.change", "ann"),
        ("ian", "token.issue", "kiosk-n"),
        ("ada", "rider.change", "ann"),
        ("ada", "rider.delete", "ann"),
    ]
    assert log[5]["detail"] == {"may_rent": False}
    assert log[-1]["request_id"] == deleted.headers["x-request-id"]
    assert "token" not in json.dumps(log[2:5]).replace("token.issue", "")
    only_sue = as_(cloud, ada, "GET", "/v1/admin/audit", params={"operator": "sue"}).json()
    assert [e["action"] for e in only_sue] == ["rider.change"]
    since = as_(cloud, ada, "GET", "/v1/admin/audit", params={"since": log[-2]["at"]}).json()
    assert [e["action"] for e in since] == ["rider.change", "rider.delete"]


def test_bad_operator_input_is_a_clear_4xx_and_changes_nothing(cloud: Cloud) -> None:
    ada = add_operator(cloud, ADMIN_TOKEN, "ada", "admin")
    for body, status, code in (
        ({"name": "bob", "role": "boss"}, 422, "unknown_role"),
        ({"name": "ada", "role": "support"}, 409, "operator_exists"),
        ({"name": "Bob Smith", "role": "support"}, 422, "bad_operator_name"),
        ({"name": "bootstrap", "role": "admin"}, 422, "bad_operator_name"),
        ({"name": "app", "role": "support"}, 422, "bad_operator_name"),
    ):
        refused(as_(cloud, ada, "POST", "/v1/admin/operators", json=body), status, code)
    refused(as_(cloud, ada, "DELETE", "/v1/admin/operators/nobody"), 404, "unknown_operator")
    assert "another admin" in refused(
        as_(cloud, ada, "DELETE", "/v1/admin/operators/ada"), 409, "last_admin"
    )
    sue = add_operator(cloud, ada, "sue", "support")
    assert as_(cloud, sue, "GET", "/v1/admin/riders").status_code == 200
    revoked = as_(cloud, ada, "DELETE", "/v1/admin/operators/sue")
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "ada"
    refused(as_(cloud, sue, "GET", "/v1/admin/riders"), 401, "operator_revoked")
    refused(as_(cloud, ada, "DELETE", "/v1/admin/operators/sue"), 409, "operator_revoked")
    refused(
        as_(cloud, ada, "POST", "/v1/admin/operators", json={"name": "sue", "role": "support"}),
        409,
        "operator_exists",
    )
    listed = as_(cloud, ada, "GET", "/v1/admin/operators").json()
    assert [(o["name"], o["role"], o["revoked_by"]) for o in listed] == [
        ("ada", "admin", None),
        ("sue", "support", "ada"),
    ]
    actions = [e["action"] for e in as_(cloud, ada, "GET", "/v1/admin/audit").json()]
    assert actions == ["operator.add", "operator.add", "operator.revoke"]


def test_two_admins_revoking_each_other_at_once_leave_one_admin(cloud: Cloud) -> None:
    survivor = ("s", add_operator(cloud, ADMIN_TOKEN, "s", "admin"))
    for round_ in range(8):
        p, q = (f"p{round_}", f"q{round_}")
        pair = [(p, add_operator(cloud, survivor[1], p, "admin")),
                (q, add_operator(cloud, survivor[1], q, "admin"))]  # fmt: skip
        gone = as_(cloud, survivor[1], "DELETE", f"/v1/admin/operators/{survivor[0]}")
        assert gone.status_code == 200, gone.text  # the pair are the only admins now
        answers = at_once(
            cloud,
            [
                (pair[0][1], "DELETE", f"/v1/admin/operators/{q}", None),
                (pair[1][1], "DELETE", f"/v1/admin/operators/{p}", None),
            ],
        )
        assert sorted(a.status_code for a in answers) in ([200, 401], [200, 409]), [
            a.text for a in answers
        ]
        loser = next(a for a in answers if a.status_code != 200).json()["error"]
        assert loser in ("last_admin", "operator_revoked")
        survivor = pair[0] if answers[0].status_code == 200 else pair[1]
        listed = as_(cloud, survivor[1], "GET", "/v1/admin/operators").json()
        assert [o["name"] for o in listed if o["revoked_at"] is None] == [survivor[0]]
        # the bootstrap token stays retired
        refused(as_(cloud, ADMIN_TOKEN, "GET", "/v1/admin/kiosks"), 403, "bootstrap_retired")


def test_wrong_tokens_lock_the_source_out_for_every_operator_and_a_wrong_role_never_does(
    cloud: Cloud,
) -> None:
    ada = add_operator(cloud, ADMIN_TOKEN, "ada", "admin")
    ian = add_operator(cloud, ada, "ian", "installer")
    limit = cloud.settings.auth_max_failures
    for _ in range(limit + 5):  # the right token, the wrong role: 403 each time, no lockout
        refused(as_(cloud, ian, "GET", "/v1/admin/riders"), 403, "role_required")
    assert as_(cloud, ian, "POST", "/v1/admin/provisioning-tokens", json={}).status_code == 201

    here = {"X-Forwarded-For": "192.0.2.44"}
    guesses = [
        as_(cloud, f"kop_guess{n}", "GET", "/v1/admin/kiosks", headers=here).status_code
        for n in range(limit)
    ]
    assert guesses == [401] * limit
    for token in (ada, ian):  # right tokens, from the locked-out source
        refused(as_(cloud, token, "GET", "/v1/admin/kiosks", headers=here), 429, "locked_out")
    elsewhere = {"X-Forwarded-For": "198.51.100.9"}
    assert as_(cloud, ada, "GET", "/v1/admin/kiosks", headers=elsewhere).status_code == 200


def test_every_admin_route_names_the_role_it_needs(tmp_path: Path) -> None:
    app = create_app(CloudSettings(database_url=f"sqlite:///{tmp_path / 'c.sqlite'}"))
    roles: dict[tuple[str, str], list[str]] = {}
    for route in _routes(app.routes):
        found: list[str] = [
            dep.call.role for dep in _dependencies(route.dependant) if isinstance(dep.call, Needs)
        ]
        for method in route.methods or ():
            roles[(method, route.path)] = found
    admin = {key: found for key, found in roles.items() if key[1].startswith("/v1/admin/")}
    assert len(admin) >= 25
    assert {key: found for key, found in admin.items() if len(found) != 1} == {}
    outside = {key for key, found in roles.items() if found and key not in admin}
    assert outside == set()
    assert admin[("POST", "/v1/admin/provisioning-tokens")] == ["installer"]
    assert admin[("PATCH", "/v1/admin/riders/{person_id}")] == ["support"]
    assert admin[("DELETE", "/v1/admin/riders/{person_id}")] == ["admin"]
    assert admin[("GET", "/v1/admin/audit")] == ["admin"]


def _routes(routes: list[Any]) -> list[APIRoute]:
    """Every API route, those of included routers too (FastAPI keeps them apart)."""
    found: list[APIRoute] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            found += _routes(included.routes)
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


def _dependencies(dependant: Any) -> list[Any]:
    found = list(dependant.dependencies)
    for sub in dependant.dependencies:
        found += _dependencies(sub)
    return found


def test_operators_and_audit_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    running = start_cloud(url)
    try:

        def cloud_cli(*args: str) -> tuple[int, str, str]:
            done = run_cli(*args, "--database-url", url, program="kiosk-cloud")
            return done.returncode, done.stdout, done.stderr

        code, token, err = cloud_cli("operators", "add", "ada", "--role", "admin")
        assert code == 0 and token.startswith("kop_") and "shown only now" in err
        token = token.strip()
        refused(as_(running, ADMIN_TOKEN, "GET", "/v1/admin/kiosks"), 403, "bootstrap_retired")
        assert as_(running, token, "GET", "/v1/admin/kiosks").status_code == 200
        code, _, err = cloud_cli("operators", "add", "bob", "--role", "boss")
        assert code == 4 and "unknown role 'boss'" in err
        assert add_operator(running, token, "sue", "support")
        code, out, _ = cloud_cli("operators", "list")
        assert [json.loads(line)["name"] for line in out.splitlines()] == ["ada", "sue"]
        assert "kop_" not in out
        code, out, err = cloud_cli("operators", "revoke", "sue")
        assert code == 0, err
        code, out, _ = cloud_cli("audit", "--json", "--operator", "ada")
        assert [json.loads(line)["action"] for line in out.splitlines()] == ["operator.add"]
        code, out, _ = cloud_cli("audit")
        lines = out.splitlines()
        assert len(lines) == 3 and "operator.revoke" in lines[-1] and "sue" in lines[-1]
    finally:
        running.stop()
