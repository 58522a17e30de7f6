"""``kiosk sync`` and ``kiosk-cloud`` as a technician and an operator type them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cloud_sync.outbox import Outbox
from cloud_sync.server.openapi import COMMITTED, render_openapi
from tests.conftest import free_port
from tests.helpers import run_cli
from tests.integration.sync.cloudkit import start_cloud


def kiosk_env(state: Path, cloud_url: str | None = None) -> dict[str, str]:
    env = {"KIOSK_KIOSK__ID": "kiosk-cli", "KIOSK_KIOSK__STATE_DIR": str(state)}
    if cloud_url:
        env["KIOSK_SYNC__CLOUD_URL"] = cloud_url
    return env


def test_the_committed_openapi_document_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render_openapi(), (
        "docs/openapi.json is stale: run kiosk-cloud openapi --output docs/openapi.json"
    )
    paths = json.loads(COMMITTED.read_text(encoding="utf-8"))["paths"]
    assert {"/v1/events:batch", "/v1/roster", "/healthz", "/metrics", "/v1/provision"} <= set(paths)


def test_sync_end_to_end_with_the_commands(tmp_path: Path) -> None:
    state = tmp_path / "kiosk"
    db = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    key = run_cli("sync", "key", env=kiosk_env(state))
    assert key.returncode == 0, key.stderr
    key_file = state / "kiosk-ed25519.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    registered = run_cli(
        "register-kiosk",
        "kiosk-cli",
        "--public-key",
        key.stdout.strip(),
        "--site",
        "hall",
        "--database-url",
        db,
        program="kiosk-cloud",
    )
    assert registered.returncode == 0 and "registered kiosk-cli" in registered.stdout
    listed = run_cli("kiosks", "--database-url", db, program="kiosk-cloud")
    assert json.loads(listed.stdout)["site"] == "hall"

    outbox = Outbox(state / "outbox.sqlite", "kiosk-cli")
    outbox.append("kiosk.started", version="1", mode="rental")
    outbox.append(
        "rental.started", rental_id="r1", person_id="p", slot=2, powerbank_id="pb", request_id="q"
    )
    outbox.close()
    cloud = start_cloud(db)
    try:
        sent = run_cli("sync", "now", "--json", env=kiosk_env(state, cloud.url))
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout) | {"seconds": 0} == {
            "accepted": 2,
            "duplicate": 0,
            "quarantined": 0,
            "batches": 1,
            "pending": 0,
            "error": None,
            "seconds": 0,
        }
    finally:
        cloud.stop()
    events = run_cli(
        "events", "--kiosk-id", "kiosk-cli", "--database-url", db, program="kiosk-cloud"
    )
    assert [json.loads(line)["seq"] for line in events.stdout.splitlines()] == [1, 2]
    rentals = run_cli("rentals", "--database-url", db, program="kiosk-cloud")
    assert json.loads(rentals.stdout)["rental_id"] == "r1"
    status = run_cli("sync", "status", "--json", env=kiosk_env(state, cloud.url))
    data = json.loads(status.stdout)
    assert data["pending_total"] == 0 and data["last_success_at"] and data["last_error"] is None


def test_a_wrong_cloud_url_is_a_clear_error_and_the_events_stay(tmp_path: Path) -> None:
    state = tmp_path / "kiosk"
    outbox = Outbox(state / "outbox.sqlite", "kiosk-cli")
    outbox.append("rental.returned", slot=1, powerbank_id="pb")
    outbox.close()
    cloud = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}")
    try:  # https against a plain-HTTP server: a TLS failure
        url = cloud.url.replace("http://", "https://")
        failed = run_cli("sync", "now", env=kiosk_env(state, url))
    finally:
        cloud.stop()
    assert failed.returncode == 7
    assert "events are kept" in failed.stderr
    nothing = run_cli("sync", "now", env=kiosk_env(state, f"http://127.0.0.1:{free_port()}"))
    assert nothing.returncode == 7 and "cannot connect" in nothing.stderr
    status = run_cli("sync", "status", env=kiosk_env(state, url))
    assert status.returncode == 0
    assert "pending      1 (money 1, ops 0, telemetry 0)" in status.stdout
    assert "cannot connect" in status.stdout
    unset = run_cli("sync", "now", env=kiosk_env(state))
    assert unset.returncode == 3 and "sync.cloud_url is not set" in unset.stderr


def test_requeue_puts_quarantined_events_back(tmp_path: Path) -> None:
    state = tmp_path / "kiosk"
    outbox = Outbox(state / "outbox.sqlite", "kiosk-cli")
    outbox.append("slot.fault", slot=1, code="jam")
    outbox.quarantine({1: "422 test"})
    outbox.close()
    status = run_cli("sync", "status", env=kiosk_env(state))
    assert "quarantined #1 slot.fault: 422 test" in status.stdout
    requeued = run_cli("sync", "requeue", env=kiosk_env(state))
    assert requeued.returncode == 0 and requeued.stdout.startswith("1 events back to pending")


def test_cloud_settings_are_checked_at_start(tmp_path: Path) -> None:
    bad = run_cli("migrate", env={"KIOSK_CLOUD_DATABASE_URL": "mysql://x"}, program="kiosk-cloud")
    assert bad.returncode == 3 and "KIOSK_CLOUD_DATABASE_URL" in bad.stderr
    ok = run_cli(
        "migrate", "--database-url", f"sqlite:///{tmp_path / 'c.sqlite'}", program="kiosk-cloud"
    )
    assert ok.returncode == 0 and "applied migrations [1, 2, 3]" in ok.stdout
    token = run_cli(
        "issue-token",
        "--kiosk-id",
        "kiosk-x",
        "--database-url",
        f"sqlite:///{tmp_path / 'c.sqlite'}",
        program="kiosk-cloud",
    )
    assert token.returncode == 0 and token.stdout.startswith("kpt_")
