"""The signed record: one per segment (later also events and gaps), chained by hash.

A record is a COSE_Sign1 whose payload is a CBOR map. `prev` is the SHA-256 of the previous
record's COSE bytes exactly as stored, so removing, reordering or editing any record breaks
every later link. The first record of a device carries 32 zero bytes.
"""

import hashlib

from protocol import cbor

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


FORMAT_VERSION = const(1)
GENESIS = bytes(32)
KIND_SEGMENT = "segment"
TRACKS_AV = ["audio", "video"]  # Art. 2: audio and video captured together
DEFAULT_POLICY = "gx-water-2019/annex-1"

_I = "int"
_B = "bytes"
_S = "str"

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
    ("clock", dict),
    ("tracks", list),
    ("truncated", bool),
)


class ManifestError(ValueError):
    pass


def record_hash(cose_bytes) -> bytes:
    """The chain link to a record: SHA-256 over its COSE bytes as stored."""
    return hashlib.sha256(cose_bytes).digest()


def encode(fields: dict) -> bytes:
    check(fields)
    return cbor.encode(fields)


def _type_ok(value, kind) -> bool:
    if kind == _I:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _B:
        return isinstance(value, bytes)
    if kind == _S:
        return isinstance(value, str)
    return isinstance(value, kind)


def check(fields) -> dict:
    if not isinstance(fields, dict):
        raise ManifestError("manifest payload is not a map")
    spec = _COMMON + (_SEGMENT if fields.get("kind") == KIND_SEGMENT else ())
    for name, kind in spec:
        if name not in fields:
            raise ManifestError("manifest lacks %r" % name)
        if not _type_ok(fields[name], kind):
            raise ManifestError("manifest field %r has the wrong type" % name)
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
