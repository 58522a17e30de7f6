"""Reading a batch off the wire: size, gzip, JSON, envelope, then each event. Pure.

Order of checks, cheapest first, each with its own answer: an oversize body (413), a body
that is not gzip when it says so, or not strict JSON (400: not UTF-8, NaN or Infinity, a
key twice in one object, nesting too deep), an envelope that is not a batch
(422), too many events (413), a batch for another kiosk than the signer (403), then every
event on its own: unknown type, unsupported schema version, a string no store can keep
(NUL, a lone surrogate), bad fields or a value of the wrong JSON type, another kiosk's
event, a time before 1970 or in the future, an id twice in one batch. Any rejected event makes the
whole batch a 422 that names each one, and nothing of it is stored.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from cloud_sync.errors import EventError, WireError
from cloud_sync.events import (
    BatchRequest,
    Event,
    Rejection,
    check_occurred_at,
    describe,
    parse_event,
)
from cloud_sync.server.problems import Problem
from cloud_sync.wire_values import loads_strict, unstorable


@dataclass(frozen=True)
class Limits:
    max_decoded_bytes: int
    max_batch_events: int
    max_future: timedelta


def decode_body(body: bytes, content_encoding: str | None, max_decoded: int) -> bytes:
    """The body, gunzipped when it says ``Content-Encoding: gzip``, never past ``max_decoded``.

    Every gzip member is read (RFC 1952: a file may be several members, one after the
    other), all of them together within ``max_decoded`` (413 past it, however small the
    body: a bomb is never inflated further); bytes after the last member that are not a
    gzip member are a ``400 malformed_gzip``, never ignored."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise Problem(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: use gzip")
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(rest, max_decoded - size + 1)
        except zlib.error as exc:
            what = "the body is" if not parts else f"the bytes after gzip member {len(parts)} are"
            raise Problem(400, "malformed_gzip", f"{what} not valid gzip ({exc})") from None
        size += len(data)
        if size > max_decoded or inflater.unconsumed_tail:
            raise Problem(
                413, "body_too_large", f"the decompressed body exceeds {max_decoded} bytes"
            )
        if not inflater.eof:
            raise Problem(400, "malformed_gzip", "the gzip body is truncated")
        parts.append(data)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)


def parse_batch(
    data: bytes, signer: str, limits: Limits, now: datetime
) -> tuple[BatchRequest, list[Event]]:
    """Validate a decoded batch; ``Problem`` for anything a kiosk must not send."""
    try:
        raw = loads_strict(data)
    except WireError as exc:
        raise Problem(400, "malformed_json", f"the body is not strict JSON: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("events"), list):
        count = len(raw["events"])
        if count > limits.max_batch_events:
            raise Problem(
                413,
                "batch_too_large",
                f"the batch has {count} events; at most {limits.max_batch_events} per batch",
            )
    try:
        batch = BatchRequest.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise Problem(422, "invalid_batch", describe(exc)) from None
    if batch.kiosk_id != signer:
        raise Problem(
            403,
            "wrong_kiosk",
            f"the batch is for kiosk {batch.kiosk_id!r} but was signed by {signer!r}",
        )
    events: list[Event] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for index, item in enumerate(batch.events):
        raw_id = item.get("id")
        readable = isinstance(raw_id, str) and len(raw_id) <= 64 and unstorable(raw_id) is None
        shown_id = raw_id if readable else None
        try:
            event = parse_event(item)
            if event.kiosk_id != signer:
                raise EventError(
                    f"kiosk_id: the event belongs to kiosk {event.kiosk_id!r}, "
                    f"not to the signer {signer!r}"
                )
            check_occurred_at(event, now, limits.max_future)
            if event.id in seen:
                raise EventError(f"id: {event.id} appears twice in this batch")
        except EventError as exc:
            rejected.append(Rejection(index=index, id=shown_id, reason=str(exc)))
            continue
        seen.add(event.id)
        events.append(event)
    if rejected:
        raise Problem(
            422,
            "rejected_events",
            f"{len(rejected)} of {len(batch.events)} events are invalid; nothing was stored",
            rejected=rejected,
        )
    return batch, events
