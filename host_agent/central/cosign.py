"""Cosignatures (C2SP tlog-cosignature, v1, Ed25519): the central's statement that, as of a
time, the largest consistent tree it has seen of a dock's log has this head.

The signed message is "cosignature/v1\\n", "time <seconds>\\n", then the checkpoint's note text
(its lines up to the blank line, final newline included). The signature line added to the
note is "— <name> base64(key id || timestamp (u64, big-endian) || Ed25519 signature)", the key
id being SHA-256(name || "\\n" || 0x04 || public key)[:4].
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from typing import Any, Protocol

from host_agent.vault import checkpoint as notes

SIG_TYPE_COSIGNATURE_V1 = b"\x04"


class CosignError(ValueError):
    pass


class Cosigner(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, msg: bytes) -> bytes: ...


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + SIG_TYPE_COSIGNATURE_V1 + public_key).digest()[:4]


def message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def cosign(note: bytes, cosigner: Cosigner, timestamp: int | None = None) -> bytes:
    """The note with the cosigner's signature line added (its other signatures kept)."""
    text, _ = notes.parse_note(note)
    notes.check_key_name(cosigner.name)
    t = int(time.time()) if timestamp is None else timestamp
    if not 0 <= t < 1 << 63:
        raise CosignError("a cosignature's time is a POSIX timestamp below 2^63")
    sig = cosigner.sign(message(text, t))
    blob = key_id(cosigner.name, cosigner.public_key) + struct.pack(">Q", t) + sig
    return note + f"\u2014 {cosigner.name} {base64.b64encode(blob).decode()}\n".encode()


def verify(note: bytes, name: str, public_key: bytes) -> int | None:
    """The time of the cosignature by (name, key) on the note, if one verifies; None if the
    note has none by that key. CosignError if one by that key does not verify."""
    text, signatures = notes.parse_note(note)
    kid = key_id(name, public_key)
    found = None
    for s in signatures:
        if s.name != name or s.key_hash != kid:
            continue
        if len(s.signature) != 8 + 64:
            raise CosignError(f"the cosignature of {name} is not a timestamped signature")
        (t,) = struct.unpack(">Q", s.signature[:8])
        if not notes.ed25519_ok(public_key, message(text, t), s.signature[8:]):
            raise CosignError(f"the cosignature of {name} does not verify")
        found = t if found is None else max(found, t)
    return found


class KeyCosigner:
    """An Ed25519 key from its key file (host_agent/keys.py: 32-byte seed): the central's
    cosigning key; or, with the unit's certificate for it (`cert`), the records office's,
    which signs the checkpoints of the central's register log (host_agent/central/archive.py)."""

    def __init__(self, name: str, private: Any, cert: bytes | None = None) -> None:
        notes.check_key_name(name)
        self.name = name
        self.cert = cert
        self._private = private
        self.public_key: bytes = private.public_key().public_bytes_raw()

    def sign(self, msg: bytes) -> bytes:
        return bytes(self._private.sign(msg))
