"""The CBOR decoder's rules (protocol/cbor.py), one per test: well-formed UTF-8 only (RFC 3629
§4, at each boundary), no floats, tags numbered by ints, and bytes of any memoryview shape."""

from __future__ import annotations

import pytest

from protocol import cbor


def text(raw: bytes) -> bytes:
    assert len(raw) < 24
    return bytes([0x60 + len(raw)]) + raw


@pytest.mark.parametrize("char", ["\u0080", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff",
                                  "\U00010000", "\U0003ffff", "\U0010ffff"])
def test_utf8_at_each_boundary_decodes(char: str) -> None:
    assert cbor.decode(text(char.encode())) == char


@pytest.mark.parametrize("raw", [
    b"\xc2\x7f", b"\xc2\xc0",  # a continuation byte out of 80..BF
    b"\xc0\x80", b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xed\xa0\x80", b"\xed\xbf\xbf",  # surrogates
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",  # above U+10FFFF
    b"\xe1\x80\x7f", b"\xf1\x80\x80\xc0", b"\xf1\x80\x7f\x80",  # a later continuation byte
    b"\xc2", b"\xe1\x80", b"\xf1\x80\x80", b"a\xe1",  # truncated
])
def test_ill_formed_utf8_is_refused(raw: bytes) -> None:
    with pytest.raises(cbor.CBORError, match="UTF-8|Unicode|text"):
        cbor.decode(text(raw))


@pytest.mark.parametrize("raw", [b"\xc2", b"\xe1\x80", b"\xf1\x80\x80", b"a\xe1", b"\xf0\x90"])
def test_the_strict_check_refuses_a_truncated_sequence_within_its_bytes(raw: bytes) -> None:
    """MicroPython's decoder lets a truncated sequence through to the strict check (CPython's
    stops it first): the check says no, it does not read past the end."""
    assert cbor._utf8_is_valid(raw) is False


@pytest.mark.parametrize("data", [b"\xf9\x3c\x00", b"\xfa\x3f\x80\x00\x00",
                                  b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00"])
def test_floats_are_refused_as_floats(data: bytes) -> None:
    with pytest.raises(cbor.CBORError, match="floats are not supported"):
        cbor.decode(data)


def test_a_tag_number_must_be_an_int_not_a_bool() -> None:
    with pytest.raises(cbor.CBORError, match="tag number"):
        cbor.Tag(True, 1)


def test_a_memoryview_encodes_as_its_raw_bytes_whatever_its_format() -> None:
    view = memoryview(bytearray(b"abcd")).cast("H")  # two 2-byte items
    assert cbor.encode(view) == cbor.encode(b"abcd")


def test_tags_count_as_nesting() -> None:
    value: object = 0
    for _ in range(16):
        value = cbor.Tag(1, value)
    cbor.encode(value)
    with pytest.raises(cbor.CBORError, match="nesting deeper than 16"):
        cbor.encode(cbor.Tag(1, value))


@pytest.mark.parametrize("data, why", [
    (b"\x44ab", "truncated: string of 4 bytes"),
    (b"\xa2\x01\x02\x03", "truncated: map of 2 pairs"),
    (b"\xfc", "reserved additional info 28"),
    (b"\xfe", "reserved additional info 30"),
    (b"\xff", "unexpected break"),
    (b"\xfa\x3f\x80", "floats are not supported"),
])
def test_what_is_refused_says_why(data: bytes, why: str) -> None:
    with pytest.raises(cbor.CBORError, match=why):
        cbor.decode(data)


@pytest.mark.parametrize("offset", [-1, 2, True, "0"])
def test_decode_from_refuses_an_offset_outside_the_buffer(offset: object) -> None:
    with pytest.raises(cbor.CBORError, match="outside the buffer"):
        cbor.decode_from(b"\x01", offset)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [b"\xc3\x7f", b"\xc3\xc0"])
def test_the_strict_check_refuses_a_two_byte_sequence_whose_continuation_is_out_of_80_to_bf(
        raw: bytes) -> None:
    """0x7F and 0xC0 sit just outside the continuation range, on either side."""
    assert cbor._utf8_is_valid(raw) is False


def test_the_strict_check_refuses_the_overlong_lead_byte_c1() -> None:
    assert cbor._utf8_is_valid(b"\xc1\x80") is False  # would be U+0040, "@", overlong


@pytest.mark.parametrize("raw", [b"\xe1\x80\x41", b"\xf1\x80\x80\x41"])
def test_the_strict_check_refuses_a_sequence_whose_last_continuation_byte_is_ascii(
        raw: bytes) -> None:
    assert cbor._utf8_is_valid(raw) is False
