"""The kiosk against a cloud that answers wrongly: a broken cloud, a proxy or a man in the
middle answering in its place, a flaky network.

The cloud is real (the cloud app under uvicorn, on SQLite) with a ``Tamper`` gate in front
that rewrites its answers, or a small server of the test's own that misbehaves on purpose.
Whatever comes back, nothing is marked sent that the cloud did not store and no event is
quarantined for what is not the cloud's verdict on it.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from cloud_sync.batching import BatchLimits
from cloud_sync.client import CloudClient
from cloud_sync.closed_pull import read_fetch_state
from cloud_sync.daemon import PassResult, SyncDaemon
from cloud_sync.outbox import Outbox
from edge.vault.files import read_pull_state
from tests.conftest import free_port
from tests.integration.sync.cloudkit import Cloud, Kiosk, gated_cloud, make_kiosk
from tests.integration.sync.test_poison_events import kiosk, kiosk_env
from tests.integration.sync.test_roster_sync import add_rider, make_roster_kiosk

pytestmark = pytest.mark.timeout(120)

#: An answer's body: bytes, or what writes it to the socket (an endless body).
Body = bytes | Callable[[Any], None]
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
    with gated_cloud(tmp_path / "cloud.sqlite", Tamper) as running:
        yield running


class Misbehaving:
    """A plain HTTP server on a free loopback port that answers every request with
    ``answer`` (status, headers, body) and records the paths it was asked for."""

    def __init__(self, answer: tuple[int, dict[str, str], Body]) -> None:
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
                length = {"Content-Length": str(len(body))} if isinstance(body, bytes) else {}
                for name, value in {**length, **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if isinstance(body, bytes):
                        self.wfile.write(body)
                    else:
                        body(self.wfile)
                except OSError:  # the kiosk hung up: it read enough
                    pass

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def misbehaving() -> Iterator[Callable[[int, dict[str, str], Body], Misbehaving]]:
    servers: list[Misbehaving] = []

    def start(status: int, headers: dict[str, str], body: Body) -> Misbehaving:
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
    misbehaving: Callable[[int, dict[str, str], Body], Misbehaving],
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


@pytest.mark.parametrize("stored_max", [2**63 - 1, 2**62 + 1])
def test_a_seq_conflict_naming_a_seq_at_the_end_of_int64_does_not_use_up_the_counter(
    tampered: tuple[Cloud, Tamper], tmp_path: Path, stored_max: int
) -> None:
    cloud, gate = tampered
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    kiosk.rent(2)
    first = kiosk.outbox.events()[0]

    def conflict(path: str, status: int, headers: dict[str, str], body: bytes) -> Any:
        if path != "/v1/events:batch":
            return status, headers, body
        gate.rewrite = None  # once: the other event goes on to the cloud
        reason = (
            f"seq: 1 of kiosk {kiosk.kiosk_id} is already stored as event {first.id[::-1]} "
            f"(the highest seq stored for this kiosk is {stored_max})"
        )
        answer = {
            "error": "rejected_events",
            "reason": "1 event rejected",
            "rejected": [{"index": 0, "id": first.id, "reason": reason}],
        }
        return 422, headers, json.dumps(answer).encode()

    gate.rewrite = conflict
    result = kiosk.daemon(cloud.url).sync_once()  # OverflowError, or a spent counter, before
    assert (result.renumbered, result.quarantined, result.sent) == (0, 1, 1)
    assert [event.seq for event in kiosk.outbox.events()] == [1, 2]
    kiosk.rent(1, start=2)
    assert kiosk.outbox.events()[-1].seq == 3


def test_a_proxy_that_refuses_every_body_as_too_large_quarantines_nothing(
    misbehaving: Callable[[int, dict[str, str], Body], Misbehaving], tmp_path: Path
) -> None:
    page = b"<html><center><h1>413 Request Entity Too Large</h1></center><hr>nginx</html>"
    proxy = misbehaving(413, HTML, page)
    kiosk = make_kiosk(tmp_path)
    kiosk.rent(4)
    result = kiosk.daemon(proxy.url, max_events=4).sync_once()
    assert result.error is not None and "413 Request Entity Too Large" in result.error
    assert kiosk.outbox.quarantined() == [] and kiosk.outbox.count("pending") == 4


@pytest.mark.parametrize("retry_after", ["\u00b2", "\u00b9\u00b2"])
def test_a_retry_after_that_is_no_number_is_ignored_never_raised(
    misbehaving: Callable[[int, dict[str, str], Body], Misbehaving],
    tmp_path: Path,
    retry_after: str,
) -> None:
    unavailable = json.dumps({"error": "unavailable", "reason": "busy"}).encode()
    busy = misbehaving(503, {"Retry-After": retry_after}, unavailable)  # sent as latin-1
    kiosk = make_kiosk(tmp_path)
    kiosk.rent(1)
    result = kiosk.daemon(busy.url).sync_once()  # a ValueError escaped the pass before
    assert result.error is not None and "503 unavailable: busy" in result.error
    assert result.failure is not None and result.failure.retry_after is None  # type: ignore[union-attr]
    assert kiosk.outbox.count("pending") == 1


#: JSON nested past what Python's parser recurses into (400 kB, under every size cap)
DEEP = b"[" * 200_000 + b"]" * 200_000


def test_an_error_answer_nested_too_deeply_is_an_error_line_never_a_crash(
    misbehaving: Callable[[int, dict[str, str], Body], Misbehaving], tmp_path: Path
) -> None:
    server = misbehaving(500, {"Content-Type": "application/json"}, DEEP)
    kiosk = make_kiosk(tmp_path)
    kiosk.rent(1)
    result = kiosk.daemon(server.url).sync_once()  # a RecursionError escaped the pass before
    assert result.error is not None and "500" in result.error and len(result.error) < 500
    assert kiosk.outbox.count("pending") == 1 and kiosk.outbox.quarantined() == []


# -- answers past any bound: endless, inflating, unreadable, dripping --------------------------------


def endless(wfile: Any) -> None:
    while True:  # until the kiosk hangs up
        wfile.write(b" " * 65536)


def bomb(size: int) -> bytes:
    """Valid JSON padded to ``size`` bytes with blanks, gzip-compressed (about size/1000)."""
    return gzip.compress(b'{"batch_id": "x"' + b" " * size + b"}", compresslevel=9)


@pytest.mark.parametrize(
    ("headers", "body", "named"),
    [
        ({"Content-Length": str(2**40)}, endless, "larger than 1048576 bytes"),
        ({"Content-Encoding": "gzip"}, bomb(64 * 1024 * 1024), "inflates past 1048576 bytes"),
        (
            {"Content-Encoding": "gzip, gzip"},
            gzip.compress(bomb(64 * 1024 * 1024)),
            "encoded as 'gzip, gzip'",
        ),
        ({"Content-Encoding": "gzip"}, b"this is not gzip", "not valid gzip"),
        ({"Content-Encoding": "gzip"}, gzip.compress(b'{"batch_id": "x"}')[:-9], "truncated"),
        ({"Content-Encoding": "br"}, b"\x0b\x02\x80{}\x03", "encoded as 'br'"),
    ],
    ids=["endless", "gzip-bomb", "gzip-in-gzip", "bad-gzip", "cut-gzip", "brotli"],
)
def test_an_answer_past_bounds_or_unreadable_is_refused_in_one_line(
    misbehaving: Callable[[int, dict[str, str], Body], Misbehaving],
    tmp_path: Path,
    headers: dict[str, str],
    body: Body,
    named: str,
) -> None:
    server = misbehaving(200, {"Content-Type": "application/json", **headers}, body)
    kiosk = make_kiosk(tmp_path)
    kiosk.rent(3)
    daemon = kiosk.daemon(server.url)
    result = daemon.sync_once()  # never raises, never reads past the bound
    assert result.error is not None and named in result.error, result.error
    assert "\n" not in result.error
    assert kiosk.outbox.count("pending") == 3 and kiosk.outbox.quarantined() == []
    assert named in (kiosk.outbox.stats().last_error or "")


class Dripper:
    """A server that reads a request, then answers a byte every ``every_s`` seconds for
    ever: in its headers (``where="headers"``) or in its body after whole headers."""

    def __init__(self, where: str, every_s: float = 0.2) -> None:
        self.where = where
        self.every_s = every_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(1 << 20)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            if self.where == "body":
                connection.sendall(head + b"Content-Length: 1000000\r\n\r\n{")
                head = b""
            else:
                head += b"X-Drip: "
            try:
                while not self.stopped.wait(self.every_s):
                    byte, head = head[:1] or b" ", head[1:]
                    connection.sendall(byte)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_an_answer_that_drips_ends_at_the_deadline(tmp_path: Path, where: str) -> None:
    dripper = Dripper(where)
    kiosk = make_kiosk(tmp_path)
    kiosk.rent(1)
    # each byte comes well within the 1 s timeout of a read: only the deadline ends it
    client = CloudClient(dripper.url, kiosk.kiosk_id, kiosk.key, timeout_s=1.0, deadline_s=2.0)
    daemon = SyncDaemon(kiosk.outbox, client, BatchLimits(10, 10**6))
    results: list[PassResult] = []
    worker = threading.Thread(target=lambda: results.append(daemon.sync_once()), daemon=True)
    started = time.monotonic()
    try:
        worker.start()
        worker.join(timeout=15)
        assert not worker.is_alive(), "the pass hangs on an answer that never ends"
    finally:
        dripper.close()
    (result,) = results
    assert time.monotonic() - started < 10
    assert result.error is not None and "no whole answer within 2 s" in result.error
    assert kiosk.outbox.count("pending") == 1 and kiosk.outbox.quarantined() == []


@pytest.mark.parametrize("answer", ["gzip", "padded", "gzip-bomb", "deep"])
def test_the_roster_answer_is_read_within_its_cap_and_the_roster_held_stays(
    tampered: tuple[Cloud, Tamper], tmp_path: Path, answer: str
) -> None:
    cloud, gate = tampered
    kiosk = make_roster_kiosk(tmp_path, cloud)
    add_rider(cloud, "ann", 1)
    client = CloudClient(cloud.url, kiosk.kiosk_id, kiosk.base.key, 5, roster_max_bytes=2**21)
    daemon = SyncDaemon(kiosk.base.outbox, client, BatchLimits(10, 10**6), roster=kiosk.store)
    assert daemon.pull_roster().error is None and kiosk.riders() == ["ann"]
    add_rider(cloud, "bob", 2)

    def reshape(path: str, status: int, headers: dict[str, str], body: bytes) -> Any:
        if path != "/v1/roster":
            return status, headers, body
        if answer == "padded":  # still the signed answer, as JSON, but past the cap
            return status, headers, body + b" " * 2**22
        if answer == "deep":  # what a captive portal could send, before any signature
            return status, headers, DEEP
        if answer == "gzip-bomb":
            body += b" " * 2**26
        return status, {**headers, "content-encoding": "gzip"}, gzip.compress(body)

    gate.rewrite = reshape
    pulled = daemon.pull_roster()
    if answer == "gzip":  # a proxy that compresses the roster: read, and applied
        assert pulled.error is None and kiosk.riders() == ["ann", "bob"]
        return
    named = {
        "padded": "larger than 2097152 bytes",
        "gzip-bomb": "inflates past 2097152 bytes",
        "deep": "roster refused: roster answer is malformed or truncated: the JSON nests too deeply",
    }[answer]
    assert pulled.error is not None and named in pulled.error
    assert kiosk.riders() == ["ann"]
    state = read_pull_state(kiosk.store.path)
    assert state is not None and state.error == pulled.error


# -- the page of rentals closed elsewhere (unsigned) -----------------------------------------------


@pytest.mark.parametrize("cursor", [2**63, 2**64])
def test_a_closed_rentals_cursor_no_store_can_keep_is_refused_and_the_daemon_goes_on(
    tampered: tuple[Cloud, Tamper], tmp_path: Path, cursor: Any
) -> None:
    cloud, gate = tampered
    kiosk = make_kiosk(tmp_path)
    cloud.register(kiosk.kiosk_id, kiosk.key)
    closed: list[str] = []

    def close(ids: list[str]) -> int:
        closed.extend(ids)
        return len(ids)

    def wild(path: str, status: int, headers: dict[str, str], body: bytes) -> Any:
        if path != "/v1/rentals:closed":
            return status, headers, body
        page = {"rentals": [{"rental_id": "r-kiosk-a-1"}], "cursor": cursor, "more": False}
        return status, headers, json.dumps(page).encode()

    gate.rewrite = wild
    daemon = kiosk.daemon(cloud.url, close_rentals=close)
    result = daemon.pull_closed()  # raised OverflowError out of the daemon before
    assert result.error is not None and "not a page of closed rentals" in result.error
    assert closed == [] and result.to_cursor == 0
    state = read_fetch_state(kiosk.outbox)
    assert (state.cursor, state.error) == (0, result.error)


# -- what the technician sees ---------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["refused", "401"])
def test_a_password_in_the_cloud_url_is_never_shown(
    misbehaving: Callable[[int, dict[str, str], Body], Misbehaving],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
) -> None:
    if answer == "refused":
        host = f"127.0.0.1:{free_port()}"
    else:
        body = b'{"error": "bad_signature", "reason": "no"}'
        host = misbehaving(401, {}, body).url.removeprefix("http://")
    url = f"http://ops:hunter2@{host}"
    state = tmp_path / "kiosk"
    outbox = Outbox(state / "outbox.sqlite", "kiosk-cli")
    outbox.append("slot.fault", slot=2, code="jam")
    outbox.close()
    call = kiosk(capsys, monkeypatch, kiosk_env(state, url))
    with capture_logs() as logs:
        code, now_out, now_err = call("sync", "now")
    assert code == 7 and "ops:***@" in now_err
    shown = [now_out, now_err, json.dumps(logs, default=str)]
    for args in (("sync", "status"), ("sync", "status", "--json")):
        code, out, err = call(*args)
        assert code == 0 and "ops:***@" in out
        shown += [out, err]
    _, out, err = call("doctor", "--json")
    assert "ops:***@" in out
    shown += [out, err]
    assert not [text for text in shown if "hunter2" in text]
