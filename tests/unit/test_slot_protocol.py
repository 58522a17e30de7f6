"""The slot-board codec: the documented test vectors, and properties of every message."""

from __future__ import annotations

import ast
import contextlib
import enum
import re
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware import errors, messages
from hardware.errors import PayloadError, ProtocolError
from hardware.fields import U8, U64, Bool, Charge, Enum8, Field, Records, Temperature, Text
from hardware.messages import ALL_MESSAGES, Eject, Message, SlotReport, field_names
from hardware.protocol import (
    MAX_FRAME,
    MAX_STUFFED,
    Packet,
    StreamDecoder,
    crc16,
    decode,
    decode_body,
    encode,
    frame_body,
    wire_request_id,
)
from tests.conftest import REPO

DOC = REPO / "docs" / "slot-protocol.md"
NAMES: dict[str, Any] = {cls.__name__: cls for cls in ALL_MESSAGES}
NAMES["SlotReport"] = SlotReport
NAMES.update(
    {
        name: value
        for name, value in vars(messages).items()
        if isinstance(value, type) and issubclass(value, enum.IntEnum) and value is not enum.IntEnum
    }
)


def _literal(node: ast.expr) -> Any:
    """Evaluate the small Python subset the vectors use: calls, enums, literals, tuples."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, ast.Tuple):
        return tuple(_literal(item) for item in node.elts)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return getattr(NAMES[node.value.id], node.attr)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_literal(arg) for arg in node.args]
        kwargs = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}
        return NAMES[node.func.id](*args, **kwargs)
    raise ValueError(f"unsupported expression in a vector: {ast.dump(node)}")


def load_vectors() -> list[dict[str, str]]:
    blocks = re.findall(r"```vector\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    vectors = []
    for block in blocks:
        entry = {}
        for line in block.strip().splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        vectors.append(entry)
    return vectors


VECTORS = load_vectors()
GOOD = [vector for vector in VECTORS if "message" in vector]
BAD = [vector for vector in VECTORS if "error" in vector]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_the_document_has_vectors_for_every_message_and_for_bad_frames() -> None:
    covered = {type(_literal(ast.parse(v["message"], mode="eval").body)) for v in GOOD}
    assert covered == set(ALL_MESSAGES)
    assert {v["error"] for v in BAD} >= {
        "ChecksumError",
        "UnknownMessageError",
        "FrameTooLongError",
        "FramingError",
        "PayloadError",
    }


def _documented(cell: str) -> list[str]:
    """The field names a payload cell of section 6 lists, in its order."""
    alias = re.match(r"as `(\w+)`", cell)
    if alias:
        return _documented_of(NAMES[alias.group(1)])
    return re.findall(r"`(\w+):", cell)


def _documented_of(cls: type[Message] | type[SlotReport]) -> list[str]:
    """What the document should list for ``cls``: its fields in wire order, a list of
    records shown as its count byte."""
    wire = dict(cls.WIRE)
    return ["count" if isinstance(wire[name], Records) else name for name in field_names(cls)]


def test_the_message_tables_list_every_field_in_wire_order() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (0x[0-9A-F]{2}) \| `(\w+)` \| ([^|]*) \|", text, re.MULTILINE)
    tabled = {}
    for type_byte, name, payload in rows:
        cls = NAMES[name]
        assert int(type_byte, 16) == cls.TYPE, f"{name}: the table says {type_byte}"
        documented = _documented(payload)
        assert documented == _documented_of(cls), f"{name}: the table lists {documented}"
        tabled[cls] = type_byte
    assert set(tabled) == set(ALL_MESSAGES), "a message is missing from section 6"
    report = re.search(r"^A slot report: (.*?)\n\n", text, re.MULTILINE | re.S)
    assert report is not None
    documented = _documented(report.group(1))
    assert documented == field_names(SlotReport), f"the slot report lists {documented}"


@pytest.mark.parametrize("vector", GOOD, ids=[v["name"] for v in GOOD])
def test_vector_encodes_and_decodes(vector: dict[str, str]) -> None:
    message = _literal(ast.parse(vector["message"], mode="eval").body)
    seq = int(vector["seq"], 16)
    assert frame_body(seq, message) == _hex(vector["body"])
    assert encode(seq, message) == _hex(vector["wire"])
    assert decode(_hex(vector["wire"])) == Packet(seq, message)


@pytest.mark.parametrize("vector", BAD, ids=[v["name"] for v in BAD])
def test_bad_vector_is_rejected_with_its_error(vector: dict[str, str]) -> None:
    expected = getattr(errors, vector["error"])
    with pytest.raises(ProtocolError) as caught:
        decode(_hex(vector["wire"]))
    assert type(caught.value) is expected
    items = StreamDecoder().feed(_hex(vector["wire"]))
    assert len(items) == 1 and type(items[0]) is expected


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1


def test_out_of_range_values_do_not_encode() -> None:
    for message in (
        Eject(0, 1),
        Eject(3, -1),
        messages.Inserted(1, 101, "PB1"),
        messages.Inserted(1, 50, "é"),
        messages.Inserted(1, 50, "X" * 17),
        messages.SetEnabled(1, 1),  # type: ignore[arg-type]
    ):
        with pytest.raises(PayloadError):
            encode(1, message)


def test_a_run_without_delimiter_is_dropped_and_decoding_goes_on() -> None:
    decoder = StreamDecoder()
    good = encode(5, Eject(2, 77))
    items = decoder.feed(b"\x55" * 5000) + decoder.feed(b"\x55" * 5000 + good)
    assert [type(item) for item in items] == [errors.FrameTooLongError, Packet]
    assert len(decoder._buffer) <= MAX_STUFFED


def test_wire_request_id_is_stable() -> None:
    assert wire_request_id("01J0000000000000000000000") == wire_request_id(
        "01J0000000000000000000000"
    )
    assert wire_request_id("a") != wire_request_id("b")


# -- properties ----------------------------------------------------------------------------


def _strategy(field: Field) -> st.SearchStrategy[Any]:
    if isinstance(field, U8):
        return st.integers(field.lo, field.hi)
    if isinstance(field, U64):
        return st.integers(0, 2**64 - 1)
    if isinstance(field, Bool):
        return st.booleans()
    if isinstance(field, Enum8):
        return st.sampled_from(list(field.kind))
    if isinstance(field, Charge):
        return st.none() | st.integers(0, 100)
    if isinstance(field, Temperature):
        return st.none() | st.integers(-127, 127)
    if isinstance(field, Text):
        alphabet = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
        return st.text(alphabet, max_size=field.max_len)
    if isinstance(field, Records):
        return st.lists(_record(field.kind), max_size=field.max_items).map(tuple)
    raise AssertionError(f"no strategy for {field!r}")


def _record(cls: type[Any]) -> st.SearchStrategy[Any]:
    wire = dict(cls.WIRE)
    assert [f.name for f in fields(cls)] == list(wire), f"{cls.__name__}: fields out of order"
    return st.builds(cls, **{name: _strategy(field) for name, field in wire.items()})


MESSAGES = st.one_of([_record(cls) for cls in ALL_MESSAGES])
SEQ = st.integers(0, 255)


@given(SEQ, MESSAGES)
def test_every_message_round_trips(seq: int, message: Message) -> None:
    wire = encode(seq, message)
    assert len(wire) <= MAX_FRAME
    assert b"\x00" not in wire[1:-1]
    assert decode(wire) == Packet(seq, message)


@given(st.lists(st.tuples(SEQ, MESSAGES), max_size=5), st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_frames_survive_any_chunking(
    packets: list[tuple[int, Message]], data: st.DataObject
) -> None:
    stream = b"".join(encode(seq, message) for seq, message in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = StreamDecoder()
    out: list[Any] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert out == [Packet(seq, message) for seq, message in packets]


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)
    for item in StreamDecoder().feed(data):
        assert isinstance(item, Packet | ProtocolError)
        if isinstance(item, Packet):
            assert crc16(item.body[:-2]) == int.from_bytes(item.body[-2:], "big")


@given(
    st.lists(st.tuples(st.binary(max_size=40), SEQ, MESSAGES), min_size=1, max_size=6),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.integers(1, 255),
)
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
def test_decoder_resynchronises_after_garbage_and_corruption(
    parts: list[tuple[bytes, int, Message]], hits: list[int], flip: int
) -> None:
    """Packets come only with a good CRC, and every frame whose bytes arrive intact is
    recovered, whatever noise came before it."""
    stream = bytearray()
    spans = []
    for garbage, seq, message in parts:
        stream += garbage
        wire = encode(seq, message)
        spans.append((len(stream), len(stream) + len(wire), Packet(seq, message)))
        stream += wire
    damaged = {hit % len(stream) for hit in hits}
    for position in damaged:
        stream[position] ^= flip
    out = StreamDecoder().feed(bytes(stream))
    packets = [item for item in out if isinstance(item, Packet)]
    for packet in packets:
        assert crc16(packet.body[:-2]) == int.from_bytes(packet.body[-2:], "big")
        assert decode_body(packet.body) == packet
    intact = [p for start, end, p in spans if not any(start <= d < end for d in damaged)]
    remaining = iter(packets)
    assert all(any(p == got for got in remaining) for p in intact), "an intact frame was lost"


def test_documented_scenario_file_is_valid() -> None:
    import tomllib

    from hardware.sim_board import SimConfig

    example = re.search(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert example is not None
    config = SimConfig.model_validate(tomllib.loads(example.group(1)))
    assert config.events and config.jammed


# -- answers checked against their request (hardware.agreement) ----------------------------

_slots = st.integers(1, 255)
_ids = st.integers(0, 2**64 - 1)


@given(
    request=st.builds(messages.Eject, slot=_slots, request_id=_ids),
    reply=st.builds(
        messages.EjectReply,
        slot=_slots,
        request_id=_ids,
        outcome=st.sampled_from(messages.EjectOutcome),
        duplicate=st.booleans(),
        powerbank_id=st.text("AB", max_size=3),
    ),
    same=st.booleans(),
)
def test_an_eject_reply_is_accepted_only_when_it_agrees_with_the_eject(
    request: messages.Eject, reply: messages.EjectReply, same: bool
) -> None:
    from hardware.agreement import check_eject_reply
    from hardware.errors import ContradictionError

    if same:
        reply = messages.EjectReply(request.slot, request.request_id, *fields_after(reply, 2))
    agrees = (reply.slot, reply.request_id) == (request.slot, request.request_id) and (
        reply.duplicate or reply.outcome == messages.EjectOutcome.ACCEPTED
    )
    try:
        check_eject_reply(request, reply, None)
    except ContradictionError:
        assert not agrees
    else:
        assert agrees


@given(
    note=st.builds(messages.Ejected, slot=_slots, request_id=_ids, powerbank_id=st.just("PB1"))
    | st.builds(messages.Jammed, slot=_slots, request_id=_ids),
    slot=_slots,
)
def test_an_outcome_naming_another_slot_is_refused(
    note: messages.Ejected | messages.Jammed, slot: int
) -> None:
    from hardware.agreement import check_outcome
    from hardware.errors import ContradictionError

    request = messages.Eject(slot, note.request_id)
    reply = messages.EjectReply(slot, note.request_id, messages.EjectOutcome.ACCEPTED, False, "PB1")
    if note.slot == slot:
        check_outcome(request, note, reply)
    else:
        with pytest.raises(ContradictionError, match=f"names slot {note.slot}"):
            check_outcome(request, note, reply)


def fields_after(message: Any, skip: int) -> list[Any]:
    return [getattr(message, name) for name in field_names(type(message))[skip:]]


def test_every_lie_of_the_simulator_is_documented() -> None:
    from hardware.sim_lies import LIES

    text = DOC.read_text(encoding="utf-8")
    assert [lie for lie in LIES if f"`{lie}`" not in text] == []
