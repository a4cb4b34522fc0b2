"""Checks that make a record evidence: signature by an enrolled key, chain link, data hash.

One place for the rules, used by the dock on ingest and by `bodycam vault verify` later.
Every check raises EvidenceError naming what is wrong; nothing here writes anything.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import cose, manifest


class EvidenceError(Exception):
    """A record or segment that must not be taken as good evidence."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def key_id(public_key: bytes) -> bytes:
    return hashlib.sha256(public_key).digest()[:16]


def verify_record(
    record: bytes, public_key: bytes, device_id: str, seq: int, prev_hash: bytes
) -> dict:
    """Verify one signed record as received; return its manifest fields.

    `seq` and `prev_hash` are what the chain expects next for this device.
    """
    try:
        env = cose.parse_sign1(record)
    except cose.CoseError as exc:
        raise EvidenceError("malformed", str(exc)) from exc
    if env.kid != key_id(public_key):
        raise EvidenceError("unknown_key", "record signed by key id " + env.kid.hex())
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(env.signature, env.tbs)
    except InvalidSignature as exc:
        raise EvidenceError("bad_signature", f"record {seq} of {device_id}") from exc
    try:
        fields = manifest.decode(env.payload)
    except manifest.ManifestError as exc:
        raise EvidenceError("malformed", str(exc)) from exc
    if fields["device_id"] != device_id:
        raise EvidenceError("wrong_device", f"record names {fields['device_id']}, not {device_id}")
    if fields["seq"] != seq:
        raise EvidenceError("chain_broken", f"expected record {seq}, got {fields['seq']}")
    if fields["prev"] != prev_hash:
        raise EvidenceError(
            "chain_broken", f"record {seq} does not link to the record before it"
        )
    return fields


def verify_data(fields: dict, sha256: bytes, size: int) -> None:
    """Check received segment bytes (by their hash and size) against the signed manifest."""
    if size != fields["size"]:
        raise EvidenceError(
            "size_mismatch",
            f"segment {fields['seq']}: {size} bytes, manifest says {fields['size']}",
        )
    if sha256 != fields["sha256"]:
        raise EvidenceError(
            "hash_mismatch", f"segment {fields['seq']}: SHA-256 differs from manifest"
        )
