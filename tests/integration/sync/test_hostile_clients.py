"""The cloud API against clients that misbehave at the HTTP level, on a real server: gzip
bodies with more than one member or trailing bytes, clients that hang up halfway through a
body or never finish their headers or body (slow-loris, also under a small open-file
limit), made-up HTTP methods, and large bodies sent without a token. Each is answered (or
dropped) without a 5xx, a traceback, a metric series of the client's choosing, or a stall
of the event loop."""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.server import bodies
from cloud_sync.wire_values import loads_strict
from tests.conftest import free_port
from tests.integration.sync import test_cloud_api as cloud_api
from tests.integration.sync.cloudkit import (
    ADMIN_TOKEN,
    Cloud,
    CloudProcess,
    sqlite_cloud,
)


def batch(*seqs: int) -> bytes:
    return cloud_api.batch("kiosk-a", [cloud_api.event("kiosk-a", seq) for seq in seqs])


@pytest.fixture
def key(cloud: Cloud) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    cloud.register("kiosk-a", key)
    return key


@pytest.fixture(scope="module")
def lone_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A cloud of this module's own (its metrics and event loop are looked at)."""
    with sqlite_cloud(tmp_path_factory.mktemp("hostile") / "cloud.sqlite") as running:
        yield running


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def metric_lines(cloud: Cloud, pattern: str) -> list[str]:
    text = cloud.http.get(cloud.url + "/metrics").text
    return [line for line in text.splitlines() if re.search(pattern, line)]


def raw_answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pass
    return received


# -- gzip --------------------------------------------------------------------------------


