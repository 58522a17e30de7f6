"""More of the cloud API against a hostile client or a careless operator, on a real uvicorn
server on SQLite and on PostgreSQL: public keys that no signature or key agreement can be
trusted with (small-order Ed25519 points, low-order X25519 points, bytes that are no point
at all) are refused where they are parsed, by every route and command that takes one, and a
key stored before that check never turns a request into a 5xx."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from ulid import ULID

from cloud_sync.signing import new_nonce, public_key_text, sign_request
from tests.helpers import BIN, CONSENT_ARGS
from tests.integration.sync.cloudkit import ADMIN_TOKEN, Cloud

P = 2**255 - 19


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _le(number: int) -> bytes:
    return number.to_bytes(32, "little")


#: Ed25519 public keys a forger can sign for without any private key (points of order 1, 2
#: and 4, and the identity written non-canonically), and bytes that are no point at all.
WEAK_SIGNING_KEYS = {
    "identity": _le(1),
    "order 2 (y = -1)": _le(P - 1),
    "order 4 (all zero)": bytes(32),
    "order 4, sign bit set": _le(2**255),
    "identity, y = p + 1": _le(P + 1),
    "y >= p (all 0xff)": b"\xff" * 32,
}
#: X25519 public keys every key agreement with gives the same all-zero secret.
WEAK_BOX_KEYS = {
    "zero": bytes(32),
    "one": _le(1),
    "order 8": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "p - 1": _le(P - 1),
}


def _box_key() -> str:
    public = X25519PrivateKey.generate().public_key()
    return _b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@pytest.fixture
def cloud(roster_cloud: Cloud) -> Cloud:
    return roster_cloud


def _forged_headers(kiosk_id: str) -> dict[str, str]:
    """Signature headers anyone can write for a kiosk whose key is a small-order point:
    R = the identity, s = 0."""
    return {
        "X-Kiosk-Id": kiosk_id,
        "X-Kiosk-Timestamp": str(int(time.time())),
        "X-Kiosk-Nonce": new_nonce(),
        "X-Kiosk-Signature": _b64(_le(1) + bytes(32)),
    }


@pytest.mark.parametrize("name", list(WEAK_SIGNING_KEYS))
def test_a_signing_key_anyone_can_sign_for_is_refused_by_register_and_provision(
    cloud: Cloud, name: str
) -> None:
    weak = _b64(WEAK_SIGNING_KEYS[name])
    answer = cloud.admin(
        "POST", "/v1/admin/kiosks", json={"kiosk_id": "kiosk-w", "public_key": weak}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "bad_public_key"
    assert cloud.admin("GET", "/v1/admin/kiosks").json() == [], "nothing is registered"
    forged = cloud.http.get(cloud.url + "/v1/rentals:closed", headers=_forged_headers("kiosk-w"))
    assert forged.status_code == 401, forged.text

    token = cloud.admin("POST", "/v1/admin/provisioning-tokens", json={}).json()["token"]
    body = {"token": token, "kiosk_id": "kiosk-w", "public_key": weak}
    refused = cloud.http.post(cloud.url + "/v1/provision", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "bad_public_key"
    body["public_key"] = public_key_text(Ed25519PrivateKey.generate())
    done = cloud.http.post(cloud.url + "/v1/provision", json=body)
    assert done.status_code == 201, "the refused attempt did not spend the token: " + done.text


def test_a_weak_signing_key_stored_before_the_check_is_refused_never_a_5xx(cloud: Cloud) -> None:
    cloud.service().store.register_kiosk("kiosk-w", _b64(_le(1)), "", None)
    for path in ("/v1/rentals:closed", "/v1/roster"):
        forged = cloud.http.get(cloud.url + path, headers=_forged_headers("kiosk-w"))
        assert forged.status_code == 401, forged.text
        assert "register" in forged.json()["reason"], forged.text


@pytest.mark.parametrize("name", list(WEAK_BOX_KEYS))
def test_a_box_key_every_agreement_with_is_zero_is_refused_and_never_crashes_the_pull(
    cloud: Cloud, name: str
) -> None:
    key = Ed25519PrivateKey.generate()
    weak = _b64(WEAK_BOX_KEYS[name])
    answer = cloud.admin(
        "POST",
        "/v1/admin/kiosks",
        json={"kiosk_id": "kiosk-b", "public_key": public_key_text(key), "box_public_key": weak},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "bad_box_public_key"
    assert cloud.admin("GET", "/v1/admin/kiosks").json() == []

    # one stored before the check: the pull says what to do, it does not crash
    cloud.service().store.register_kiosk("kiosk-b", public_key_text(key), "", weak)
    target = "/v1/roster?since=0"
    headers = sign_request(key, "kiosk-b", "GET", target, b"", int(time.time()), new_nonce())
    pulled = cloud.http.get(cloud.url + target, headers=headers)
    assert pulled.status_code == 409, pulled.text
    assert pulled.json()["error"] == "no_box_key"
    assert "register" in pulled.json()["reason"]
    fixed = cloud.admin(
        "POST",
        "/v1/admin/kiosks",
        json={
            "kiosk_id": "kiosk-b",
            "public_key": public_key_text(key),
            "box_public_key": _box_key(),
        },
    )
    assert fixed.status_code == 200, "a real box key is taken: " + fixed.text


def test_kiosk_cloud_register_kiosk_refuses_weak_keys_in_one_line(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    env = {"KIOSK_CLOUD_DATABASE_URL": database, "PATH": "/usr/bin:/bin"}
    migrated = subprocess.run([str(BIN / "kiosk-cloud"), "migrate"], env=env, capture_output=True)
    assert migrated.returncode == 0, migrated.stderr
    good = public_key_text(Ed25519PrivateKey.generate())
    for option, weak in (
        ("--public-key", _b64(_le(1))),
        ("--box-public-key", _b64(bytes(32))),
    ):
        args = ["register-kiosk", "kiosk-w", "--public-key", good, option, weak]
        if option == "--public-key":
            args = ["register-kiosk", "kiosk-w", "--public-key", weak]
        done = subprocess.run(
            [str(BIN / "kiosk-cloud"), *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 4, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"kiosk-cloud: error: {option}: "), lines
    listed = subprocess.run(
        [str(BIN / "kiosk-cloud"), "kiosks"], env=env, capture_output=True, text=True
    )
    assert listed.stdout == "", "nothing was registered"


def _cloud_cli(env: dict[str, str], *args: str | bytes) -> subprocess.CompletedProcess[str]:
    """``kiosk-cloud`` with ``args`` as a shell passes them (bytes that are not UTF-8 too)."""
    done = subprocess.run(
        [
            str(BIN / "kiosk-cloud").encode(),
            *(a.encode() if isinstance(a, str) else a for a in args),
        ],
        env=env,
        capture_output=True,
        timeout=60,  # a command given an endless file must stop, not hang
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("issue-token", "--kiosk-id", "Not A Kiosk"), id="token for no kiosk id"),
        pytest.param(("issue-token", "--site", b"x\xed\xa0\x80"), id="site not UTF-8"),
        pytest.param(("events", "--kiosk-id", b"kiosk-\xff"), id="events kiosk id not UTF-8"),
        pytest.param(("events", "--kiosk-id", "Kiosk A"), id="events not a kiosk id"),
        pytest.param(("events", "--after-seq", "9223372036854775808"), id="seq past int64"),
        pytest.param(("events", "--after-seq", "9" * 5000), id="seq of 5000 digits"),
        pytest.param(
            ("register-kiosk", "kiosk-a", "--public-key", "GOOD", "--site", b"\xed\xa0\x80"),
            id="register site not UTF-8",
        ),
        pytest.param(("riders", "delete", b"p\xed\xa0\x80"), id="rider id not UTF-8"),
        pytest.param(("riders", "delete", "p" * 100_000), id="rider id of 100000 characters"),
        pytest.param(("riders", "delete", "p/../q"), id="not a rider id"),
    ],
)
def test_kiosk_cloud_admin_commands_refuse_hostile_arguments_in_one_line(
    tmp_path: Path, args: tuple[str | bytes, ...]
) -> None:
    env = {
        "KIOSK_CLOUD_DATABASE_URL": f"sqlite:///{tmp_path / 'cloud.sqlite'}",
        "PATH": "/usr/bin:/bin",
    }
    assert _cloud_cli(env, "migrate").returncode == 0
    good = public_key_text(Ed25519PrivateKey.generate())
    done = _cloud_cli(env, *(good if a == "GOOD" else a for a in args))
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "rror" in line]
    if done.returncode == 2:  # a usage error: typer's usage lines, one of them the error
        assert len(errors) == 1 and "--after-seq" in errors[0], done.stderr
    else:
        assert done.returncode == 4, (done.returncode, done.stderr)
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("kiosk-cloud: error: ")
        assert len(done.stderr) < 600, "the line is cut, not the whole input echoed"
    assert done.stdout == "", "no token or row is printed"
    assert _cloud_cli(env, "kiosks").stdout == "", "nothing was registered"


def test_every_body_route_honours_gzip_and_refuses_other_encodings_and_media_types(
    cloud: Cloud,
) -> None:
    """What the batch route does with Content-Encoding and Content-Type, every route with
    a body does: gzip is read, any other encoding is a 415 (never a body read as if it
    were plain), and a body that says it is not JSON is a 415; nothing is stored."""
    key = Ed25519PrivateKey.generate()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"kiosk_id": "kiosk-g", "public_key": public_key_text(key)}
    raw = json.dumps(body).encode()
    for encoding in ("br", "deflate", "gzip, gzip", "x-gzip", "compress"):
        answer = cloud.http.post(
            cloud.url + "/v1/admin/kiosks",
            content=raw,
            headers={**admin, "Content-Type": "application/json", "Content-Encoding": encoding},
        )
        assert answer.status_code == 415, (encoding, answer.text)
        assert answer.json()["error"] == "unsupported_encoding"
    for media in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        for path in ("/v1/admin/kiosks", "/v1/provision"):
            answer = cloud.http.post(
                cloud.url + path, content=raw, headers={**admin, "Content-Type": media}
            )
            assert answer.status_code == 415, (media, path, answer.text)
            assert answer.json()["error"] == "unsupported_media_type"
    assert cloud.admin("GET", "/v1/admin/kiosks").json() == [], "nothing was registered"
    gzipped = cloud.http.post(
        cloud.url + "/v1/admin/kiosks",
        content=gzip.compress(raw),
        headers={**admin, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert gzipped.status_code == 200, gzipped.text

    batch = json.dumps(
        {
            "kiosk_id": "kiosk-g",
            "batch_id": str(ULID()),
            "events": [
                {
                    "id": str(ULID()),
                    "kiosk_id": "kiosk-g",
                    "seq": 1,
                    "type": "rental.returned",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "schema": 1,
                    "payload": {"slot": 2, "powerbank_id": "pb1"},
                }
            ],
        }
    ).encode()
    sent = cloud.signed("kiosk-g", key, batch, headers={"Content-Type": "text/plain"})
    assert sent.status_code == 415, sent.text
    assert sent.json()["error"] == "unsupported_media_type"
    assert cloud.events("kiosk-g") == []
    assert cloud.signed("kiosk-g", key, batch).status_code == 200


def test_a_json_body_without_a_content_type_is_read_as_json_on_every_route(
    cloud: Cloud,
) -> None:
    """As the batch route does (docs/sync.md): no Content-Type at all is JSON; a body that
    is not JSON is still a 400, and one that says it is a form a 415."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    key = public_key_text(Ed25519PrivateKey.generate())
    for path, body, status in [
        ("/v1/admin/kiosks", {"kiosk_id": "kiosk-n", "public_key": key}, 200),
        ("/v1/admin/provisioning-tokens", {"kiosk_id": "kiosk-m"}, 201),
        ("/v1/admin/kiosks", {"kiosk_id": "kiosk-n", "public_key": key, "x": 1}, 422),
    ]:
        request = cloud.http.build_request(
            "POST", cloud.url + path, content=json.dumps(body).encode(), headers=admin
        )
        assert "content-type" not in request.headers
        answer = cloud.http.send(request)
        assert answer.status_code == status, (path, answer.text)
        if status == 422:
            assert "body.x" in answer.json()["reason"]
    for content, headers, status in [
        (b"kiosk_id=kiosk-f", {}, 400),
        (b"kiosk_id=kiosk-f", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ]:
        answer = cloud.http.post(
            cloud.url + "/v1/admin/kiosks", content=content, headers={**admin, **headers}
        )
        assert answer.status_code == status, answer.text
    assert [k["kiosk_id"] for k in cloud.admin("GET", "/v1/admin/kiosks").json()] == ["kiosk-n"]


def test_an_id_past_the_128_bits_of_a_ulid_is_refused_as_no_ulid(cloud: Cloud) -> None:
    """A ULID is 128 bits, so its 26th-from-last character is at most 7: ``8ZZZ...`` and
    ``ZZZ...`` look like ULIDs but are none, and would fail any reader that decodes them."""
    key = Ed25519PrivateKey.generate()
    cloud.register("kiosk-u", key)
    now = datetime.now(UTC).isoformat()
    ids = ["8" + "0" * 25, "Z" * 26, "7" + "Z" * 25]
    events = [
        {
            "id": event_id,
            "kiosk_id": "kiosk-u",
            "seq": seq,
            "type": "rental.returned",
            "occurred_at": now,
            "schema": 1,
            "payload": {"slot": 2, "powerbank_id": f"pb{seq}"},
        }
        for seq, event_id in enumerate(ids, start=1)
    ]
    body = {"kiosk_id": "kiosk-u", "batch_id": str(ULID()), "events": events}
    answer = cloud.signed("kiosk-u", key, json.dumps(body).encode())
    assert answer.status_code == 422, answer.text
    rejected = [(r["index"], r["id"]) for r in answer.json()["rejected"]]
    assert rejected == [(0, ids[0]), (1, ids[1])], answer.text
    assert cloud.events("kiosk-u") == []
    body = {"kiosk_id": "kiosk-u", "batch_id": "Z" * 26, "events": events[2:]}
    answer = cloud.signed("kiosk-u", key, json.dumps(body).encode())
    assert answer.status_code == 422 and answer.json()["error"] == "invalid_batch", answer.text
    body["batch_id"] = str(ULID())
    assert cloud.signed("kiosk-u", key, json.dumps(body).encode()).status_code == 200


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested 100000 deep"),
        pytest.param(None, id="an endless file (/dev/zero)"),
        pytest.param(b"[" + b"0.5," * 3_000_000 + b"0.5]", id="12 MB of numbers"),
        pytest.param(b'[{"model": "dlib-128", "vector": [0.1], "vector": [0.2]}]', id="key twice"),
    ],
)
def test_kiosk_cloud_riders_add_refuses_a_hostile_templates_file_in_one_line(
    tmp_path: Path, content: bytes | None
) -> None:
    env = {
        "KIOSK_CLOUD_DATABASE_URL": f"sqlite:///{tmp_path / 'cloud.sqlite'}",
        "PATH": "/usr/bin:/bin",
    }
    assert _cloud_cli(env, "migrate").returncode == 0
    path = Path("/dev/zero")
    if content is not None:
        path = tmp_path / "templates.json"
        path.write_bytes(content)
    done = _cloud_cli(
        env, "riders", "add", "--person-id", "p1", "--templates", str(path), *CONSENT_ARGS
    )
    assert done.returncode == 4, (done.returncode, done.stderr[-500:])
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"kiosk-cloud: error: {path}: "), done.stderr
    assert _cloud_cli(env, "riders", "list").stdout == "", "no rider was stored"


