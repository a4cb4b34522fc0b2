"""The signed records of a recorder's one chain: segments, events and gaps.

A record is a COSE_Sign1 whose payload is a CBOR map. `prev` is the SHA-256 of the previous
record's COSE bytes exactly as stored, so removing, reordering or editing any record breaks
every later link. The first record of a device carries 32 zero bytes.

Kinds:
  segment  a piece of recording: its data's SHA-256 and size, start/end time, tracks, and the
           phase it belongs to ({} outside phases)
  event    something that happened at time `t`: a phase started or ended, a refused
           pause/stop/mute, the notice to the party (Art. 7), a warning (Art. 5(6)), a bookmark,
           a policy adopted, a low battery, a clock step
  gap      written at boot after recording broke anyway (power loss, crash, storage fault):
           the cause, the last record before it, when the device was last alive, the batteries
"""

import hashlib

from protocol import cbor, schema
from protocol.compat import const

FORMAT_VERSION = const(1)
GENESIS = bytes(32)
KIND_SEGMENT = "segment"
KIND_EVENT = "event"
KIND_GAP = "gap"
TRACKS_AV = ["audio", "video"]  # Art. 2: audio and video captured together
DEFAULT_POLICY = "gx-water-2019/1"  # protocol.policy.name(protocol.policy.annex())

_I = schema.INT
_B = schema.BYTES
_S = schema.STR
_M = schema.MAP

# Fields every record carries.
_COMMON = (
    ("v", _I),
    ("kind", _S),
    ("device_id", _S),
    ("seq", _I),
    ("prev", _B),
    ("policy", _S),
    ("fw", _S),
)
# Fields a segment record adds.
_SEGMENT = (
    ("sha256", _B),
    ("size", _I),
    ("t_start", _I),
    ("t_end", _I),
    ("clock", _M),
    ("tracks", schema.LIST),
    ("truncated", schema.BOOL),
    ("phase", _M),
    ("pre_event_ms", _I),
)
# Fields an event record adds. `detail` depends on the event (see device/recorder.py).
_EVENT = (
    ("t", _I),
    ("clock", _M),
    ("event", _S),
    ("detail", _M),
    ("phase", _M),
)
# Fields a gap record adds.
_GAP = (
    ("cause", _S),
    ("last_seq", _I),
    ("t_last", _I),
    ("t_boot", _I),
    ("clock", _M),
    ("battery_main", _M),
    ("battery_backup", _M),
    ("phase", _M),
)
_KINDS = {KIND_SEGMENT: _SEGMENT, KIND_EVENT: _EVENT, KIND_GAP: _GAP}


class ManifestError(ValueError):
    pass


def record_hash(cose_bytes) -> bytes:
    """The chain link to a record: SHA-256 over its COSE bytes as stored."""
    return hashlib.sha256(cose_bytes).digest()


def encode(fields: dict) -> bytes:
    check(fields)
    return cbor.encode(fields)


def check(fields) -> dict:
    if not isinstance(fields, dict):
        raise ManifestError("manifest payload is not a map")
    kind = fields.get("kind")
    extra = _KINDS.get(kind) if isinstance(kind, str) else None
    if extra is None:
        raise ManifestError("unknown record kind %r" % (kind,))
    bad = schema.violation(fields, _COMMON + extra)
    if bad is not None:
        name, kind = bad
        if kind is None:
            raise ManifestError("manifest lacks %r" % name)
        raise ManifestError("manifest field %r must be %s" % (name, kind))
    if fields["v"] != FORMAT_VERSION:
        raise ManifestError("manifest format %r is not supported" % fields["v"])
    if fields["seq"] < 1 or len(fields["prev"]) != 32:
        raise ManifestError("manifest seq/prev out of range")
    if fields["kind"] == KIND_SEGMENT:
        if len(fields["sha256"]) != 32 or fields["size"] < 0:
            raise ManifestError("segment hash/size out of range")
        if fields["t_end"] < fields["t_start"]:
            raise ManifestError("segment ends before it starts")
    return fields


def decode(payload) -> dict:
    try:
        return check(cbor.decode(payload))
    except cbor.CBORError as exc:
        raise ManifestError("manifest payload: %s" % exc)
