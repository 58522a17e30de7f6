"""Revoking a stolen kiosk: a real API (SQLite and PostgreSQL), real kiosks with real
roster files pulling deltas, the real sync client, a real MQTT broker.

After ``kiosks revoke`` the cloud refuses the kiosk's batches and closed-rental fetches
(403), answers its roster pull with a signed wipe order that it obeys (nothing of the old
roster left in the file or its WAL; ``roster.purged`` reason ``revoked``), re-seals the
roster under a new data key that every other kiosk gets in a full snapshot, and the
revoked kiosk's old data key opens nothing written afterwards. A forged or replayed wipe
order deletes nothing; MQTT commands to the revoked kiosk are refused before publishing.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sync.cli import app as cloud_app
from cloud_sync.cli_runner import run_app
from cloud_sync.client import CloudClient
from cloud_sync.errors import CloudError, IntegrityError
from cloud_sync.exits import CLOUD_EXIT_CODES
from cloud_sync.mqtt.telemetry import Topics
from cloud_sync.roster_wire import build_wipe, sign_wipe
from cloud_sync.sealing import WrappedKey, open_sealed, row_aad, unwrap_key
from cloud_sync.signing import HEADER_NONCE, public_key_text
from tests.integration.ops.broker import mosquitto
from tests.integration.sync.cloudkit import ADMIN_TOKEN as ADMIN
from tests.integration.sync.cloudkit import Cloud
from tests.integration.sync.test_roster_sync import (
    Proxy,
    RosterKiosk,
    add_rider,
    cloud_roster,
    disk_bytes,
    make_roster_kiosk,
)
from tests.vault_helpers import MODEL, template


@pytest.fixture
def cloud(roster_cloud: Cloud) -> Cloud:
    """The roster-serving cloud of conftest, empty, on SQLite and PostgreSQL."""
    return roster_cloud


def pull(kiosk: RosterKiosk, cloud: Cloud, transport: httpx.BaseTransport | None = None) -> Any:
    return kiosk.daemon(cloud, transport=transport).pull_roster()


def sealed_on_kiosk(kiosk: RosterKiosk) -> tuple[list[bytes], list[bytes], bytes]:
    """What a thief would copy off the kiosk: its sealed rows, its wrapped data keys, and
    the data key itself (unwrapped with the kiosk's own box key)."""
    with sqlite3.connect(kiosk.store.path) as db:
        rows = [bytes(row[0]) for row in db.execute("SELECT sealed FROM riders")]
        wrapped = [str(row[0]) for row in db.execute("SELECT wrapped FROM data_keys")]
    data_key = unwrap_key(WrappedKey.from_dict(json.loads(wrapped[0])), kiosk.keys.box)
    parts = [base64.b64decode(json.loads(text)["sealed"]) for text in wrapped]
    return rows, parts, data_key


def roster_version(cloud: Cloud) -> int:
    version: int = cloud.admin("GET", "/v1/admin/roster").json()["version"]
    return version


def test_a_revoked_kiosk_is_refused_wipes_its_roster_and_the_others_move_to_a_new_key(
    cloud: Cloud, tmp_path: Path
) -> None:
    stolen = make_roster_kiosk(tmp_path, cloud, "kiosk-stolen")
    other = make_roster_kiosk(tmp_path, cloud, "kiosk-other")
    add_rider(cloud, "ann", 1, name="Ann Example")
    add_rider(cloud, "bob", 2, name="Bob Example")
    assert pull(stolen, cloud).error is None and pull(other, cloud).error is None
    rows, wrapped, old_key = sealed_on_kiosk(stolen)
    assert len(rows) == 2 and wrapped
    old_key_id = stolen.store.info().data_key_id

    revoked = cloud.admin("POST", "/v1/admin/kiosks/kiosk-stolen:revoke")
    assert revoked.status_code == 200, revoked.text
    answer = revoked.json()
    assert answer["already_revoked"] is False and answer["riders"] == 2
    assert answer["data_key_id"] not in (None, old_key_id)

    # its batches and closed-rental fetches: 403 naming the revocation
    stolen.base.outbox.append("kiosk.started", version="1.0", mode="rental")
    pushed = stolen.daemon(cloud).sync_once()
    assert pushed.failure is not None and "403" in str(pushed.failure)
    assert "kiosk_revoked" in str(pushed.failure)
    assert cloud.events("kiosk-stolen") == []
    client = CloudClient(cloud.url, stolen.kiosk_id, stolen.base.key, 5)
    with pytest.raises(CloudError, match="403 kiosk_revoked"):
        client.get_closed_rentals(0)

    # its roster pull: the signed wipe order, obeyed
    wiped = pull(stolen, cloud)
    assert wiped.wiped and wiped.error is not None and "revoked" in wiped.error
    assert stolen.store.version == 0 and stolen.riders() == []
    on_disk = disk_bytes(stolen.store.path)
    for blob in rows + wrapped:
        assert blob not in on_disk
    [purged] = [e for e in stolen.base.outbox.events() if e.type == "roster.purged"]
    assert purged.payload.reason == "revoked" and purged.payload.riders == 2  # type: ignore[union-attr]
    again = pull(stolen, cloud)  # nothing left to wipe: obeyed, nothing recorded twice
    assert again.wiped and stolen.store.version == 0
    assert len([e for e in stolen.base.outbox.events() if e.type == "roster.purged"]) == 1

    # every other kiosk: a full snapshot under the new key, the same riders
    moved = pull(other, cloud)
    assert (moved.error, moved.full, moved.upserts) == (None, True, 2)
    assert other.store.info().data_key_id == answer["data_key_id"]
    assert {r.display_name for r in other.store.load().riders.values()} == {
        "Ann Example",
        "Bob Example",
    }

    # a rider written after the revocation is out of the old data key's reach
    add_rider(cloud, "cat", 3, name="Cat Example")
    assert pull(other, cloud).upserts == 1
    with sqlite3.connect(other.store.path) as db:
        version, key_id, blob = db.execute(
            "SELECT version, key_id, sealed FROM riders WHERE person_id = 'cat'"
        ).fetchone()
    assert key_id == answer["data_key_id"]
    with pytest.raises(IntegrityError):
        open_sealed(old_key, bytes(blob), row_aad("cat", version, key_id))


def test_revoking_twice_or_an_unknown_kiosk_changes_nothing(cloud: Cloud, tmp_path: Path) -> None:
    make_roster_kiosk(tmp_path, cloud, "kiosk-gone")
    add_rider(cloud, "ann", 1)
    first = cloud.admin("POST", "/v1/admin/kiosks/kiosk-gone:revoke")
    assert first.status_code == 200 and first.json()["already_revoked"] is False
    version = roster_version(cloud)

    second = cloud.admin("POST", "/v1/admin/kiosks/kiosk-gone:revoke")
    assert second.status_code == 200, second.text
    assert second.json()["already_revoked"] is True and second.json()["data_key_id"] is None
    unknown = cloud.admin("POST", "/v1/admin/kiosks/kiosk-nobody:revoke")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_kiosk"
    assert roster_version(cloud) == version  # no rotation for either
    anonymous = cloud.http.post(cloud.url + "/v1/admin/kiosks/kiosk-gone:revoke")
    assert anonymous.status_code == 401
    listed = {k["kiosk_id"]: k["disabled"] for k in cloud.admin("GET", "/v1/admin/kiosks").json()}
    assert listed == {"kiosk-gone": True}


def test_revocations_and_key_rotations_close_together_keep_every_rider(
    cloud: Cloud, tmp_path: Path
) -> None:
    """Each rotation stages its new key beside the current one; a second staged over the
    first before the first was promoted left the database sealed under a lost key."""
    keep = make_roster_kiosk(tmp_path, cloud, "kiosk-keep")
    for name in ("kiosk-x", "kiosk-y", "kiosk-z"):
        make_roster_kiosk(tmp_path, cloud, name)
    for seed in range(40):  # enough rows that a rotation takes a while
        add_rider(cloud, f"r{seed:02d}", seed, templates=[
            {"model": MODEL, "vector": template(seed).tolist()}] * 8)  # fmt: skip
    requests = [
        ("/v1/admin/roster:rotate-key", 0.0),
        ("/v1/admin/kiosks/kiosk-x:revoke", 0.002),
        ("/v1/admin/roster:rotate-key", 0.005),
        ("/v1/admin/kiosks/kiosk-y:revoke", 0.01),
        ("/v1/admin/kiosks/kiosk-z:revoke", 0.02),
    ]

    def send(request: tuple[str, float]) -> httpx.Response:
        path, delay = request
        with httpx.Client(timeout=60) as client:
            client.get(cloud.url + "/healthz")
            time.sleep(delay)
            return client.post(cloud.url + path, headers={"Authorization": f"Bearer {ADMIN}"})

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(send, requests))
    assert [a.status_code for a in answers] == [200] * len(requests), [a.text for a in answers]
    riders = cloud.admin("GET", "/v1/admin/riders")
    assert riders.status_code == 200, riders.text
    assert len(riders.json()) == 40
    pulled = pull(keep, cloud)
    assert pulled.error is None and pulled.full and len(keep.riders()) == 40


