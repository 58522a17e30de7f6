"""The kiosk's HTTP client for the cloud API: signed requests, gzip, errors by phase.

Only moves bytes: the daemon decides what to send and what to do with the answer. Every
httpx error is translated here into the ``CloudError`` tree (see ``cloud_sync.errors``),
with a message a technician can act on (wrong URL, untrusted certificate, refused key), on
one line. Every exchange ends by a deadline and every answer is read within a size cap,
gzip the only encoding read (``cloud_sync.http_bounds``); redirects are never followed.
"""

from __future__ import annotations

import gzip
import json
import re
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, Field, ValidationError

from cloud_sync.backoff import parse_retry_after
from cloud_sync.config import shown_url
from cloud_sync.errors import (
    CloudAuthError,
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
)
from cloud_sync.events import MAX_SEQ, BatchResponse
from cloud_sync.http_bounds import (
    ANSWER_MAX_BYTES,
    AnswerError,
    BoundedTransport,
    DeadlineBackend,
    read_body,
)
from cloud_sync.roster_wire import RosterAnswer
from cloud_sync.signing import new_nonce, sign_request
from cloud_sync.wire_values import loads_strict

BATCH_PATH = "/v1/events:batch"
ROSTER_PATH = "/v1/roster"
CLOSED_PATH = "/v1/rentals:closed"


class ClosedRental(BaseModel):
    rental_id: str = Field(min_length=1, max_length=128)
    returned_at: str | None = Field(default=None, max_length=64)
    return_kiosk_id: str | None = Field(default=None, max_length=64)


class ClosedPage(BaseModel):
    """One page of ``GET /v1/rentals:closed``: this kiosk's rentals the cloud closed. The
    cursor is kept in SQLite: an integer it can hold, or the page is not taken."""

    rentals: list[ClosedRental] = Field(max_length=1000)
    cursor: int = Field(ge=0, le=MAX_SEQ)
    more: bool = False


