"""Deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding) for the protocol's types.

Pure code, no I/O; the same file runs on CPython 3.11 and the MicroPython unix port.

Types: int (64-bit range), bytes/bytearray/memoryview (decoded as bytes), str, list/tuple
(decoded as list), dict, True/False/None and `Tag`. Floats and every other type are refused.

The decoder is strict because encodings get signed and kept as evidence: every value has
exactly one accepted byte form, so anything else (indefinite lengths, long-form arguments,
unsorted or duplicated map keys, floats, odd simple values, bad UTF-8) raises `CBORError`.
Map keys are limited to int, str and bytes: other keys are unhashable in Python, or (True vs 1)
collide in a dict, which would silently drop data.
"""

import struct

from protocol.compat import const

# Containers (array, map, tag) that may enclose an item; bounds recursion on both sides.
MAX_DEPTH = const(16)

_MAJOR_UINT = const(0)
_MAJOR_NEGINT = const(1)
_MAJOR_BYTES = const(2)
_MAJOR_TEXT = const(3)
_MAJOR_ARRAY = const(4)
_MAJOR_MAP = const(5)
_MAJOR_TAG = const(6)
_MAJOR_SIMPLE = const(7)

_AI_1BYTE = const(24)
_AI_2BYTES = const(25)
_AI_4BYTES = const(26)
_AI_8BYTES = const(27)
_AI_INDEFINITE = const(31)

_SIMPLE_FALSE = const(0xF4)
_SIMPLE_TRUE = const(0xF5)
_SIMPLE_NULL = const(0xF6)

_UINT64_MAX = const(0xFFFFFFFFFFFFFFFF)


class CBORError(ValueError):
    """Input that is not (deterministic, supported) CBOR, or a value that cannot be encoded."""


class Tag:
    """A CBOR tag (major type 6): tag number `tag` wrapping `value`."""

    def __init__(self, tag, value):
        if (
            not isinstance(tag, int)
            or isinstance(tag, bool)
            or not 0 <= tag <= _UINT64_MAX
        ):
            raise CBORError(f"tag number must be an int in 0..2**64-1, got {tag!r}")
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return (
            isinstance(other, Tag)
            and self.tag == other.tag
            and self.value == other.value
        )

    # MicroPython does not derive != from __eq__.
    def __ne__(self, other):
        return not self.__eq__(other)

    # Mutable value: like list, not hashable (also keeps it out of map keys).
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self):
        return f"Tag({self.tag}, {self.value!r})"


# ---------------------------------------------------------------------------------------------
# Encoding


def encode(obj) -> bytes:
    """Return the deterministic CBOR encoding of `obj`; raise CBORError if it is unsupported."""
    out = bytearray()
    _encode_item(out, obj, 0)
    return bytes(out)


# The encoder's functions keep few locals and no try block: on MicroPython a call whose frame
# needs more than about 11 slots (locals plus stack; a `for` loop takes 4, a try block 2)
# allocates that frame on the heap, and an item of a record or of the recording meta would
# cost one such allocation each.


def _encode_head(out, major, arg):
    # Shortest argument form (RFC 8949 §4.2.1 "preferred serialization" of the head).
    major <<= 5
    if arg < 24:
        out.append(major | arg)
    elif arg <= 0xFF:
        out.append(major | _AI_1BYTE)
        out.append(arg)
    elif arg <= 0xFFFF:
        out.extend(struct.pack(">BH", major | _AI_2BYTES, arg))
    elif arg <= 0xFFFFFFFF:
        out.extend(struct.pack(">BI", major | _AI_4BYTES, arg))
    else:
        out.extend(struct.pack(">BQ", major | _AI_8BYTES, arg))


def _encode_item(out, obj, depth):
    # Identity checks first: True is an int in CPython (not in MicroPython).
    if obj is False:
        out.append(_SIMPLE_FALSE)
    elif obj is True:
        out.append(_SIMPLE_TRUE)
    elif obj is None:
        out.append(_SIMPLE_NULL)
    elif isinstance(obj, int):
        _encode_int(out, obj)
    elif isinstance(obj, str):
        raw = _utf8(obj)
        _encode_head(out, _MAJOR_TEXT, len(raw))
        out.extend(raw)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        if isinstance(obj, memoryview):
            obj = bytes(obj)  # flattens any shape/format to its raw bytes
        _encode_head(out, _MAJOR_BYTES, len(obj))
        out.extend(obj)
    elif isinstance(obj, (list, tuple)):
        _check_depth(depth, "encoding")
        _encode_array(out, obj, depth)
    elif isinstance(obj, dict):
        _check_depth(depth, "encoding")
        _encode_map(out, obj, depth)
    elif isinstance(obj, Tag):
        _check_depth(depth, "encoding")
        _encode_head(out, _MAJOR_TAG, obj.tag)
        _encode_item(out, obj.value, depth + 1)
    else:
        _unsupported(obj)