def test_a_forged_or_replayed_wipe_order_deletes_nothing(cloud: Cloud, tmp_path: Path) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud, "kiosk-kept")
    add_rider(cloud, "ann", 1)
    assert pull(kiosk, cloud).error is None
    held = kiosk.store.version
    impostor = Ed25519PrivateKey.generate()
    genuine = cloud_roster(cloud).keys.signing

    def forged(request: httpx.Request, content: bytes) -> bytes:  # right nonce, wrong key
        return sign_wipe(build_wipe("kiosk-kept", request.headers[HEADER_NONCE]), impostor)

    def replayed(request: httpx.Request, content: bytes) -> bytes:  # right key, old nonce
        return sign_wipe(build_wipe("kiosk-kept", "0" * 32), genuine)

    def misdirected(request: httpx.Request, content: bytes) -> bytes:  # another kiosk's
        return sign_wipe(build_wipe("kiosk-other", request.headers[HEADER_NONCE]), genuine)

    for rewrite, why in (
        (forged, "signature does not verify"),
        (replayed, "answers another request"),
        (misdirected, "for another kiosk"),
    ):
        result = pull(kiosk, cloud, Proxy(rewrite))
        assert not result.wiped and result.error is not None and why in result.error
        assert kiosk.store.version == held and kiosk.riders() == ["ann"]
    assert not [e for e in kiosk.base.outbox.events() if e.type == "roster.purged"]


