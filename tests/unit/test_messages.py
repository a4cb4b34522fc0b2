"""Messages: schema, golden payloads, byte-for-byte agreement with cbor2, hostile input."""

import json
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import messages

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "protocol.json").read_text())

u64 = st.integers(min_value=0, max_value=2**63 - 1)
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
text = st.text(max_size=40)
battery = st.fixed_dictionaries({"mv": u64, "pct": st.integers(0, 100), "charging": st.booleans()})
KIND_STRATEGY = {"int": i64, "bytes": st.binary(max_size=64), "str": text, "bool": st.booleans()}
FIELD_STRATEGY = {
    "battery_main": battery,
    "battery_backup": battery,
    "storage": st.fixed_dictionaries({"free": u64, "total": u64}),
    "clock": st.fixed_dictionaries(
        {"state": st.sampled_from(["unset", "synced", "holdover"]), "synced_at": u64,
         "uncertainty_us": u64}),
    "health": st.fixed_dictionaries({"faults": st.lists(text, max_size=3)}),
    "limits": st.fixed_dictionaries({"chunk": u64, "max_read": u64, "max_request": u64}),
    "items": st.lists(st.fixed_dictionaries(
        {"seq": u64, "record": st.binary(max_size=400), "stored": u64}), max_size=4),
}


def field_strategy(spec: tuple) -> st.SearchStrategy:
    """Values a field may take: its kind, within its bounds when it has them."""
    name, kind = spec[0], spec[1]
    if name in FIELD_STRATEGY:
        return FIELD_STRATEGY[name]
    if len(spec) == 4:
        lo, hi = spec[2], spec[3]
        if kind == "int":
            return st.integers(lo, hi)
        if kind == "bytes":
            return st.binary(min_size=lo, max_size=min(hi, lo + 64))
        if kind == "str":
            return st.text(min_size=lo, max_size=min(hi, 40))
    return KIND_STRATEGY.get(kind, st.just(None))


def message_strategy(mtype: str) -> st.SearchStrategy[dict]:
    fields = {spec[0]: field_strategy(spec) for spec in messages.SCHEMA[mtype]}
    return st.fixed_dictionaries(fields).map(lambda f: {"t": mtype, **f})


ALL_MESSAGES = st.one_of([message_strategy(t) for t in sorted(messages.SCHEMA)])


@settings(max_examples=300, deadline=None)
@given(ALL_MESSAGES)
def test_every_message_type_agrees_with_cbor2_byte_for_byte(msg):
    payload = messages.encode_message(msg)
    # All protocol keys are short text, where RFC 8949 and cbor2's canonical order agree.
    assert payload[1:] == cbor2.dumps(msg, canonical=True)
    assert messages.parse_payload(payload) == ("msg", msg)


def test_golden_messages():
    for v in VECTORS["messages"]:
        payload = bytes.fromhex(v["payload"])
        kind, msg = messages.parse_payload(payload)
        assert kind == "msg"
        assert messages.encode_message(msg) == payload
        assert cbor2.loads(payload[1:]) == msg


