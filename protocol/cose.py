"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA/Ed25519: the envelope of every signed record.

    COSE_Sign1 = #6.18([protected: bstr .cbor {1: -8}, unprotected: {4: kid}, payload: bstr,
                        signature: bstr])
    signed bytes = CBOR ["Signature1", protected, external_aad = h'', payload]

external_aad stays empty so any COSE implementation can verify with just the public key.
Parsing keeps the protected header and payload exactly as received: a verifier checks the
signature over those bytes, never over a re-encoding. Headers hold exactly what `sign1` puts
there (alg; kid): an envelope with any other header parameter is refused, since unprotected
entries are not covered by the signature and would ride along into the stored record.
"""

from protocol import cbor
from protocol.compat import const

TAG_SIGN1 = const(18)
HDR_ALG = const(1)
HDR_KID = const(4)
ALG_EDDSA = const(-8)
SIGNATURE_SIZE = const(64)

_PROTECTED_EDDSA = cbor.encode({HDR_ALG: ALG_EDDSA})


class CoseError(ValueError):
    """Bytes that are not a COSE_Sign1 envelope this system accepts."""


class BadSignature(CoseError):
    """A well-formed envelope whose signature the expected key did not make."""


def to_be_signed(protected: bytes, payload: bytes) -> bytes:
    return cbor.encode(["Signature1", protected, b"", payload])


def sign1(payload: bytes, kid: bytes, sign) -> bytes:
    """Envelope `payload`; `sign(bytes) -> 64-byte signature` is the device's Ed25519 key."""
    sig = sign(to_be_signed(_PROTECTED_EDDSA, payload))
    if len(sig) != SIGNATURE_SIZE:
        raise CoseError("signer returned %d bytes, not an Ed25519 signature" % len(sig))
    return cbor.encode(cbor.Tag(TAG_SIGN1, [_PROTECTED_EDDSA, {HDR_KID: kid}, payload, sig]))


class Sign1:
    """A parsed envelope. `tbs` is what the signature covers, from the received bytes."""

    def __init__(self, protected: bytes, kid: bytes, payload: bytes, signature: bytes) -> None:
        self.protected = protected
        self.kid = kid
        self.payload = payload
        self.signature = signature
        self.tbs = to_be_signed(protected, payload)


def parse_sign1(data) -> Sign1:
    try:
        item = cbor.decode(data)
    except cbor.CBORError as exc:
        raise CoseError("not deterministic CBOR: %s" % exc)
    if not isinstance(item, cbor.Tag) or item.tag != TAG_SIGN1:
        raise CoseError("not a tagged COSE_Sign1 (tag 18)")
    parts = item.value
    if not isinstance(parts, list) or len(parts) != 4:
        raise CoseError("COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = parts
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise CoseError("protected header and payload must be byte strings")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise CoseError("signature must be 64 bytes")
    try:
        headers = cbor.decode(protected)
    except cbor.CBORError as exc:
        raise CoseError("protected header: %s" % exc)
    if not isinstance(headers, dict) or headers.get(HDR_ALG) != ALG_EDDSA:
        raise CoseError("protected header must name alg EdDSA (-8)")
    if len(headers) != 1:
        raise CoseError("protected header carries parameters besides alg")
    if not isinstance(unprotected, dict) or not isinstance(unprotected.get(HDR_KID), bytes):
        raise CoseError("unprotected header must carry a kid")
    # The unprotected header is not signed: anything in it besides the kid was added by someone
    # other than the signer, and a stored record must be exactly what was signed.
    if len(unprotected) != 1:
        raise CoseError("unprotected header carries unsigned entries besides the kid")
    return Sign1(protected, unprotected[HDR_KID], payload, signature)


def open_sign1(data, public: bytes, verify_fn):
    """The decoded payload of `data`, a COSE_Sign1 whose signature `public` made, checked over
    the bytes as received; CoseError saying which of the three it is not (an envelope, signed
    by that key, a CBOR payload). `verify_fn(public, msg, sig) -> bool`."""
    env = parse_sign1(data)
    if not verify_fn(public, env.tbs, env.signature):
        raise BadSignature("signature does not verify")
    try:
        return cbor.decode(env.payload)
    except cbor.CBORError as exc:
        raise CoseError("payload: %s" % exc)
