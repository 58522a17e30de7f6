"""``kiosk sync`` and ``kiosk-cloud`` as a technician and an operator type them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cloud_sync.errors import StoreError
from cloud_sync.outbox import Outbox
from cloud_sync.server.closed import ClosedRental
from cloud_sync.server.migrations import MIGRATIONS
from cloud_sync.server.openapi import COMMITTED, render_openapi
from edge.cabinet.rentals import Ledger
from tests.conftest import free_port
from tests.helpers import run_cli
from tests.integration.sync.cloudkit import Cloud, make_kiosk, start_cloud


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
            "renumbered": 0,
            "batches": 1,
            "pending": 0,
            "error": None,
            "seconds": 0,
            "quarantined_events": [],
            "failing": [],
            "closed_rentals": {"closed": 0, "confirmed": 0, "cursor": 0, "error": None},
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
    assert ok.returncode == 0 and f"applied migrations {[n for n, _, _ in MIGRATIONS]}" in ok.stdout
    token = run_cli(
        "issue-token",
        "--kiosk-id",
        "kiosk-x",
        "--database-url",
        f"sqlite:///{tmp_path / 'c.sqlite'}",
        program="kiosk-cloud",
    )
    assert token.returncode == 0 and token.stdout.startswith("kpt_")


# -- rentals returned at another kiosk ----------------------------------------------------------


def cli_kiosk(state: Path, cloud: Cloud) -> None:
    """Give the CLI's kiosk its key (as a technician would) and register it with the cloud."""
    key = run_cli("sync", "key", env=kiosk_env(state))
    assert key.returncode == 0, key.stderr
    answer = cloud.admin(
        "POST", "/v1/admin/kiosks", json={"kiosk_id": "kiosk-cli", "public_key": key.stdout.strip()}
    )
    assert answer.status_code == 200, answer.text


def open_rental(state: Path, rental_id: str, powerbank: str) -> None:
    outbox = Outbox(state / "outbox.sqlite", "kiosk-cli")
    try:
        ledger = Ledger(outbox)
        ledger.begin(rental_id, "p1", 2, powerbank)
        assert ledger.started(rental_id, powerbank)
    finally:
        outbox.close()


def open_rentals(state: Path) -> int:
    outbox = Outbox(state / "outbox.sqlite", "kiosk-cli")
    try:
        return Ledger(outbox).open_count("p1")
    finally:
        outbox.close()


def test_sync_now_closes_a_rental_returned_at_another_kiosk(tmp_path: Path) -> None:
    state = tmp_path / "kiosk"
    cloud = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}")
    try:
        cli_kiosk(state, cloud)
        open_rental(state, "r-1", "pb-1")
        first = run_cli("sync", "now", "--json", env=kiosk_env(state, cloud.url))
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["closed_rentals"]["closed"] == 0  # not returned yet
        other = make_kiosk(tmp_path, "kiosk-b")
        cloud.register(other.kiosk_id, other.key)
        other.outbox.append("rental.returned", slot=5, powerbank_id="pb-1", charge=30)
        assert other.daemon(cloud.url).sync_once().accepted == 1
        assert open_rentals(state) == 1, "nothing closes the rental but a fetch"

        now = run_cli("sync", "now", env=kiosk_env(state, cloud.url))

        assert now.returncode == 0, now.stderr
        assert "closed 1 rental returned at another kiosk (1 confirmed by the cloud" in now.stdout
        assert open_rentals(state) == 0
        again = run_cli("sync", "now", "--json", env=kiosk_env(state, cloud.url))
        assert json.loads(again.stdout)["closed_rentals"] == {
            "closed": 0,
            "confirmed": 0,
            "cursor": 1,
            "error": None,
        }
    finally:
        cloud.stop()
    status = run_cli("sync", "status", "--json", env=kiosk_env(state, cloud.url))
    fetched = json.loads(status.stdout)["closed_rentals"]
    assert (fetched["cursor"], fetched["closed"], fetched["last_error"]) == (1, 0, None)
    assert fetched["last_fetch_at"] and fetched["last_fetch_at"] == fetched["last_success_at"]
    text = run_cli("sync", "status", env=kiosk_env(state, cloud.url)).stdout
    assert f"closed fetch {fetched['last_fetch_at']}: 0 rentals closed, cursor 1" in text


def test_a_failing_closed_rentals_endpoint_shows_in_status_and_the_push_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "kiosk"
    cloud = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}")
    try:
        cli_kiosk(state, cloud)
        open_rental(state, "r-1", "pb-1")
        outbox = Outbox(state / "outbox.sqlite", "kiosk-cli")
        outbox.append("slot.fault", slot=4, code="jam")
        outbox.close()

        def broken(kiosk_id: str, since: int, limit: int) -> list[ClosedRental]:
            raise StoreError("the rentals table is locked")

        monkeypatch.setattr(cloud.service().store, "closed_rentals", broken)
        failed = run_cli("sync", "now", "--json", env=kiosk_env(state, cloud.url))

        assert failed.returncode == 7
        assert "closed rentals not fetched" in failed.stderr
        assert "503 unavailable" in failed.stderr and "sync failed" not in failed.stderr
        answer = json.loads(failed.stdout)
        assert (answer["accepted"], answer["pending"], answer["error"]) == (2, 0, None)
        assert "503 unavailable" in answer["closed_rentals"]["error"]
        assert [e["type"] for e in cloud.events("kiosk-cli")] == ["rental.started", "slot.fault"]
        status = run_cli("sync", "status", "--json", env=kiosk_env(state, cloud.url))
        data = json.loads(status.stdout)
        assert data["pending_total"] == 0 and data["last_success_at"] and data["last_error"] is None
        fetched = data["closed_rentals"]
        assert "503 unavailable" in fetched["last_error"] and fetched["last_error_at"]
        assert fetched["last_success_at"] is None and fetched["cursor"] == 0
        assert any(p.startswith("closed rentals fetch: ") for p in data["problems"])
        text = run_cli("sync", "status", env=kiosk_env(state, cloud.url)).stdout
        assert "closed fetch " in text and "error: " in text and "(last success never)" in text
        assert "problem      closed rentals fetch: " in text

        monkeypatch.undo()  # the cloud's database is back
        healed = run_cli("sync", "now", env=kiosk_env(state, cloud.url))
        assert healed.returncode == 0, healed.stderr
    finally:
        cloud.stop()
    fetched = json.loads(
        run_cli("sync", "status", "--json", env=kiosk_env(state, cloud.url)).stdout
    )["closed_rentals"]
    assert fetched["last_error"] is None and fetched["last_success_at"]
    assert open_rentals(state) == 1, "nobody returned the powerbank"
