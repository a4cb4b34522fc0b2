"""C2SP tlog-cosignature v1 as the spec writes it: checked here with `cryptography` alone
against the spec's message layout, and against our own verifier."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host_agent.central import cosign
from host_agent.vault import checkpoint as notes


class Key:
    def __init__(self, name: str) -> None:
        self.name = name
        self._k = Ed25519PrivateKey.generate()
        self.public_key = self._k.public_key().public_bytes_raw()

    def sign(self, msg: bytes) -> bytes:
        return self._k.sign(msg)


def test_a_cosignature_is_the_spec_s_bytes() -> None:
    log_key, central = Key("dock.example/log"), Key("central.example/witness")
    note = notes.sign("bodycam.vault/abc", 20852163, bytes(range(32)), log_key)
    cosigned = cosign.cosign(note, central, timestamp=1679315147)
    assert cosigned.startswith(note)
    line = cosigned[len(note):].decode()
    assert line.startswith("\u2014 central.example/witness ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    kid = hashlib.sha256(b"central.example/witness\n\x04" + central.public_key).digest()[:4]
    assert blob[:4] == kid and struct.unpack(">Q", blob[4:12])[0] == 1679315147
    text = note[:note.index(b"\n\n") + 1]
    msg = b"cosignature/v1\ntime 1679315147\n" + text
    central._k.public_key().verify(blob[12:], msg)  # raises if not the spec's message
    assert cosign.verify(cosigned, central.name, central.public_key) == 1679315147
    assert cosign.verify(note, central.name, central.public_key) is None
    # the dock's own signature still verifies on the cosigned note
    parsed = notes.parse(cosigned)
    assert notes.verify(parsed.text, parsed.signatures, log_key.name, log_key.public_key)


def test_a_forged_cosignature_is_refused() -> None:
    log_key, central = Key("dock"), Key("central")
    note = notes.sign("bodycam.vault/abc", 5, bytes(32), log_key)
    cosigned = cosign.cosign(note, central, timestamp=1)
    name, b64 = cosigned[len(note):].decode().strip().split(" ")[1:]
    blob = bytearray(base64.b64decode(b64))
    blob[-1] ^= 1  # one bit of the signature
    forged = note + f"\u2014 {name} {base64.b64encode(bytes(blob)).decode()}\n".encode()
    with pytest.raises(cosign.CosignError, match="does not verify"):
        cosign.verify(forged, central.name, central.public_key)
    later = bytearray(base64.b64decode(b64))
    later[11] ^= 1  # the time it claims
    moved = note + f"\u2014 {name} {base64.b64encode(bytes(later)).decode()}\n".encode()
    with pytest.raises(cosign.CosignError):
        cosign.verify(moved, central.name, central.public_key)