def test_a_gzip_body_of_several_members_is_read_whole(cloud: Cloud, key: Ed25519PrivateKey) -> None:
    raw = batch(1, 2)
    body = gzip.compress(raw[:30]) + gzip.compress(raw[30:100]) + gzip.compress(raw[100:])
    response = cloud.signed("kiosk-a", key, body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert len(response.json()["accepted"]) == 2


@pytest.mark.parametrize("tail", [b"GARBAGE trailing bytes", b"\x00\x00\x00\x00", b"\x1f"])
def test_bytes_after_the_last_gzip_member_are_refused_and_nothing_is_stored(
    cloud: Cloud, key: Ed25519PrivateKey, tail: bytes
) -> None:
    body = gzip.compress(batch(1)) + tail
    response = cloud.signed("kiosk-a", key, body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed_gzip"
    assert cloud.events("kiosk-a") == []


def test_gzip_members_together_stay_within_the_decoded_limit(
    cloud: Cloud, key: Ed25519PrivateKey
) -> None:
    member = gzip.compress(b" " * (cloud.settings.max_decoded_bytes // 4 + 1), compresslevel=9)
    body = gzip.compress(batch(1)) + member * 4  # each member alone is within the limit
    response = cloud.signed("kiosk-a", key, body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "body_too_large"


# -- a client that hangs up halfway -------------------------------------------------------


def test_a_client_that_hangs_up_mid_body_is_a_quiet_warning_not_a_500(
    lone_cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    paths = [b"/v1/events:batch", b"/v1/admin/kiosks", b"/v1/provision"]
    with structlog.testing.capture_logs() as logs, caplog.at_level(logging.WARNING):
        for path in paths:
            sock = socket.create_connection(address(lone_cloud.url))
            auth = b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
            sock.sendall(
                b"POST "
                + path
                + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + auth
                + b"Content-Length: 100\r\n\r\n{"
            )
            time.sleep(0.2)
            sock.close()
        deadline = time.monotonic() + 10
        while sum(1 for e in logs if e.get("error") == "client_disconnected") < len(paths):
            assert time.monotonic() < deadline, logs
            time.sleep(0.05)
    assert not [e for e in logs if e["event"] == "cloud.unexpected_error"]
    gone = [e for e in logs if e.get("error") == "client_disconnected"]
    assert {e["path"] for e in gone} == {p.decode() for p in paths}
    assert all(e["log_level"] == "warning" and "exc_info" not in e for e in gone)
    assert not [r for r in caplog.records if r.exc_info or "Exception in ASGI" in r.getMessage()]
    assert metric_lines(lone_cloud, r'status="5\d\d"|code="internal"') == []
    assert metric_lines(lone_cloud, r'refused_requests_total\{code="client_disconnected"\} 3')


# -- made-up methods ------------------------------------------------------------------------


def test_made_up_methods_and_paths_add_no_metric_series(lone_cloud: Cloud) -> None:
    sock = socket.create_connection(address(lone_cloud.url))
    for i in range(50):
        sock.sendall(b"X%04dMADEUP /nope/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i, i))
        received = b""
        while b'"request_id"' not in received:
            received += sock.recv(65536)
    sock.close()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for person in ("p-1", "p-2"):
        lone_cloud.http.get(lone_cloud.url + f"/v1/admin/riders/{person}", headers=admin)
    series = metric_lines(lone_cloud, r"^kiosk_cloud_http_requests_total\{")
    assert not [line for line in series if "MADEUP" in line or "/nope" in line or "p-1" in line]
    assert [line for line in series if 'method="other"' in line and 'route="unmatched"' in line]
    assert [line for line in series if 'route="/v1/admin/riders/{person_id}"' in line]


# -- a token before the body ----------------------------------------------------------------


def test_a_body_without_a_token_is_refused_before_it_is_read(lone_cloud: Cloud) -> None:
    for path in (b"/v1/admin/kiosks", b"/v1/riders/p-1/claim"):
        sock = socket.create_connection(address(lone_cloud.url))
        method = b"PUT" if path.endswith(b"claim") else b"POST"
        sock.sendall(
            method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 60000\r\n\r\n{"
        )
        started = time.monotonic()
        answer = raw_answer(sock, 5)
        sock.close()
        assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 403")), answer[:200]
        assert time.monotonic() - started < 3


def gzip_json(size: int) -> bytes:
    body = json.dumps([{"a": [1, "x"]}] * (size // 14)).encode()
    return gzip.compress(body)


@pytest.mark.parametrize(
    ("path", "token", "limit"),
    [
        ("/v1/admin/kiosks", ADMIN_TOKEN, bodies.ROUTE_LIMIT),
        ("/v1/provision", None, 4 * 1024),
    ],
)
def test_each_route_reads_a_body_only_as_large_as_it_needs(
    lone_cloud: Cloud, path: str, token: str | None, limit: int
) -> None:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    plain = b'{"site": "' + b"x" * limit + b'"}'
    response = lone_cloud.http.post(lone_cloud.url + path, content=plain, headers=headers)
    assert response.status_code == 413, response.text
    # 10 KB of gzip that would be 4 MiB of JSON: refused once past the route's limit
    headers["Content-Encoding"] = "gzip"
    packed = gzip_json(4 * 1024 * 1024)
    assert len(packed) < lone_cloud.settings.max_body_bytes // 100
    response = lone_cloud.http.post(lone_cloud.url + path, content=packed, headers=headers)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "body_too_large"


def test_a_large_body_is_parsed_off_the_event_loop(
    lone_cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    parse = loads_strict

    def noting(data: bytes) -> Any:
        threads.append(threading.get_ident())
        return parse(data)

    monkeypatch.setattr(bodies, "loads_strict", noting)
    body = json.dumps({"kiosk_id": "kiosk-b", "public_key": "k" * 44, "site": "s" * 40_000})
    response = lone_cloud.admin("POST", "/v1/admin/kiosks", content=body.encode())
    assert response.status_code == 422, response.text  # parsed, then the site is too long
    assert lone_cloud.thread is not None
    assert threads and lone_cloud.thread.ident not in threads


# -- slow-loris against `kiosk-cloud serve` -----------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[CloudProcess]:
    """`kiosk-cloud serve` with short deadlines and a small open-file limit (128)."""
    cloud = CloudProcess(
        f"sqlite:///{tmp_path / 'cloud.sqlite'}",
        free_port(),
        tmp_path / "serve.log",
        env={"KIOSK_CLOUD_BODY_TIMEOUT_S": "1", "KIOSK_CLOUD_HEADER_TIMEOUT_S": "1"},
        open_files=128,
    )
    cloud.start()
    try:
        yield cloud
    finally:
        cloud.stop()


def test_a_body_that_does_not_arrive_in_time_is_408_and_closed(served: CloudProcess) -> None:
    sock = socket.create_connection(address(served.url))
    sock.sendall(b"POST /v1/events:batch HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    started = time.monotonic()
    answer = raw_answer(sock, 10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b'"body_timeout"' in answer
    assert time.monotonic() - started < 5  # answered, and the connection closed


def test_headers_that_do_not_arrive_in_time_close_the_connection(served: CloudProcess) -> None:
    sock = socket.create_connection(address(served.url))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
    started = time.monotonic()
    assert raw_answer(sock, 10) == b""
    sock.close()
    assert time.monotonic() - started < 5


def test_half_sent_requests_past_the_open_file_limit_do_not_take_the_server_down(
    served: CloudProcess,
) -> None:
    held: list[socket.socket] = []
    try:
        for i in range(150):  # more than the process's 128 open files
            sock = socket.create_connection(address(served.url), timeout=5)
            if i % 2:
                sock.sendall(b"POST /v1/events:batch HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n")
            else:
                sock.sendall(b"POST /v1/events:batch HTTP/1.1\r\nContent-Length: 99\r\n\r\n{")
            held.append(sock)
        time.sleep(3)  # past both deadlines
        response = httpx.get(served.url + "/healthz", timeout=5)
        assert response.status_code == 200
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    log = served.log.read_text(errors="replace")
    assert log.count("out of system resource") < 50, log[-2000:]


def test_past_limit_concurrency_requests_are_answered_503_at_once(tmp_path: Path) -> None:
    cloud = CloudProcess(
        f"sqlite:///{tmp_path / 'cloud.sqlite'}",
        free_port(),
        tmp_path / "serve.log",
        env={"KIOSK_CLOUD_LIMIT_CONCURRENCY": "10", "KIOSK_CLOUD_BODY_TIMEOUT_S": "30"},
    )
    cloud.start()
    held: list[socket.socket] = []
    try:
        for _ in range(9):  # each waits for its body, in the app
            sock = socket.create_connection(address(cloud.url), timeout=5)
            sock.sendall(b"POST /v1/events:batch HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
            held.append(sock)
            time.sleep(0.05)
        started = time.monotonic()
        response = httpx.get(cloud.url + "/healthz", timeout=3)
        assert response.status_code == 503
        assert time.monotonic() - started < 1
        for _ in range(5):  # past the limit: answered at once, the connection closed
            sock = socket.create_connection(address(cloud.url), timeout=5)
            assert raw_answer(sock, 3).startswith(b"HTTP/1.1 503")
            sock.close()
    finally:
        for sock in held:
            sock.close()
        cloud.stop()
