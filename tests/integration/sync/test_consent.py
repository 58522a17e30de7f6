"""Riders' consent, with a real API (SQLite and PostgreSQL), real kiosks pulling deltas and
the real commands: enrolment needs a consent record naming a known consent text (else a
clear 422 and nothing stored), the record is shown, and withdrawing it deletes the rider
everywhere while the withdrawal is kept. ``kiosk enroll`` needs ``--consent`` too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import CONSENT_ARGS, consent_text, run_cli
from tests.integration.sync.cloudkit import (
    ADMIN_TOKEN,
    CONSENT,
    CONSENT_TEXT,
    Cloud,
    at_once,
)
from tests.integration.sync.test_roster_sync import add_rider, make_roster_kiosk
from tests.vault_helpers import MODEL, template


@pytest.fixture
def cloud(roster_cloud: Cloud) -> Cloud:
    """The roster-serving cloud of conftest, empty, on SQLite and PostgreSQL."""
    return roster_cloud


def rider_body(person_id: str, **consent: object) -> dict[str, object]:
    return {
        "person_id": person_id,
        "templates": [{"model": MODEL, "vector": template(1).tolist()}],
        "consent": {**CONSENT, **consent},
    }


def test_enrolment_needs_a_known_consent_and_the_record_is_shown(cloud: Cloud) -> None:
    no_text = cloud.admin("POST", "/v1/admin/riders", json=rider_body("ann"))
    assert no_text.status_code == 422 and no_text.json()["error"] == "unknown_consent_version"
    assert "'test-1' is not known" in no_text.json()["reason"]
    cloud.accept_consent_text()
    without = rider_body("ann")
    del without["consent"]
    for body, field in (
        (without, "body.consent"),
        (rider_body("ann", version=""), "body.consent.version"),
        (rider_body("ann", channel="phone"), "body.consent.channel"),
        (rider_body("ann", given_at="2026-01-01 00:00"), "body.consent.given_at"),
        (rider_body("ann", taken_by=""), "body.consent.taken_by"),
    ):
        answer = cloud.admin("POST", "/v1/admin/riders", json=body)
        assert answer.status_code == 422 and field in answer.json()["reason"], answer.text
    future = cloud.admin(
        "POST", "/v1/admin/riders", json=rider_body("ann", given_at="2999-01-01T00:00:00Z")
    )
    assert future.json()["error"] == "consent_in_future"
    unknown = cloud.admin("POST", "/v1/admin/riders", json=rider_body("ann", version="v9"))
    assert unknown.status_code == 422 and unknown.json()["error"] == "unknown_consent_version"
    # nothing was stored by any of them: no rider, no roster version, no record
    assert cloud.admin("GET", "/v1/admin/riders").json() == []
    assert cloud.admin("GET", "/v1/admin/roster").json()["version"] == 0
    assert cloud.admin("GET", "/v1/admin/riders/ann/consent").json()["error"] == "no_consent"

    given = rider_body("ann", given_at="2026-03-04T05:06:07+01:00", channel="app", taken_by="app")
    added = cloud.admin("POST", "/v1/admin/riders", json=given)
    assert added.status_code == 201, added.text
    shown = cloud.admin("GET", "/v1/admin/riders/ann/consent").json()
    digest = hashlib.sha256(CONSENT_TEXT["text"].encode()).hexdigest()
    assert shown["text_version"] == "test-1" and shown["text_sha256"] == digest
    assert shown["given_at"] == "2026-03-04T04:06:07.000000Z"
    assert (shown["channel"], shown["taken_by"], shown["recorded_by"]) == (
        "app",
        "app",
        "bootstrap",
    )
    assert shown["withdrawn_at"] is None and "vector" not in json.dumps(shown)

    # a consent text never changes; the same one again is no change
    changed = {"version": "test-1", "text": "Something else"}
    refused = cloud.admin("POST", "/v1/admin/consent-texts", json=changed)
    assert refused.status_code == 409 and refused.json()["error"] == "consent_text_exists"
    same = cloud.admin("POST", "/v1/admin/consent-texts", json=CONSENT_TEXT)
    assert same.status_code == 200 and same.json()["sha256"] == digest
    assert [t["version"] for t in cloud.admin("GET", "/v1/admin/consent-texts").json()] == [
        "test-1"
    ]


def test_withdrawal_deletes_the_rider_everywhere_and_keeps_the_record(
    cloud: Cloud, tmp_path: Path
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    add_rider(cloud, "bea", 2)
    kiosk.daemon(cloud).pull_roster()
    assert kiosk.riders() == ["ann", "bea"]

    withdrawn = cloud.admin("POST", "/v1/admin/riders/ann/consent:withdraw")
    assert withdrawn.status_code == 200, withdrawn.text
    record = withdrawn.json()["consent"]
    assert record["withdrawn_by"] == "bootstrap" and record["withdrawn_at"]
    assert [r["person_id"] for r in cloud.admin("GET", "/v1/admin/riders").json()] == ["bea"]
    kiosk.daemon(cloud).pull_roster()
    assert kiosk.riders() == ["bea"]  # the kiosk dropped ann at its next pull

    kept = cloud.admin("GET", "/v1/admin/riders/ann/consent").json()
    assert kept == record and kept["text_version"] == "test-1"
    again = cloud.admin("POST", "/v1/admin/riders/ann/consent:withdraw")  # no change
    assert again.status_code == 200 and again.json()["already_deleted"] is True
    assert again.json()["consent"] == record
    assert again.json()["roster_version"] == withdrawn.json()["roster_version"]
    nobody = cloud.admin("POST", "/v1/admin/riders/nobody/consent:withdraw")
    assert nobody.status_code == 404 and nobody.json()["error"] == "unknown_rider"

    # bea is deleted by an operator, then withdraws: the record says so, logged once
    assert cloud.admin("DELETE", "/v1/admin/riders/bea").status_code == 200
    answers = at_once(
        cloud, [(ADMIN_TOKEN, "POST", "/v1/admin/riders/bea/consent:withdraw", None)] * 2
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert all(a.json()["already_deleted"] for a in answers)
    bea = cloud.admin("GET", "/v1/admin/riders/bea/consent").json()
    assert bea["withdrawn_by"] == "bootstrap" and bea["withdrawn_at"]
    actions = [
        (e["actor"], e["action"], e["target"])
        for e in cloud.admin("GET", "/v1/admin/audit").json()
        if e["target"] in ("ann", "bea")
    ]
    assert actions == [
        ("bootstrap", "rider.add", "ann"),
        ("bootstrap", "rider.add", "bea"),
        ("bootstrap", "rider.consent_withdraw", "ann"),
        ("bootstrap", "rider.delete", "bea"),
        ("bootstrap", "rider.consent_withdraw", "bea"),
    ]


def test_the_commands_require_show_and_withdraw_consent(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.sqlite'}"

    def cloud_cli(*args: str) -> tuple[int, str, str]:
        done = run_cli(*args, "--database-url", db, program="kiosk-cloud")
        return done.returncode, done.stdout, done.stderr

    templates = tmp_path / "ann.json"
    templates.write_text(json.dumps([template(1).tolist()]))
    add = ("riders", "add", "--person-id", "ann", "--templates", str(templates))
    code, _, err = cloud_cli(*add)
    assert code == 4 and "--consent VERSION" in err and "nothing was stored" in err
    code, _, err = cloud_cli(*add, *CONSENT_ARGS)
    assert code == 4 and "consent text 'test-1' is not known" in err
    assert cloud_cli("riders", "list")[1] == ""
    code, digest, err = cloud_cli(*consent_text(tmp_path))
    assert code == 0 and len(digest.strip()) == 64, err
    code, _, err = cloud_cli(*add, *CONSENT_ARGS, "--consent-channel", "kiosk")
    assert code == 0, err

    code, out, _ = cloud_cli("riders", "consent", "ann")
    shown = json.loads(out)
    assert (shown["text_version"], shown["text_sha256"]) == ("test-1", digest.strip())
    assert (shown["channel"], shown["taken_by"]) == ("kiosk", "test-operator")
    assert shown["recorded_by"].startswith("cli:") and shown["withdrawn_at"] is None
    code, out, err = cloud_cli("riders", "consent", "ann", "--withdraw")
    assert code == 0 and "deleted ann" in err
    assert json.loads(out)["withdrawn_by"].startswith("cli:")
    assert cloud_cli("riders", "list")[1] == ""
    code, out, _ = cloud_cli("audit", "--json")
    assert [json.loads(line)["action"] for line in out.splitlines()] == [
        "consent_text.add",
        "rider.add",
        "rider.consent_withdraw",
    ]


def test_kiosk_enroll_needs_consent_and_records_it(tmp_path: Path, dev_faces: Path) -> None:
    photo = sorted((dev_faces / "person_01").glob("*.jpg"))[0]
    roster = tmp_path / "roster.sqlite"
    refused = run_cli("enroll", "--roster", str(roster), "--person-id", "ann", str(photo))
    assert refused.returncode == 4 and "--consent VERSION" in refused.stderr
    assert not roster.exists()  # nothing was enrolled, not even a file made
    done = run_cli(
        "enroll", "--consent", "2026-01", "--consent-by", "desk-jo", "--roster", str(roster),
        "--person-id", "ann", str(photo),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(roster) as db:
        rows = db.execute(
            "SELECT person_id, text_version, channel, taken_by, given_at FROM consents"
        ).fetchall()
    assert [row[:4] for row in rows] == [("ann", "2026-01", "kiosk", "desk-jo")]
    assert rows[0][4].startswith("20")
