"""The rules that make a record evidence: who signed it, where it sits in the chain, its data.

Pure checks, no storage: `host_agent/vault/ingest.py` applies them to what a recorder offers,
`host_agent/vault/verify.py` to what the vault holds. Every check raises EvidenceError naming
what is wrong; the codes are the quarantine reasons.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import cose, manifest

# Why a record or its data is not evidence (EvidenceError.code, quarantine reason codes).
MALFORMED = "malformed"  # not a COSE_Sign1 record of ours, or its payload is not a manifest
UNKNOWN_KEY = "unknown_key"  # signed by a key id other than the device's enrolled key
BAD_SIGNATURE = "bad_signature"  # the signature does not verify with the enrolled key
WRONG_DEVICE = "wrong_device"  # signed by this key but naming another device
CHAIN_BROKEN = "chain_broken"  # not the next record of the chain the vault holds
CONFLICT = "conflict"  # the vault holds another record under the same sequence number
SIZE_MISMATCH = "size_mismatch"  # segment bytes received: not the signed size
HASH_MISMATCH = "hash_mismatch"  # segment bytes received: not the signed SHA-256
UNEXPECTED_DATA = "unexpected_data"  # data offered with an event or gap record
REASONS = (MALFORMED, UNKNOWN_KEY, BAD_SIGNATURE, WRONG_DEVICE, CHAIN_BROKEN, CONFLICT,
           SIZE_MISMATCH, HASH_MISMATCH, UNEXPECTED_DATA)


class EvidenceError(Exception):
    """A record or segment that must not be taken as good evidence."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def key_id(public_key: bytes) -> bytes:
    return hashlib.sha256(public_key).digest()[:16]


def open_record(record: bytes, public_key: bytes, device_id: str) -> dict[str, Any]:
    """Check that `record`, as received, was signed by `public_key` for `device_id`; return its
    manifest fields. The signature is checked over the received bytes, never a re-encoding."""
    try:
        env = cose.parse_sign1(record)
    except cose.CoseError as exc:
        raise EvidenceError(MALFORMED, str(exc)) from exc
    if env.kid != key_id(public_key):
        raise EvidenceError(UNKNOWN_KEY, "record signed by key id " + env.kid.hex())
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(env.signature, env.tbs)
    except InvalidSignature as exc:
        raise EvidenceError(BAD_SIGNATURE, f"a record of {device_id}") from exc
    try:
        fields = manifest.decode(env.payload)
    except manifest.ManifestError as exc:
        raise EvidenceError(MALFORMED, str(exc)) from exc
    if fields["device_id"] != device_id:
        raise EvidenceError(WRONG_DEVICE, f"record names {fields['device_id']}, not {device_id}")
    return fields


def check_link(fields: dict[str, Any], seq: int, prev_hash: bytes) -> None:
    """Check that a record is record `seq` of its chain and links to `prev_hash`."""
    if fields["seq"] != seq:
        raise EvidenceError(CHAIN_BROKEN, f"expected record {seq}, got {fields['seq']}")
    if fields["prev"] != prev_hash:
        raise EvidenceError(CHAIN_BROKEN, f"record {seq} does not link to the record before it")


def verify_record(
    record: bytes, public_key: bytes, device_id: str, seq: int, prev_hash: bytes
) -> dict[str, Any]:
    """`open_record`, then `check_link`: the record is evidence at this place of the chain."""
    fields = open_record(record, public_key, device_id)
    check_link(fields, seq, prev_hash)
    return fields


def verify_data(fields: dict[str, Any], sha256: bytes, size: int) -> None:
    """Check received segment bytes (by their hash and size) against the signed manifest."""
    if size != fields["size"]:
        raise EvidenceError(
            SIZE_MISMATCH, f"segment {fields['seq']}: {size} bytes, manifest says {fields['size']}"
        )
    if sha256 != fields["sha256"]:
        raise EvidenceError(HASH_MISMATCH,
                            f"segment {fields['seq']}: SHA-256 differs from manifest")