@pytest.mark.parametrize("command", [("kiosks",), ("events",), ("rentals",), ("roster", "info")])
def test_kiosk_cloud_read_commands_never_make_a_database_and_say_why_in_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A mistyped --database-url is not an empty cloud: a read command makes no database
    (nor its folder) and names the fix; an unreachable PostgreSQL is one line too."""
    missing = tmp_path / "typo" / "cloud.sqlite"
    env = {"PATH": "/usr/bin:/bin"}
    done = _cloud_cli(env, *command, "--database-url", f"sqlite:///{missing}")
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert len(done.stderr.splitlines()) == 1 and "kiosk-cloud migrate" in done.stderr
    assert not missing.parent.exists(), "a read command made no folder and no database"
    if command != ("kiosks",):
        return  # the PostgreSQL case waits for the pool's timeout: once is enough
    down = _cloud_cli(env, *command, "--database-url", "postgresql://postgres@127.0.0.1:1/x")
    assert down.returncode == 7, (down.returncode, down.stderr)
    assert len(down.stderr.splitlines()) == 1, down.stderr
    assert down.stderr.startswith("kiosk-cloud: error: "), down.stderr


@pytest.mark.parametrize(
    ("option", "value", "code"),
    [
        pytest.param("--key", "/dev/zero", 7, id="key is an endless device"),
        pytest.param("--key", "FIFO", 7, id="key is a FIFO nobody writes"),
        pytest.param("--key", "BIG", 7, id="key of 50 MB"),
        pytest.param("--password-file", "/dev/zero", 4, id="password is an endless device"),
        pytest.param("--password-file", "BIG", 4, id="password of 50 MB"),
        pytest.param("--broker", "127.0.0.1:99999", 4, id="port past 65535"),
    ],
)
def test_kiosk_cloud_command_send_refuses_hostile_files_and_values_in_one_line(
    tmp_path: Path, option: str, value: str, code: int
) -> None:
    """A key or password file is read only when it is a regular file of a sane size: never
    a hang on a device or a FIFO, never a file read whole into memory."""
    env = {"PATH": "/usr/bin:/bin"}
    key = tmp_path / "command.pem"
    assert _cloud_cli(env, "command", "keygen", "--key", str(key)).returncode == 0
    if value == "FIFO":
        os.mkfifo(tmp_path / "fifo", 0o600)
        value = str(tmp_path / "fifo")
    elif value == "BIG":
        big = tmp_path / "big"
        with big.open("wb") as file:
            file.truncate(50 * 1024 * 1024)
        big.chmod(0o600)
        value = str(big)
    args = {"--kiosk": "kiosk-a", "--name": "ping", "--broker": "127.0.0.1:1", "--key": str(key)}
    args[option] = value
    if option == "--password-file":
        args["--username"] = "u"
    flat = [item for pair in args.items() for item in pair]
    done = _cloud_cli(env, "command", "send", *flat, "--timeout", "1")
    assert done.returncode == code, (done.returncode, done.stderr)
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("kiosk-cloud: error: "), done.stderr
