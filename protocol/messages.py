"""Dock protocol messages: what each side may say, and how it looks in a frame payload.

A payload is either
  b"M" + deterministic CBOR map  -- a control message, {"t": type, "rid": request id, ...}
  b"D" + <u32 seq, u64 offset> + raw bytes  -- a chunk of segment data
Data chunks skip CBOR so the device can send them straight from its read buffer.

The schema table below is the whole vocabulary; `parse` checks a received message against it,
so neither side ever acts on a field that is missing or of the wrong type.
"""

import struct

from protocol import cbor, schema
from protocol.compat import const

PROTOCOL_VERSION = const(1)
KIND_MESSAGE = const(0x4D)  # "M"
KIND_DATA = const(0x44)  # "D"
DATA_HEADER = "<BIQ"
DATA_HEADER_SIZE = const(13)

_I = schema.INT
_B = schema.BYTES
_S = schema.STR
_L = schema.LIST
_M = schema.MAP
_T = schema.BOOL

# type -> ((field, kind), ...). Extra fields are allowed (newer peers); missing ones are not.
SCHEMA = {
    # host -> device
    "hello": (("rid", _I), ("proto", _I), ("dock", _S)),
    "get_status": (("rid", _I),),
    "ping": (("rid", _I), ("t1", _I)),
    "clock_adjust": (("rid", _I), ("delta_us", _I), ("uncertainty_us", _I)),
    "list": (("rid", _I), ("from_seq", _I), ("limit", _I)),
    "read": (("rid", _I), ("seq", _I), ("offset", _I), ("length", _I)),
    "release": (("rid", _I), ("seq", _I), ("manifest_sha256", _B)),
    "policy_set": (("rid", _I), ("policy", _B)),
    # device -> host
    "identify": (
        ("rid", _I),
        ("proto", _I),
        ("device_id", _S),
        ("fw", _S),
        ("public_key", _B),
        ("limits", _M),
    ),
    "status": (
        ("rid", _I),
        ("battery_main", _M),
        ("battery_backup", _M),
        ("storage", _M),
        ("clock", _M),
        ("health", _M),
        ("pending", _I),
        ("policy", _S),
        ("recording", _T),
    ),
    "pong": (("rid", _I), ("t1", _I), ("t2", _I), ("t3", _I)),
    "clock_set": (("rid", _I), ("before_us", _I), ("after_us", _I)),
    "records": (("rid", _I), ("items", _L), ("more", _T)),
    "read_done": (("rid", _I), ("seq", _I), ("offset", _I), ("length", _I)),
    "released": (("rid", _I), ("seq", _I)),
    "policy_ok": (("rid", _I), ("policy", _S)),
    "error": (("rid", _I), ("code", _S), ("detail", _S)),
}

# Error codes a device may answer with.
E_BAD_REQUEST = "bad_request"
E_UNKNOWN_RECORD = "unknown_record"
E_MISMATCH = "mismatch"
E_BUSY = "busy"
E_INTERNAL = "internal"
E_POLICY = "policy_rejected"


class ProtocolError(ValueError):
    """The peer sent something outside the protocol (the remote side's fault)."""


def check(msg) -> dict:
    """Return `msg` if it is a well-formed message, else raise ProtocolError saying why."""
    if not isinstance(msg, dict):
        raise ProtocolError("message is not a map")
    mtype = msg.get("t")
    fields = SCHEMA.get(mtype) if isinstance(mtype, str) else None
    if fields is None:
        raise ProtocolError("unknown message type %r" % (mtype,))
    bad = schema.violation(msg, fields)
    if bad is not None:
        name, kind = bad
        if kind is None:
            raise ProtocolError("%s: missing field %r" % (mtype, name))
        raise ProtocolError("%s: field %r must be %s" % (mtype, name, kind))
    return msg


def make(mtype: str, **fields) -> dict:
    """Build a message of `mtype`, checked against the schema (a local error if it does not fit)."""
    msg = {"t": mtype}
    msg.update(fields)
    try:
        return check(msg)
    except ProtocolError as exc:
        raise ValueError("cannot build message: %s" % exc)


def encode_message(msg) -> bytes:
    """Payload bytes for a control message."""
    return b"M" + cbor.encode(msg)


def pack_data_header(buf, at: int, seq: int, offset: int) -> None:
    """Write a data chunk's header into buf at `at` (the chunk bytes follow it)."""
    struct.pack_into(DATA_HEADER, buf, at, KIND_DATA, seq, offset)


def encode_data(seq: int, offset: int, data) -> bytes:
    """Payload bytes for a data chunk (the allocating form; devices use pack_data_header)."""
    return struct.pack(DATA_HEADER, KIND_DATA, seq, offset) + bytes(data)


def parse_payload(payload):
    """Split a frame payload.

    Returns ("msg", message) for a control message, or ("data", (seq, offset, memoryview)) for
    a data chunk. Raises ProtocolError for anything else.
    """
    if not payload:
        raise ProtocolError("empty payload")
    kind = payload[0]
    if kind == KIND_MESSAGE:
        try:
            msg = cbor.decode(memoryview(payload)[1:])
        except cbor.CBORError as exc:
            raise ProtocolError("bad CBOR in message: %s" % exc)
        return "msg", check(msg)
    if kind == KIND_DATA:
        if len(payload) < DATA_HEADER_SIZE:
            raise ProtocolError("data chunk shorter than its header")
        _, seq, offset = struct.unpack_from(DATA_HEADER, payload, 0)
        return "data", (seq, offset, memoryview(payload)[DATA_HEADER_SIZE:])
    raise ProtocolError("unknown payload kind 0x%02x" % kind)
