"""Signed records: verified by an independent COSE path (cbor2 + cryptography), tamper-evident."""

import hashlib
import json
from pathlib import Path

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import cose, manifest
from protocol.ed25519 import SigningKey

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "protocol.json").read_text())


def independent_verify(record: bytes, public: bytes) -> dict:
    """RFC 9052 verification written against cbor2, sharing no code with protocol/."""
    tag = cbor2.loads(record)
    assert tag.tag == 18
    protected, unprotected, payload, signature = tag.value
    assert cbor2.loads(protected) == {1: -8}
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    Ed25519PublicKey.from_public_bytes(public).verify(signature, sig_structure)
    return cbor2.loads(payload)


def test_golden_record_verifies_independently():
    v = VECTORS["records"][0]
    fields = independent_verify(bytes.fromhex(v["record"]), bytes.fromhex(v["public"]))
    assert fields["seq"] == 1 and fields["prev"] == bytes(32) and fields["phase"]["row"] == 4
    assert fields["tracks"] == ["audio", "video"]
    assert hashlib.sha256(bytes.fromhex(v["record"])).hexdigest() == v["record_sha256"]


def test_sign_parse_roundtrip_and_signature_over_received_bytes():
    key = SigningKey(bytes(range(1, 33)))
    record = cose.sign1(b"\xa1avb01", b"kid-0123456789ab", key.sign)
    env = cose.parse_sign1(record)
    assert env.payload == b"\xa1avb01" and env.kid == b"kid-0123456789ab"
    Ed25519PublicKey.from_public_bytes(key.public).verify(env.signature, env.tbs)
    independent_verify(record, key.public)


# The kid (bytes 9-24) is unprotected by design in COSE; host_agent.vault.evidence checks it against
# the enrolled key instead (tests/unit/test_evidence_rules.py).
@pytest.mark.parametrize("flip_at", [4, 5, 30, 100, 300, -10])
def test_any_flipped_signed_byte_fails_verification_or_parsing(flip_at):
    v = VECTORS["records"][0]
    record = bytearray(bytes.fromhex(v["record"]))
    record[flip_at] ^= 0x01
    with pytest.raises((cose.CoseError, InvalidSignature)):
        env = cose.parse_sign1(bytes(record))
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["public"])).verify(
            env.signature, env.tbs)


@pytest.mark.parametrize(
    "data, why",
    [
        (cbor2.dumps([1, 2, 3, 4]), "tag 18"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])), "array of 4"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x26", {4: b"k"}, b"p", b"s" * 64])), "EdDSA"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x27", {}, b"p", b"s" * 64])), "kid"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x27", {4: b"k"}, b"p", b"s"])), "64 bytes"),
        (b"\xd2\x84", "deterministic CBOR"),
    ],
)
def test_malformed_envelopes_are_refused_with_a_reason(data, why):
    with pytest.raises(cose.CoseError, match=why):
        cose.parse_sign1(data)


def test_manifest_checks_fields():
    v = VECTORS["records"][0]
    fields = manifest.decode(cose.parse_sign1(bytes.fromhex(v["record"])).payload)
    bad = dict(fields, t_end=fields["t_start"] - 1)
    with pytest.raises(manifest.ManifestError, match="ends before"):
        manifest.check(bad)
    with pytest.raises(manifest.ManifestError, match="lacks 'sha256'"):
        manifest.check({k: v for k, v in fields.items() if k != "sha256"})
