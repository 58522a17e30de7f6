"""The kiosk against a cloud that answers wrongly: a broken cloud, a proxy or a man in the
middle answering in its place, a flaky network.

The cloud is real (the cloud app under uvicorn, on SQLite) with a ``Tamper`` gate in front
that rewrites its answers, or a small server of the test's own that misbehaves on purpose.
Whatever comes back, nothing is marked sent that the cloud did not store and no event is
quarantined for what is not the cloud's verdict on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sync.cloudkit import Cloud, Kiosk, make_kiosk, start_cloud

pytestmark = pytest.mark.timeout(120)

#: ``(path, status, headers, body) -> (status, headers, body)``; headers lower-cased.
Rewrite = Callable[[str, int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


class Tamper:
    """ASGI middleware in front of the real cloud app: the app handles every request as it
    would, then ``rewrite`` (when set) changes the answer on its way back to the kiosk."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rewrite: Rewrite | None = None

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        rewrite = self.rewrite
        if scope["type"] != "http" or rewrite is None:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
            status, headers, body = rewrite(
                scope["path"], start["status"], headers, b"".join(chunks)
            )
            headers["content-length"] = str(len(body))
            raw = [(k.encode(), v.encode()) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


@pytest.fixture
def tampered(tmp_path: Path) -> Iterator[tuple[Cloud, Tamper]]:
    gates: list[Tamper] = []

    def wrap(inner: Any) -> Tamper:
        gates.append(Tamper(inner))
        return gates[0]

    cloud = start_cloud(f"sqlite:///{tmp_path / 'cloud.sqlite'}", wrap=wrap)
    try:
        yield cloud, gates[0]
    finally:
        cloud.stop()


class Misbehaving:
    """A plain HTTP server on a free loopback port that answers every request with
    ``answer`` (status, headers, body) and records the paths it was asked for."""

    def __init__(self, answer: tuple[int, dict[str, str], bytes]) -> None:
        self.answer = answer
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.paths.append(self.path)
                status, headers, body = owner.answer
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def misbehaving() -> Iterator[Callable[[int, dict[str, str], bytes], Misbehaving]]:
    servers: list[Misbehaving] = []

    def start(status: int, headers: dict[str, str], body: bytes) -> Misbehaving:
        servers.append(Misbehaving((status, headers, body)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def stored_ids(cloud: Cloud, kiosk_id: str) -> set[str]:
    return {event["id"] for event in cloud.events(kiosk_id)}


def sent_ids(kiosk: Kiosk) -> set[str]:
    return {event.id for event in kiosk.outbox.events("sent")}


# -- acknowledgements ---------------------------------------------------------------------------


@pytest.mark.parametrize("lie", ["foreign-ids", "other-batch"])
def test_an_answer_acknowledging_what_was_not_sent_marks_nothing_sent(
    tampered: tuple[Cloud, Tamper], tmp_path: Path, lie: str
) -> None:
    cloud, gate = tampered
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(6)
    everything = [event.id for event in kiosk.outbox.events()]

    def overclaim(path: str, status: int, headers: dict[str, str], body: bytes) -> Any:
        if path != "/v1/events:batch" or status != 200:
            return status, headers, body
        answer = json.loads(body)
        if lie == "foreign-ids":  # "took" every pending event, sent or not
            answer["accepted"] = sorted(set(answer["accepted"]) | set(everything))
        else:  # a stale answer to an earlier batch (a caching proxy)
            answer["batch_id"] = "01JSTALESTALESTALESTALESTA"
        return status, headers, json.dumps(answer).encode()

    gate.rewrite = overclaim
    result = kiosk.daemon(cloud.url, max_events=2).sync_once()
    assert result.error is not None and "not trusted, nothing marked sent" in result.error
    assert "\n" not in result.error
    assert sent_ids(kiosk) <= stored_ids(cloud, kiosk.kiosk_id)
    assert sent_ids(kiosk) == set()
    assert kiosk.outbox.count("pending") == 6 and kiosk.outbox.quarantined() == []
    gate.rewrite = None  # the cloud answers honestly again: everything goes, once
    again = kiosk.daemon(cloud.url, max_events=2).sync_once()
    assert again.error is None and again.sent == 6
    assert stored_ids(cloud, kiosk.kiosk_id) == set(everything) == sent_ids(kiosk)


# -- answers that are not the cloud API's verdict on the events ----------------------------------

HTML = {"Content-Type": "text/html"}
PORTAL = b"<html>\n<head><title>Log in</title></head>\n<body>Wi-Fi \x1b[31mlogin</body></html>"


@pytest.mark.parametrize(
    ("status", "headers", "body", "named"),
    [
        (302, {"Location": "{elsewhere}/v1/events:batch"}, b"", "redirected to http://127.0.0.1"),
        (307, {"Location": "{elsewhere}/v1/events:batch"}, b"", "follows no redirect"),
        (404, HTML, PORTAL, "404 Not Found: Log in Wi-Fi [31mlogin"),
        (400, HTML, b"<html><h1>400 Bad Request</h1> header too large</html>", "400 Bad Request"),
        (405, {}, json.dumps({"error": "method_not_allowed", "reason": "no"}).encode(), "405"),
        (422, {}, json.dumps({"detail": [{"loc": ["body"]}]}).encode(), "422"),
    ],
    ids=["302-elsewhere", "307-elsewhere", "404-portal", "400-proxy", "405-api", "422-not-api"],
)
def test_an_answer_that_is_not_the_apis_verdict_quarantines_nothing(
    misbehaving: Callable[[int, dict[str, str], bytes], Misbehaving],
    tmp_path: Path,
    status: int,
    headers: dict[str, str],
    body: bytes,
    named: str,
) -> None:
    elsewhere = misbehaving(200, {}, b"{}")
    headers = {k: v.replace("{elsewhere}", elsewhere.url) for k, v in headers.items()}
    proxy = misbehaving(status, headers, body)
    kiosk = make_kiosk(tmp_path)
    kiosk.rent(5)
    daemon = kiosk.daemon(proxy.url, max_events=2)
    for _ in range(3):
        result = daemon.sync_once()
        assert result.error is not None and named in result.error, result.error
        assert f" {status} " in result.error and "stay pending" in result.error
    error = kiosk.outbox.stats().last_error or ""
    assert "\n" not in error and "\x1b" not in error and "<" not in error, error
    assert kiosk.outbox.quarantined() == [] and kiosk.outbox.count("pending") == 5
    assert elsewhere.paths == [], "the signed batch never goes to another host"
    assert len(proxy.paths) == 3, "one request a pass: nothing is narrowed"