def test_data_chunk_layout():
    v = VECTORS["data"][0]
    payload = messages.encode_data(v["seq"], v["offset"], bytes.fromhex(v["data"]))
    assert payload.hex() == v["payload"]
    kind, (seq, offset, data) = messages.parse_payload(payload)
    assert (kind, seq, offset, bytes(data)) == ("data", 3, 65536, b"\x00\xff\x10")
    buf = bytearray(messages.DATA_HEADER_SIZE + 3)
    messages.pack_data_header(buf, 0, 3, 65536)
    buf[messages.DATA_HEADER_SIZE :] = b"\x00\xff\x10"
    assert bytes(buf) == payload


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"", "empty"),
        (b"X\x00", "unknown payload kind"),
        (b"M" + cbor2.dumps([1, 2]), "not a map"),
        (b"M" + cbor2.dumps({"t": "nope", "rid": 1}, canonical=True), "unknown message type"),
        (
            b"M" + cbor2.dumps({"t": "read", "rid": 1, "seq": 1, "offset": 0}, canonical=True),
            "missing field",
        ),
        (b"M" + cbor2.dumps({"t": "ping", "rid": 1, "t1": "soon"}, canonical=True), "must be int"),
        (b"M" + cbor2.dumps({"t": "ping", "rid": True, "t1": 1}, canonical=True), "must be int"),
        # every request field has a range: extreme values never reach a handler
        (b"M" + cbor2.dumps({"t": "read", "rid": 1, "seq": 1, "offset": 2**64 - 1,
                             "length": 1, "chunk": 64}, canonical=True), "'offset' must be within"),
        (b"M" + cbor2.dumps({"t": "read", "rid": 1, "seq": 1, "offset": 0, "length": 1,
                             "chunk": 1}, canonical=True), "'chunk' must be within 16..65536"),
        # records are numbered from 1: a request for record 0 names a file that is no record
        (b"M" + cbor2.dumps({"t": "release", "rid": 1, "seq": 0, "manifest_sha256": bytes(32),
                             "receipt": b"r"}, canonical=True), "'seq' must be within 1.."),
        # more ranges: ascending, after the first, within one read's size, a few at most
        (b"M" + cbor2.dumps({"t": "read", "rid": 1, "seq": 1, "offset": 100, "length": 10,
                             "chunk": 64, "more": [[50, 10]]}, canonical=True), "ascending"),
        (b"M" + cbor2.dumps({"t": "read", "rid": 1, "seq": 1, "offset": 0, "length": 10,
                             "chunk": 64, "more": [[20, 0]]}, canonical=True), "ascending"),
        (b"M" + cbor2.dumps({"t": "read_record", "rid": 1, "seq": 1, "offset": 0, "length": 1,
                             "chunk": 64, "more": [[2 * i + 2, 1] for i in range(13)]},
                            canonical=True), "12 ranges at most"),
        (b"M" + cbor2.dumps({"t": "read", "rid": 1, "seq": 1, "offset": 0, "length": 1,
                             "chunk": 64, "more": [[10, messages.MAX_READ]]}, canonical=True),
         "more than"),
        (b"M" + cbor2.dumps({"t": "read", "rid": 1, "seq": 1, "offset": 0, "length": 1,
                             "chunk": 64, "more": [[10, "1"]]}, canonical=True), "ascending"),
        (b"M" + cbor2.dumps({"t": "clock_adjust", "rid": 1, "delta_us": 2**64 - 1,
                             "uncertainty_us": 0}, canonical=True), "'delta_us' must be within"),
        (b"M" + cbor2.dumps({"t": "ping", "rid": -1, "t1": 1}, canonical=True),
         "'rid' must be within"),
        (b"M" + cbor2.dumps({"t": "release", "rid": 1, "seq": 1, "manifest_sha256": b"x",
                             "receipt": b"r"}, canonical=True),
         "'manifest_sha256' must be a length of within 32..32"),
        (b"M" + cbor2.dumps({"t": "hello", "rid": 1, "proto": 1, "dock": "d" * 65},
                            canonical=True), "'dock' must be a length of within 0..64"),
        (b"M\xff", "bad CBOR"),
        (b"D\x00\x01", "shorter than its header"),
    ],
)
def test_bad_payloads_raise_protocol_errors_that_say_why(payload, why):
    with pytest.raises(messages.ProtocolError, match=why):
        messages.parse_payload(payload)


def test_make_refuses_a_message_that_breaks_the_schema():
    with pytest.raises(ValueError, match="missing field 'offset'"):
        messages.make("read", rid=1, seq=1, length=5)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_payloads_only_ever_raise_protocol_error(data):
    try:
        messages.parse_payload(data)
    except messages.ProtocolError:
        pass


def test_a_request_that_decodes_into_too_many_objects_is_refused():
    """A few KB of nested empty lists would be tens of KB of objects on a recorder's heap."""
    bomb = b"M" + cbor2.dumps({"t": "list", "rid": 1, "from_seq": 1, "limit": 1,
                               "x": [[] for _ in range(3000)]}, canonical=True)
    with pytest.raises(messages.ProtocolError, match="more items than allowed"):
        messages.parse_payload(bomb, messages.REQUEST_ITEMS)
    every = [v for v in VECTORS["messages"]]
    for v in every:  # every real request fits the bound with room to spare
        messages.parse_payload(bytes.fromhex(v["payload"]), messages.REQUEST_ITEMS)


def test_a_read_of_several_ranges_names_them_in_order():
    msg = messages.check({"t": "read", "rid": 1, "seq": 1, "offset": 0, "length": 10,
                          "chunk": 64, "more": [[10, 5], [100, 1]]})
    assert messages.ranges(msg) == [(0, 10), (10, 5), (100, 1)]