class CloudClient:
    """Signed requests to one cloud API, over one keep-alive connection pool."""

    def __init__(
        self,
        base_url: str,
        kiosk_id: str,
        key: Ed25519PrivateKey,
        timeout_s: float = 10.0,
        gzip_min_bytes: int = 1024,
        ca_file: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        deadline_s: float = 300.0,
        roster_max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        """``deadline_s`` bounds each whole exchange (connect to the last byte of the
        answer), however slowly the server sends; ``roster_max_bytes`` the roster's answer
        (every other answer: ``ANSWER_MAX_BYTES``), as sent and inflated."""
        url = base_url.rstrip("/")
        self.base_url = shown_url(url)  # what messages and logs name: never a password
        self.kiosk_id = kiosk_id
        self._key = key
        self._gzip_min = gzip_min_bytes
        self._clock = clock
        self._deadline_s = deadline_s
        self._roster_max = roster_max_bytes
        self._backend = DeadlineBackend()
        limits = httpx.Limits(max_connections=2, keepalive_expiry=60)
        try:
            if transport is None:
                context = (
                    ssl.create_default_context(cafile=str(ca_file))
                    if ca_file is not None
                    else httpx.create_ssl_context()
                )
                transport = BoundedTransport(context, limits, self._backend)
            self._http = httpx.Client(
                base_url=url,
                timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
                limits=limits,
                transport=transport,
                headers={"User-Agent": f"kiosk-sync/{kiosk_id}", "Accept-Encoding": "gzip"},
            )
        except (OSError, ValueError) as exc:  # e.g. an unreadable CA bundle
            raise CloudError(f"cannot set up the HTTP client for {self.base_url}: {exc}") from None

    def post_batch(self, kiosk_id: str, batch_id: str, bodies: list[str]) -> BatchResponse:
        """Send stored event bodies (JSON text, untouched) as one batch."""
        raw = (
            f'{{"kiosk_id":{json.dumps(kiosk_id)},"batch_id":{json.dumps(batch_id)},'
            f'"events":[{",".join(bodies)}]}}'
        ).encode()
        try:
            response = self.request("POST", BATCH_PATH, raw)
        except CloudRejectedError as exc:
            if _judges_content(exc, len(bodies)):
                raise
            # a redirect, a wrong route, a proxy's page: nothing about these events
            raise CloudUnavailableError(
                f"{exc}; not the cloud API's verdict on these events, which stay pending "
                "(is sync.cloud_url the kiosk cloud API?)",
                exc.status,
            ) from None
        try:
            return BatchResponse.model_validate_json(response.content)
        except ValidationError:
            raise CloudUnavailableError(
                f"{self.base_url}{BATCH_PATH}: the answer is not a batch response "
                f"(status {response.status_code}); is sync.cloud_url the kiosk cloud API?",
                response.status_code,
            ) from None

    def get_roster(self, since: int) -> RosterAnswer:
        """The cloud's answer as sent, with the nonce this request was signed with: a signed
        delta since ``since``, or a signed statement that ``since`` is current.

        Unverified: the roster store (``apply_answer``) checks the signature, the kiosk, the
        version and that the answer carries this nonce. An empty answer (an older cloud's 204) is passed on
        too, and refused there, so it can never pass for "up to date".
        """
        nonce = new_nonce()
        response = self.request(
            "GET", f"{ROSTER_PATH}?since={int(since)}", nonce=nonce, limit=self._roster_max
        )
        return RosterAnswer(response.content, nonce, response.status_code)

    def get_closed_rentals(self, since: int, limit: int = 500) -> ClosedPage:
        """This kiosk's rentals closed in the cloud after cursor ``since`` (one page)."""
        path = f"{CLOSED_PATH}?since={int(since)}&limit={int(limit)}"
        response = self.request("GET", path)
        try:
            return ClosedPage.model_validate_json(response.content)
        except ValidationError:
            raise CloudUnavailableError(
                f"{self.base_url}{CLOSED_PATH}: the answer is not a page of closed rentals "
                f"(status {response.status_code}); is sync.cloud_url the kiosk cloud API?",
                response.status_code,
            ) from None

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        nonce: str | None = None,
        limit: int = ANSWER_MAX_BYTES,
    ) -> httpx.Response:
        """One signed request; the response, its body read (at most ``limit`` bytes, as sent
        and inflated), when its status is 2xx, else a ``CloudError``.

        ``nonce`` is the request's nonce when the caller needs to know it; a new one else.
        """
        headers = {"Content-Type": "application/json"}
        if body and len(body) >= self._gzip_min:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        headers.update(
            sign_request(
                self._key,
                self.kiosk_id,
                method,
                path,
                body,
                int(self._clock()),
                nonce or new_nonce(),
            )
        )
        deadline = time.monotonic() + self._deadline_s
        try:
            with self._backend.until(deadline):
                response = self._read(method, path, body, headers, limit, deadline)
        except AnswerError as exc:
            detail = f"{path.split('?')[0]}: {exc}"
            raise CloudUnavailableError(f"{self.base_url}{detail}", detail=detail) from None
        except httpx.TimeoutException as exc:
            detail = f"timed out ({type(exc).__name__})"
            if time.monotonic() >= deadline:
                detail = f"no whole answer within {self._deadline_s:g} s (sync.request_deadline_s)"
            raise CloudUnavailableError(
                f"{self.base_url}: {detail}", reached=_reached(exc), detail=detail
            ) from None
        except httpx.ConnectError as exc:
            raise CloudUnavailableError(self._connect_message(exc)) from None
        except httpx.TransportError as exc:
            detail = f"{type(exc).__name__}: {exc}"
            raise CloudUnavailableError(
                f"{self.base_url}: {detail}", reached=_reached(exc), detail=detail
            ) from None
        except httpx.InvalidURL as exc:
            raise CloudError(f"sync.cloud_url {self.base_url!r} is not usable: {exc}") from None
        if response.is_success:
            return response
        raise self._error_for(response)

    def _read(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        limit: int,
        deadline: float,
    ) -> httpx.Response:
        """Send, then read the answer's body within ``limit`` and ``deadline``; the response
        holds it decoded (no ``Content-Encoding`` left to apply)."""
        request = self._http.build_request(method, path, content=body, headers=headers)
        streamed = self._http.send(request, stream=True)
        try:
            content = read_body(streamed, limit, deadline)
        finally:
            streamed.close()
        # as received (bytes: any header a server sends), its body decoded here already
        kept = [(k, v) for k, v in streamed.headers.raw if k.lower() != b"content-encoding"]
        return httpx.Response(streamed.status_code, headers=kept, content=content, request=request)

    def _connect_message(self, exc: httpx.ConnectError) -> str:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
            return (
                f"{self.base_url}: the server's TLS certificate is not trusted ({text}); "
                "check sync.cloud_url and sync.ca_file"
            )
        return f"{self.base_url}: cannot connect ({text or type(exc).__name__})"

    def _error_for(self, response: httpx.Response) -> CloudError:
        status = response.status_code
        code, reason, rejected = _read_error(response)
        where = f"{self.base_url}{response.request.url.path}"
        if 300 <= status < 400:
            target = one_line(response.headers.get("Location", "nowhere"), 200)
            reason = (
                f"redirected to {target}; the kiosk follows no redirect (its signed "
                "requests go to sync.cloud_url only)"
            )
        phrase = code or one_line(response.reason_phrase, 64)
        message = f"{where}: {status} {phrase}: {reason}".rstrip(": ")
        if status in (401, 403):
            return CloudAuthError(message, status)
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
            detail = message.removeprefix(f"{where}: ")
            # 429 is about the rate, never about what was sent: it is not narrowed
            return CloudUnavailableError(message, status, retry_after, status != 429, detail)
        return CloudRejectedError(message, status, code, rejected)

    def close(self) -> None:
        self._http.close()


