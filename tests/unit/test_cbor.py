"""Tests for protocol.cbor: golden vectors, cbor2 as an independent oracle, strictness, fuzz."""

from collections.abc import Mapping

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.cbor import MAX_DEPTH, CBORError, Tag, decode, decode_from, encode
from tests.micropython_runner import run_micropython
from tests.mpy.check_cbor import check_all, from_json, load_vectors

VECTORS = load_vectors()
VALID = VECTORS["valid"]
INVALID = VECTORS["invalid"]

UINT64_MAX = 2**64 - 1

# ---------------------------------------------------------------------------------------------
# Golden vectors


@pytest.mark.parametrize("vector", VALID, ids=[v["hex"][:24] for v in VALID])
def test_valid_vector_both_ways(vector):
    data = bytes.fromhex(vector["hex"])
    value = from_json(vector["value"])
    assert encode(value) == data
    assert decode(data) == value
    assert decode_from(b"\x00" + data + b"\x00", 1) == (value, 1 + len(data))


@pytest.mark.parametrize("vector", INVALID, ids=[v["why"] for v in INVALID])
def test_invalid_vector_rejected(vector):
    with pytest.raises(CBORError):
        decode(bytes.fromhex(vector["hex"]))


def test_check_script_passes_on_cpython():
    assert check_all(VECTORS) == []


def test_check_script_passes_on_micropython():
    result = run_micropython("tests/mpy/check_cbor.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALL OK" in result.stdout


# ---------------------------------------------------------------------------------------------
# Specific behaviour


def test_map_keys_sorted_bytewise_not_length_first():
    value = {"aa": 1, 100: 2, "z": 3, -1: 4, 10: 5}
    # Keys in encoded order: 0a (10), 1864 (100), 20 (-1), 617a ("z"), 626161 ("aa").
    assert encode(value).hex() == "a50a051864022004617a0362616101"
    # cbor2's canonical mode is RFC 7049 length-first: it puts -1 (20) before 100 (1864).
    assert cbor2.dumps(value, canonical=True) != encode(value)


def test_duplicate_encoded_keys_rejected_on_encode():
    class Weird(int):  # distinct dict keys that encode to the same bytes
        def __hash__(self):
            return id(self)

        def __eq__(self, other):
            return self is other

    with pytest.raises(CBORError, match="duplicate"):
        encode({Weird(1): 0, Weird(1): 1})


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        float("nan"),
        2**64,
        -(2**64) - 1,
        object(),
        "\ud800",
        {1, 2},
        {(1,): 2},
        {True: 1},
        {None: 1},
    ],
    ids=repr,
)
def test_unsupported_values_rejected_on_encode(value):
    with pytest.raises(CBORError):
        encode(value)


def test_bytes_like_and_tuples():
    assert (
        encode(bytearray(b"ab"))
        == encode(b"ab")
        == encode(memoryview(b"ab"))
        == b"\x42ab"
    )
    assert decode(encode((1, (2,)))) == [1, [2]]
    assert type(decode(encode(bytearray(b"x")))) is bytes


def test_depth_bound_on_both_sides():
    nested = []
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    assert decode(encode(nested)) == nested  # MAX_DEPTH containers: fine
    with pytest.raises(CBORError, match="deeper"):
        encode([nested])
    with pytest.raises(CBORError, match="deeper"):
        decode(b"\x81" * MAX_DEPTH + b"\x80")
    cycle = []
    cycle.append(cycle)
    with pytest.raises(CBORError):
        encode(cycle)


def test_errors_name_the_offset():
    with pytest.raises(CBORError, match="offset 3"):
        decode(bytes.fromhex("8301021817"))
    with pytest.raises(CBORError, match="trailing"):
        decode(b"\x01\x01")


def test_lying_length_does_not_allocate():
    # Rejected from the header alone, before any copy of the claimed size.
    for header in ("5bffffffffffffffff", "9bffffffffffffffff", "bbffffffffffffffff"):
        with pytest.raises(CBORError, match="truncated"):
            decode(bytes.fromhex(header) + b"\x00" * 16)


def test_decode_from_reads_a_prefix():
    data = encode([1, "x"]) + encode({"a": b"b"})
    first, end = decode_from(data)
    assert first == [1, "x"]
    assert decode_from(data, end) == ({"a": b"b"}, len(data))
    with pytest.raises(CBORError):
        decode_from(data, len(data))
    with pytest.raises(CBORError):
        decode_from(data, len(data) + 1)


def test_tag_api():
    tag = Tag(18, [b"", {}])
    assert tag.tag == 18 and tag.value == [b"", {}]
    assert (
        tag == Tag(18, [b"", {}]) and tag != Tag(18, []) and tag != Tag(19, [b"", {}])
    )
    assert repr(tag) == "Tag(18, [b'', {}])"
    with pytest.raises(CBORError):
        Tag(-1, 0)
    with pytest.raises(CBORError):
        Tag(2**64, 0)