def _encode_int(out, obj):
    if obj >= 0:
        if obj > _UINT64_MAX:
            raise CBORError(f"int {obj} is above the CBOR range (2**64-1)")
        _encode_head(out, _MAJOR_UINT, obj)
    else:
        if obj < -_UINT64_MAX - 1:
            raise CBORError(f"int {obj} is below the CBOR range (-2**64)")
        _encode_head(out, _MAJOR_NEGINT, -1 - obj)


def _utf8(text):
    try:
        return text.encode("utf-8")
    except UnicodeError:  # lone surrogates have no UTF-8 form
        raise CBORError("text string is not valid Unicode (lone surrogate)") from None


def _unsupported(obj):
    raise CBORError(f"cannot encode {type(obj).__name__} (unsupported type)")


def _encode_array(out, items, depth):
    _encode_head(out, _MAJOR_ARRAY, len(items))
    depth += 1
    for item in items:
        _encode_item(out, item, depth)


def _encode_map(out, mapping, depth):
    # Keys sort by their encoded bytes (RFC 8949 §4.2.1), so encode each key on its own first.
    depth += 1
    entries = [(_encode_key(key, depth), value) for key, value in mapping.items()]
    entries.sort(key=_entry_key)
    _encode_head(out, _MAJOR_MAP, len(entries))
    previous = None
    for key_bytes, value in entries:
        if key_bytes == previous:
            raise CBORError(f"duplicate map key (encoded {_hex(key_bytes)})")
        previous = key_bytes
        out.extend(key_bytes)
        _encode_item(out, value, depth)


def _encode_key(key, depth):
    if key is True or key is False or not isinstance(key, (int, str, bytes)):
        raise CBORError(
            f"unsupported map key type {type(key).__name__} (int, str, bytes only)"
        )
    key_out = bytearray()
    _encode_item(key_out, key, depth)
    return bytes(key_out)


def _entry_key(entry):
    return entry[0]


def _check_depth(depth, doing):
    if depth >= MAX_DEPTH:
        raise CBORError(f"nesting deeper than {MAX_DEPTH} containers while {doing}")


# ---------------------------------------------------------------------------------------------
# Decoding


def decode(data, max_items=None):
    """Decode `data`, which must hold exactly one CBOR item; raise CBORError otherwise.

    `max_items` bounds how many items (of any depth) the decoding may make: a byte of CBOR can
    become tens of bytes of objects (an empty list), so a receiver on a small heap states
    what its messages can hold and refuses the rest before allocating it.
    """
    view = _as_view(data)
    obj, end = _decode_item(view, 0, 0, None if max_items is None else [max_items])
    if end != len(view):
        raise CBORError(
            f"{len(view) - end} trailing byte(s) after the item at offset {end}"
        )
    return obj


def decode_from(data, offset: int = 0) -> tuple:
    """Decode one CBOR item starting at `offset`; return (obj, offset just past it)."""
    view = _as_view(data)
    if (
        not isinstance(offset, int)
        or isinstance(offset, bool)
        or not 0 <= offset <= len(view)
    ):
        raise CBORError(f"offset {offset!r} outside the buffer (length {len(view)})")
    return _decode_item(view, offset, 0, None)


def _as_view(data):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError(f"can only decode bytes-like data, got {type(data).__name__}")
    return memoryview(data)


def _read_head(view, offset):
    """Return (major, additional info, argument, offset after the head); argument is None
    for major type 7 (simple/float), whose meaning the caller decides."""
    if offset >= len(view):
        raise CBORError(f"truncated: item expected at offset {offset}")
    initial = view[offset]
    major = initial >> 5
    info = initial & 0x1F
    if major == _MAJOR_SIMPLE:
        return major, info, None, offset + 1
    if info < 24:
        return major, info, info, offset + 1
    if info == _AI_INDEFINITE:
        raise CBORError(f"indefinite length (major type {major}) at offset {offset}")
    if info > _AI_8BYTES:
        raise CBORError(f"reserved additional info {info} at offset {offset}")
    size = 1 << (info - _AI_1BYTE)  # 1, 2, 4 or 8 argument bytes
    if offset + 1 + size > len(view):
        raise CBORError(f"truncated: {size}-byte argument at offset {offset}")
    if size == 1:
        arg = view[offset + 1]
    elif size == 2:
        arg = struct.unpack_from(">H", view, offset + 1)[0]
    elif size == 4:
        arg = struct.unpack_from(">I", view, offset + 1)[0]
    else:
        arg = struct.unpack_from(">Q", view, offset + 1)[0]
    # Shortest form only: the value must not fit the next smaller form.
    if arg < (24 if size == 1 else 1 << (4 * size)):
        raise CBORError(f"non-shortest argument {arg} at offset {offset}")
    return major, info, arg, offset + 1 + size