def _reached(exc: httpx.TransportError) -> bool:
    """Whether the request reached the cloud before it failed: a read or write that broke
    or timed out (the cloud may have choked on what was sent), not a connection that never
    opened nor a wait for a free connection."""
    return isinstance(
        exc,
        httpx.ReadTimeout
        | httpx.WriteTimeout
        | httpx.ReadError
        | httpx.WriteError
        | httpx.RemoteProtocolError,
    )


def _judges_content(exc: CloudRejectedError, events: int) -> bool:
    """Whether a refused batch of ``events`` is the cloud API's verdict on what was sent: a
    400, 413, 415 or 422 in the API's error shape (its ``error`` code), or a 413 from
    anything on the path to a batch of several events, which is narrowed (one event is far
    below any proxy's body limit: a proxy refusing it judges the proxy). A redirect, a
    missing route or a proxy's page says nothing about the events."""
    if exc.status == 413 and events > 1:
        return True
    return exc.status in (400, 413, 415, 422) and bool(exc.code)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")
_TAG = re.compile(r"<[^>]{0,200}>")


def one_line(text: str, limit: int) -> str:
    """``text`` as one printable line of at most ``limit`` characters: control characters
    (newlines, terminal escapes) and runs of blanks become one space."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def _read_error(response: httpx.Response) -> tuple[str, str, dict[int, str]]:
    """``(code, reason, {index: reason})`` from an error body, tolerating any content: a
    page that is not the API's (HTML from a proxy) is reduced to its text, on one line."""
    try:
        data = loads_strict(response.content)  # never a RecursionError, however deep
    except (ValueError, UnicodeDecodeError):
        return "", one_line(_TAG.sub(" ", response.text[:2000]), 200), {}
    if not isinstance(data, dict):
        return "", one_line(str(data), 200), {}
    code = data.get("error")
    if not isinstance(code, str):  # not the API's error shape
        return "", one_line(json.dumps(data)[:400], 200), {}
    rejected: dict[int, str] = {}
    for item in data.get("rejected") or []:
        if isinstance(item, dict) and type(item.get("index")) is int:
            rejected[item["index"]] = one_line(str(item.get("reason", "rejected")), 500)
    return one_line(code, 64), one_line(str(data.get("reason", "")), 500), rejected