def test_the_cli_revokes_and_the_command_sender_refuses_a_revoked_kiosk(
    cloud: Cloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kiosk = make_roster_kiosk(tmp_path, cloud, "kiosk-cli")
    add_rider(cloud, "ann", 1)
    assert pull(kiosk, cloud).error is None
    url = ["--database-url", cloud.settings.database_url]

    def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()  # the server's own log lines so far
        code = run_app(cloud_app, "kiosk-cloud", CLOUD_EXIT_CODES, [*args])
        out, err = capsys.readouterr()
        return code, out, err

    if cloud.settings.database_url.startswith("postgresql"):
        files = cloud.settings.roster_key_paths
        assert files is not None
        env = {"KIOSK_CLOUD_ROSTER_KEY_FILE": str(files[0])}
        env["KIOSK_CLOUD_ROSTER_DATA_KEY_FILE"] = str(files[1])
    else:
        env = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert cli("kiosks", "revoke", "kiosk-nobody", *url)[:2] == (4, "")
        done = cli("kiosks", "revoke", "kiosk-cli", *url)
        assert done[0] == 0 and "revoked kiosk-cli" in done[1], done
        assert "already revoked" in cli("kiosks", "revoke", "kiosk-cli", *url)[1]
    [line] = [json.loads(row) for row in cli("kiosks", *url)[1].splitlines()]
    assert line["kiosk_id"] == "kiosk-cli" and line["disabled"] is True
    # the API reads the registry afresh for roster pulls: the wipe comes at once
    assert pull(kiosk, cloud).wiped and kiosk.riders() == []

    key = tmp_path / "command-key.pem"
    assert cli("command", "keygen", "--key", str(key))[0] == 0
    with mosquitto(tmp_path / "mosquitto") as broker:
        seen: list[bytes] = []
        listening = threading.Event()
        watcher = mqtt.Client(CallbackAPIVersion.VERSION2)
        watcher.on_connect = lambda c, *_: c.subscribe(Topics.for_kiosk("kiosk-cli").command)
        watcher.on_subscribe = lambda *_: listening.set()
        watcher.on_message = lambda _c, _u, message: seen.append(bytes(message.payload))
        watcher.connect(broker.host, broker.port)
        watcher.loop_start()
        try:
            assert listening.wait(10)
            send = ["command", "send", "--kiosk", "kiosk-cli", "--name", "ping",
                    "--broker", f"{broker.host}:{broker.port}", "--key", str(key),
                    "--timeout", "2", *url]  # fmt: skip
            code, out, err = cli(*send)
            time.sleep(0.5)
        finally:
            watcher.loop_stop()
            watcher.disconnect()
    assert code == 7 and out == "" and "kiosk kiosk-cli was revoked" in err
    assert seen == []  # nothing was published


def test_no_provisioning_token_brings_a_revoked_kiosk_back(cloud: Cloud, tmp_path: Path) -> None:
    """A stolen kiosk revoked by an administrator: an installer's token bound to it is
    refused at issue, and a token issued before the revocation (or an unbound one) cannot
    re-register it with the thief's keys; the kiosk stays revoked."""
    make_roster_kiosk(tmp_path, cloud, "kiosk-gone")
    early = cloud.admin("POST", "/v1/admin/provisioning-tokens", json={"kiosk_id": "kiosk-gone"})
    unbound = cloud.admin("POST", "/v1/admin/provisioning-tokens", json={})
    assert cloud.admin("POST", "/v1/admin/kiosks/kiosk-gone:revoke").status_code == 200
    ian = cloud.admin("POST", "/v1/admin/operators", json={"name": "ian", "role": "installer"})
    assert ian.status_code == 201, ian.text
    headers = {"Authorization": f"Bearer {ian.json()['token']}"}
    late = cloud.http.post(
        cloud.url + "/v1/admin/provisioning-tokens",
        json={"kiosk_id": "kiosk-gone"},
        headers=headers,
    )
    assert late.status_code == 409 and late.json()["error"] == "kiosk_revoked", late.text
    thief = Ed25519PrivateKey.generate()
    for issued in (early, unbound):
        body = {
            "token": issued.json()["token"],
            "kiosk_id": "kiosk-gone",
            "public_key": public_key_text(thief),
        }
        answer = cloud.http.post(cloud.url + "/v1/provision", json=body)
        assert answer.status_code == 409 and answer.json()["error"] == "kiosk_revoked", answer.text
    listed = {k["kiosk_id"]: k["disabled"] for k in cloud.admin("GET", "/v1/admin/kiosks").json()}
    assert listed == {"kiosk-gone": True}