def _decode_item(view, offset, depth, budget):
    start = offset
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise CBORError(f"more items than allowed at offset {start}")
    major, info, arg, offset = _read_head(view, offset)
    if major == _MAJOR_UINT:
        return arg, offset
    if major == _MAJOR_NEGINT:
        return -1 - arg, offset
    if major == _MAJOR_BYTES or major == _MAJOR_TEXT:
        # Check the claimed length against what is there before copying anything.
        if arg > len(view) - offset:
            raise CBORError(f"truncated: string of {arg} bytes at offset {start}")
        end = offset + arg
        raw = bytes(view[offset:end])
        if major == _MAJOR_BYTES:
            return raw, end
        return _decode_text(raw, start), end
    if major == _MAJOR_ARRAY:
        _check_depth_at(depth, start)
        # Each element takes at least one byte: bounds the count before any work.
        if arg > len(view) - offset:
            raise CBORError(f"truncated: array of {arg} items at offset {start}")
        items = []
        for _ in range(arg):
            item, offset = _decode_item(view, offset, depth + 1, budget)
            items.append(item)
        return items, offset
    if major == _MAJOR_MAP:
        _check_depth_at(depth, start)
        return _decode_map(view, offset, arg, depth, start, budget)
    if major == _MAJOR_TAG:
        _check_depth_at(depth, start)
        value, offset = _decode_item(view, offset, depth + 1, budget)
        return Tag(arg, value), offset
    # Major type 7.
    if info == 20:
        return False, offset
    if info == 21:
        return True, offset
    if info == 22:
        return None, offset
    if _AI_2BYTES <= info <= _AI_8BYTES:
        raise CBORError(f"float at offset {start} (floats are not supported)")
    if info == _AI_INDEFINITE:
        raise CBORError(f"unexpected break (0xff) at offset {start}")
    if _AI_8BYTES < info < _AI_INDEFINITE:
        raise CBORError(f"reserved additional info {info} at offset {start}")
    raise CBORError(f"unsupported simple value at offset {start}")


def _decode_map(view, offset, count, depth, start, budget):
    # Each pair takes at least two bytes.
    if count > (len(view) - offset) // 2:
        raise CBORError(f"truncated: map of {count} pairs at offset {start}")
    result = {}
    previous_key = None
    for _ in range(count):
        key_start = offset
        key, offset = _decode_item(view, offset, depth + 1, budget)
        if key is True or key is False or not isinstance(key, (int, str, bytes)):
            raise CBORError(
                f"unsupported map key type at offset {key_start} (int, str, bytes only)"
            )
        key_bytes = bytes(view[key_start:offset])
        # Strictly increasing encoded keys: rejects both misordering and duplicates.
        if previous_key is not None and not previous_key < key_bytes:
            what = "duplicate" if previous_key == key_bytes else "out-of-order"
            raise CBORError(f"{what} map key at offset {key_start}")
        previous_key = key_bytes
        value, offset = _decode_item(view, offset, depth + 1, budget)
        result[key] = value
    return result, offset


def _check_depth_at(depth, offset):
    if depth >= MAX_DEPTH:
        raise CBORError(
            f"nesting deeper than {MAX_DEPTH} containers at offset {offset}"
        )


def _decode_text(raw, offset):
    try:
        text = raw.decode("utf-8")
    except UnicodeError:
        raise CBORError(f"invalid UTF-8 in text string at offset {offset}") from None
    # MicroPython's decoder lets overlong forms, surrogates and > U+10FFFF through, so
    # non-ASCII text (fewer characters than bytes) gets a strict check of its own.
    if len(text) != len(raw) and not _utf8_is_valid(raw):
        raise CBORError(f"invalid UTF-8 in text string at offset {offset}")
    return text


def _utf8_is_valid(raw):
    """RFC 3629 §4 well-formed UTF-8: no overlongs, surrogates or code points > U+10FFFF."""
    index = 0
    length = len(raw)
    while index < length:
        lead = raw[index]
        if lead < 0x80:
            index += 1
            continue
        # Allowed range of the first continuation byte, and number of continuation bytes.
        low, high = 0x80, 0xBF
        if 0xC2 <= lead <= 0xDF:
            count = 1
        elif lead == 0xE0:
            count, low = 2, 0xA0
        elif lead == 0xED:
            count, high = 2, 0x9F
        elif 0xE1 <= lead <= 0xEF:
            count = 2
        elif lead == 0xF0:
            count, low = 3, 0x90
        elif lead == 0xF4:
            count, high = 3, 0x8F
        elif 0xF1 <= lead <= 0xF3:
            count = 3
        else:
            return False
        if index + count >= length:  # truncated sequence
            return False
        if not low <= raw[index + 1] <= high:
            return False
        for follow in range(index + 2, index + 1 + count):
            if not 0x80 <= raw[follow] <= 0xBF:
                return False
        index += 1 + count
    return True


def _hex(data):
    return "".join(f"{byte:02x}" for byte in data)
