"""Dock protocol messages: what each side may say, and how it looks in a frame payload.

A payload is either
  b"M" + deterministic CBOR map  -- a control message, {"t": type, "rid": request id, ...}
  b"D" + <u32 seq, u64 offset> + raw bytes  -- a chunk of segment data (answers `read`)
  b"R" + <u32 seq, u64 offset> + raw bytes  -- a chunk of a signed record (`read_record`)
Chunks skip CBOR so the device can send them straight from its read buffer. Everything that
can be large moves in chunks whose size the dock chooses (a noisy line carries small frames
only): a listing names each record by its hash and size, and the record itself is read. A
request too large for the line goes the other way in parts: `stage` puts bytes of its encoded
payload into the recorder's one staging buffer (each part answered `staged`), and `run`, with
the staged request's own rid and the SHA-256 of its payload, has it handled as if it had come
in one frame. Answers stay small (a listing is as long as the dock asks).

The schema table below is the whole vocabulary; `parse` checks a received message against it,
so neither side ever acts on a field that is missing or of the wrong type.
"""

import struct

from protocol import cbor, schema
from protocol.compat import const

PROTOCOL_VERSION = const(1)
KIND_MESSAGE = const(0x4D)  # "M"
KIND_DATA = const(0x44)  # "D"
KIND_RECORD = const(0x52)  # "R"
DATA_HEADER = "<BIQ"
DATA_HEADER_SIZE = const(13)

_I = schema.INT
_B = schema.BYTES
_S = schema.STR
_L = schema.LIST
_M = schema.MAP
_T = schema.BOOL
_U32 = schema.U32

MAX_READ = const(16 * 1024 * 1024)  # bytes one read may ask for
READ_RANGES = const(13)  # ranges one read may ask for: offset/length and 12 more
STAGE_MAX = const(4096)  # bytes of a staged request's payload, at most
REQUEST_ITEMS = const(64)  # CBOR items a request decodes into, at most (the largest has 11)
_RID = ("rid", _I, 0, _U32)
_SEQ = ("seq", _I, 1, _U32)  # records are numbered from 1: no request names a 0
_NONCE = const(16)  # protocol.authority.NONCE_SIZE
_HASH = const(32)

# type -> ((field, kind[, lo, hi]), ...): every field a request carries has a range (a length
# for bytes, strings and lists). Extra fields are allowed (newer peers); missing ones are not.
SCHEMA = {
    # host -> device. Before `auth` succeeds a recorder answers only hello and get_status.
    "hello": (_RID, ("proto", _I, 0, 255), ("dock", _S, 0, 64)),
    "auth": (_RID, ("cert", _B, 1, 1024), ("nonce", _B, _NONCE, _NONCE), ("sig", _B, 64, 64)),
    "get_status": (_RID,),
    "ping": (_RID, ("t1", _I, schema.I64_MIN, schema.I64_MAX)),
    "clock_adjust": (_RID, ("delta_us", _I, -(1 << 50), 1 << 50),
                     ("uncertainty_us", _I, 0, 1 << 40)),
    "list": (_RID, ("from_seq", _I, 0, _U32), ("limit", _I, 1, 1024)),
    # A read may name further ranges, `more`: [[offset, length], ...] ascending, after the
    # first and apart (see `ranges`): the holes a noisy line left, asked for in one read.
    "read": (_RID, _SEQ, ("offset", _I, 0, 1 << 48), ("length", _I, 0, MAX_READ),
             ("chunk", _I, 16, 1 << 16)),  # data bytes per chunk: the dock sizes it to the line
    "read_record": (_RID, _SEQ, ("offset", _I, 0, 1 << 16), ("length", _I, 0, 1 << 16),
                    ("chunk", _I, 16, 1 << 16)),
    "release": (_RID, _SEQ, ("manifest_sha256", _B, _HASH, _HASH), ("receipt", _B, 1, 1024)),
    "head": (_RID, ("nonce", _B, _NONCE, _NONCE)),
    "policy_set": (_RID, ("policy", _B, 1, 3800)),
    # sid: the rid of the request being staged; total: the size of its payload
    "stage": (_RID, ("sid", _I, 0, _U32), ("total", _I, 1, STAGE_MAX),
              ("offset", _I, 0, STAGE_MAX - 1), ("data", _B, 1, STAGE_MAX)),
    "run": (_RID, ("sha256", _B, _HASH, _HASH)),  # the staged request whose sid is this rid
    # device -> host
    "identify": (
        _RID,
        ("proto", _I),
        ("device_id", _S),
        ("fw", _S),
        ("public_key", _B),
        ("limits", _M),
        ("nonce", _B),
        ("unit", _B),  # the unit key id the recorder is commissioned with (b"" if none)
    ),
    "auth_ok": (_RID, ("dock", _S), ("sig", _B)),
    "status": (
        _RID,
        ("battery_main", _M),
        ("battery_backup", _M),
        ("storage", _M),
        ("clock", _M),
        ("health", _M),
        ("pending", _I),
        ("policy", _S),
        ("recording", _T),
    ),
    "pong": (_RID, ("t1", _I), ("t2", _I), ("t3", _I)),
    "clock_set": (_RID, ("before_us", _I), ("after_us", _I), ("event", _I)),
    "records": (_RID, ("items", _L), ("more", _T)),  # items: {seq, record_sha256, size, stored}
    "read_done": (_RID, ("seq", _I), ("offset", _I), ("length", _I)),
    "released": (_RID, ("seq", _I)),
    "head_ok": (_RID, ("statement", _B)),
    "staged": (_RID, ("sid", _I), ("offset", _I), ("length", _I)),
    "policy_ok": (_RID, ("policy", _S)),
    "error": (_RID, ("code", _S), ("detail", _S)),
}