def test_decode_rejects_non_bytes():
    with pytest.raises(CBORError):
        decode("00")


# ---------------------------------------------------------------------------------------------
# Property tests over the codec's type universe

# cbor2 turns these tag numbers into Python objects (datetime, bignum, ...): keep them out so
# cbor2 hands back a plain CBORTag.
_TAG_NUMBERS = st.sampled_from(
    [6, 7, 21, 23, 24, 33, 1000, 1001, 65536, 2**32, UINT64_MAX]
)
INTS = st.integers(min_value=-(2**64), max_value=UINT64_MAX)
SCALARS = st.one_of(
    INTS, st.text(max_size=30), st.binary(max_size=30), st.booleans(), st.none()
)
KEYS = st.one_of(INTS, st.text(max_size=30), st.binary(max_size=30))


def _containers(children, keys):
    return st.one_of(
        st.lists(children, max_size=5),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=5),
        st.builds(Tag, _TAG_NUMBERS, children),
    )


VALUES = st.recursive(
    SCALARS, lambda children: _containers(children, KEYS), max_leaves=20
)

# Map keys where RFC 7049 length-first and RFC 8949 bytewise order agree (one kind per map).
SHORT_TEXT_KEYS = st.text(max_size=20).filter(lambda s: len(s.encode()) < 24)
SMALL_INT_KEYS = st.integers(min_value=0, max_value=23)
CANONICAL_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(SHORT_TEXT_KEYS, children, max_size=5),
        st.dictionaries(SMALL_INT_KEYS, children, max_size=5),
        st.builds(Tag, _TAG_NUMBERS, children),
    ),
    max_leaves=20,
)


def normalize(value):
    """What decode gives back: tuples -> lists, bytearray -> bytes."""
    if isinstance(value, (list, tuple)):
        return [normalize(item) for item in value]
    if isinstance(value, dict):
        return {normalize(key): normalize(item) for key, item in value.items()}
    if isinstance(value, Tag):
        return Tag(value.tag, normalize(value.value))
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def to_cbor2(value):
    """The same value in cbor2's model (CBORTag for tags)."""
    if isinstance(value, (list, tuple)):
        return [to_cbor2(item) for item in value]
    if isinstance(value, dict):
        return {key: to_cbor2(item) for key, item in value.items()}
    if isinstance(value, Tag):
        return cbor2.CBORTag(value.tag, to_cbor2(value.value))
    return value


def from_cbor2(value):
    """cbor2's decoded value in our model (it gives tuples and frozen maps inside tags)."""
    if isinstance(value, (list, tuple)):
        return [from_cbor2(item) for item in value]
    if isinstance(value, Mapping):
        return {key: from_cbor2(item) for key, item in value.items()}
    if isinstance(value, cbor2.CBORTag):
        return Tag(value.tag, from_cbor2(value.value))
    return value


FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(VALUES)
def test_roundtrip(value):
    encoded = encode(value)
    assert decode(encoded) == normalize(value)
    assert decode_from(encoded + b"\x00") == (normalize(value), len(encoded))


@FAST
@given(VALUES)
def test_cbor2_reads_our_encoding(value):
    assert from_cbor2(cbor2.loads(encode(value))) == normalize(value)


@FAST
@given(CANONICAL_VALUES)
def test_matches_cbor2_canonical_where_orders_agree(value):
    assert encode(value) == cbor2.dumps(to_cbor2(value), canonical=True)


@FAST
@given(VALUES)
def test_encoding_is_a_fixed_point(value):
    # One byte form per value: re-encoding what we decoded gives the same bytes.
    encoded = encode(value)
    assert encode(decode(encoded)) == encoded


def _decode_or_cbor_error(data):
    try:
        decode(data)
    except CBORError:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data):
    _decode_or_cbor_error(data)


@FAST
@given(VALUES, st.data())
def test_fuzz_one_byte_mutations(value, data):
    encoded = bytearray(encode(value))
    index = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[index] = data.draw(st.integers(min_value=0, max_value=255))
    mutated = bytes(encoded)
    try:
        decoded = decode(mutated)
    except CBORError:
        return
    # Anything accepted must be the one deterministic form of what it decoded to.
    assert encode(decoded) == mutated


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_strict_decode_agrees_with_reencoding(data):
    # Every accepted input is byte-identical to the encoding of its value.
    try:
        value = decode(data)
    except CBORError:
        return
    assert encode(value) == data


def test_max_items_bounds_what_a_decoding_may_make():
    bomb = encode([[] for _ in range(1000)])  # 1003 bytes that make 1001 objects
    assert len(decode(bomb, max_items=1001)) == 1000
    with pytest.raises(CBORError, match="more items than allowed"):
        decode(bomb, max_items=1000)
    nested = encode({"a": [1, 2, {"b": [3]}]})  # map, key, list, 1, 2, map, key, list, 3
    assert decode(nested, max_items=9) == {"a": [1, 2, {"b": [3]}]}
    with pytest.raises(CBORError):
        decode(nested, max_items=8)