# Error codes a device may answer with.
E_BAD_REQUEST = "bad_request"
E_UNAUTHORIZED = "unauthorized"  # no dock has proved its authority, or not this right
E_UNKNOWN_RECORD = "unknown_record"
E_MISMATCH = "mismatch"
E_BUSY = "busy"
E_INTERNAL = "internal"
E_POLICY = "policy_rejected"
E_NOT_STAGED = "not_staged"  # `run`: no staged request with that rid and hash (stage it again)


class ProtocolError(ValueError):
    """The peer sent something outside the protocol (the remote side's fault)."""


def check(msg) -> dict:
    """Return `msg` if it is a well-formed message, else raise ProtocolError saying why."""
    if not isinstance(msg, dict):
        raise ProtocolError("message is not a map")
    for key in msg:
        # Only text keys: a bytes key would make every lookup compare str with bytes (and
        # MicroPython warns on each such comparison: a hostile peer could flood its log).
        if not isinstance(key, str):
            raise ProtocolError("message keys must be text")
    mtype = msg.get("t")
    fields = SCHEMA.get(mtype) if isinstance(mtype, str) else None
    if fields is None:
        # Never the repr of what came: a hostile value can be kilobytes of nesting.
        what = repr(mtype[:32]) if isinstance(mtype, str) else "of type %s" % type(mtype).__name__
        raise ProtocolError("unknown message type %s" % what)
    bad = schema.violation(msg, fields)
    if bad is not None:
        name, kind = bad
        if kind is None:
            raise ProtocolError("%s: missing field %r" % (mtype, name))
        raise ProtocolError("%s: field %r must be %s" % (mtype, name, kind))
    if "more" in msg and (mtype == "read" or mtype == "read_record"):
        ranges(msg)
    return msg


def ranges(msg) -> list:
    """The [offset, length] ranges a read asks for, in order: its own, then `more` (each
    after the end of the one before, the lengths MAX_READ in all); ProtocolError if not."""
    out = [(msg["offset"], msg["length"])]
    more = msg.get("more", [])
    if not isinstance(more, list) or len(more) > READ_RANGES - 1:
        raise ProtocolError("%s: field 'more' must be a list of %d ranges at most"
                            % (msg["t"], READ_RANGES - 1))
    end, total = out[0][0] + out[0][1], out[0][1]
    for pair in more:
        if (not isinstance(pair, list) or len(pair) != 2 or not schema.kind_ok(pair[0], _I)
                or not schema.kind_ok(pair[1], _I) or pair[0] < end or pair[1] < 1
                or pair[0] > 1 << 48):
            raise ProtocolError("%s: 'more' must be ascending [offset, length] ranges"
                                % msg["t"])
        end, total = pair[0] + pair[1], total + pair[1]
        out.append((pair[0], pair[1]))
    if total > MAX_READ:
        raise ProtocolError("%s: more than %d bytes asked for" % (msg["t"], MAX_READ))
    return out


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


def pack_data_header(buf, at: int, seq: int, offset: int, kind: int = KIND_DATA) -> None:
    """Write a chunk's header into buf at `at` (the chunk bytes follow it)."""
    struct.pack_into(DATA_HEADER, buf, at, kind, seq, offset)


def encode_data(seq: int, offset: int, data, kind: int = KIND_DATA) -> bytes:
    """Payload bytes for a chunk (the allocating form; devices use pack_data_header)."""
    return struct.pack(DATA_HEADER, kind, seq, offset) + bytes(data)


def parse_payload(payload, max_items=None):
    """Split a frame payload.

    Returns ("msg", message) for a control message, or ("data" | "record", (seq, offset,
    memoryview)) for a chunk of segment data or of a record. Raises ProtocolError for anything
    else. `max_items` bounds the CBOR items a
    message may decode into (a recorder takes requests with REQUEST_ITEMS at most).
    """
    if not payload:
        raise ProtocolError("empty payload")
    kind = payload[0]
    if kind == KIND_MESSAGE:
        try:
            msg = cbor.decode(memoryview(payload)[1:], max_items)
        except cbor.CBORError as exc:
            raise ProtocolError("bad CBOR in message: %s" % exc)
        return "msg", check(msg)
    if kind == KIND_DATA or kind == KIND_RECORD:
        if len(payload) < DATA_HEADER_SIZE:
            raise ProtocolError("chunk shorter than its header")
        _, seq, offset = struct.unpack_from(DATA_HEADER, payload, 0)
        return ("data" if kind == KIND_DATA else "record"), (
            seq, offset, memoryview(payload)[DATA_HEADER_SIZE:])
    raise ProtocolError("unknown payload kind 0x%02x" % kind)
