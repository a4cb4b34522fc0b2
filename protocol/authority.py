"""A dock's authority over a recorder, proved: the unit's certificate for the dock, the mutual
handshake over fresh nonces, and the dock's signed receipts. Pure code, both runtimes.

Dock certificate: a COSE_Sign1 by the unit key (the key that signs policies, Art. 12) over a
deterministic CBOR map

    v      1
    type   "dock"
    dock   the dock's id (1..64 of [A-Za-z0-9._-])
    key    the dock's Ed25519 public key (32 bytes)
    nb     valid from, µs since the Unix epoch
    na     valid until
    may    rights, a subset of RIGHTS: "offload" (list, read, release), "clock" (step the
           clock), "policy" (deliver a policy) -- a dock's (DOCK_RIGHTS) -- or "records": the
           records office at the centre, which signs its own log's checkpoints and may do
           nothing on a recorder
    unit   who issued it

A unit revokes a dock by listing its key id in the policy's `revoked_docks`. A recorder checks
the unit's signature, the rights and revocation, but not the validity window: its clock is
what docks set, and a clock set wrong (a glitch, or a certified dock's mistake) must never lock
out the dock that would correct it. The window is enforced by the dock itself (it refuses to
use an expired certificate) and by every verifier of the vault's checkpoints.

Handshake (messages.py: hello → identify, auth → auth_ok). The recorder's `identify` carries a
fresh nonce Nd. The dock answers `auth` with its certificate, its own fresh nonce Nh and a
signature over `dock_proof(device_id, Nd, Nh, certificate)`; the recorder checks the
certificate against its unit key (validity, rights, revocation) and that signature, then
signs `device_proof(device_id, Nd, Nh, dock key)` with its own key, which the dock checks
against the device's enrolled key: a clone showing another recorder's public key cannot.
Both proofs bind the device id and both nonces inside the signed bytes, so neither can be
replayed into another session or for another recorder.

Person certificate: a COSE_Sign1 by the unit key over a deterministic CBOR map

    v          1
    type       "person"
    name       the person's name as the records office registers it (1..80 characters,
               no "/", no surrounding spaces)
    id_no      their ID card or warrant number
    roles      a non-empty list of PERSON_ROLES
    clearance  one of CLASSES (Art. 3)
    key        the person's Ed25519 public key (32 bytes)
    nb, na     validity, µs since the Unix epoch
    unit       who issued it

Recorders never see one: the records office (host_agent/keys.py, host_agent/custody/
register.py) issues and checks them; only the payload's check is here, kept small (every
module here is in the recorders' heap).

Signed statements (COSE_Sign1, deterministic CBOR payload with a `type`):
    receipt  by the dock: {type, device, seq, record (SHA-256 of the record's bytes),
             status ("stored" or "quarantined"), log (the vault's log index), dock}; the
             recorder frees a record only on a receipt naming it, and keeps the receipt
    head     by the recorder at each docking: {type, device, seq, record, dock, nonce}: its
             last record, logged by the vault so that a later rollback of either is seen
"""

from protocol import cbor, cose
from protocol.compat import const

CERT_FORMAT = const(1)
NONCE_SIZE = const(16)
DOCK_RIGHTS = ("offload", "clock", "policy")
RIGHTS = DOCK_RIGHTS + ("records",)
TYPE_DOCK = "dock"
TYPE_PERSON = "person"
PERSON_ROLES = ("approver", "custodian", "officer")
CLASSES = ("none", "personal_privacy", "commercial_secret", "state_secret")
TYPE_RECEIPT = "receipt"
TYPE_HEAD = "head"
STATUS_STORED = "stored"
STATUS_QUARANTINED = "quarantined"

_DOCK_PROOF = b"bodycam-dock-auth-v1"
_DEVICE_PROOF = b"bodycam-device-auth-v1"


class AuthorityError(ValueError):
    """A certificate, proof or statement that must not be trusted; the message says why."""


def _id_ok(text) -> bool:
    if not isinstance(text, str) or not 0 < len(text) <= 64:
        return False
    for c in text:
        if not (c.isalpha() or c.isdigit() or c in "._-") or ord(c) > 127:
            return False
    return text[0] not in "._-"


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_cert(doc) -> dict:
    """`doc` if it is a well-formed dock certificate payload, else AuthorityError."""
    if not isinstance(doc, dict) or doc.get("v") != CERT_FORMAT or doc.get("type") != TYPE_DOCK:
        raise AuthorityError("not a dock certificate")
    if not _id_ok(doc.get("dock")):
        raise AuthorityError("dock certificate: bad dock id")
    key = doc.get("key")
    if not isinstance(key, bytes) or len(key) != 32:
        raise AuthorityError("dock certificate: the key must be 32 bytes")
    if not _int(doc.get("nb")) or not _int(doc.get("na")) or doc["na"] <= doc["nb"]:
        raise AuthorityError("dock certificate: bad validity")
    may = doc.get("may")
    if not isinstance(may, list) or not may:
        raise AuthorityError("dock certificate: no rights")
    for right in may:
        if right not in RIGHTS:
            raise AuthorityError("dock certificate: unknown right %r" % (right,))
    if not isinstance(doc.get("unit"), str):
        raise AuthorityError("dock certificate: no issuer")
    return doc


def issue_cert(dock_id: str, dock_key: bytes, not_before_us: int, not_after_us: int, may,
               unit: str, unit_kid: bytes, sign_fn) -> bytes:
    """The unit signs a dock certificate (on the unit's machine, never on a recorder)."""
    doc = check_cert({"v": CERT_FORMAT, "type": TYPE_DOCK, "dock": dock_id, "key": dock_key,
                      "nb": not_before_us, "na": not_after_us, "may": list(may), "unit": unit})
    return cose.sign1(cbor.encode(doc), unit_kid, sign_fn)


def open_cert(data, unit_public: bytes, verify_fn) -> dict:
    """The certificate's payload, if `data` is one signed by `unit_public`.

    `verify_fn(public, msg, sig) -> bool` (protocol.ed25519.verify on a recorder). Validity
    in time, rights and revocation are the caller's to check against its own clock and policy
    (`admit`)."""
    try:
        return check_cert(cose.open_sign1(data, unit_public, verify_fn))
    except cose.BadSignature:
        raise AuthorityError("dock certificate not signed by this recorder's unit")
    except cose.CoseError as exc:
        raise AuthorityError("not a dock certificate: %s" % exc)


def admit(cert: dict, now_us, revoked) -> None:
    """Refuse a certificate that is revoked (its key id in `revoked`, a list of 16-byte ids or
    their hex) or, when `now_us` is known (not None), outside its validity."""
    kid = key_id(cert["key"])
    kid_hex = _hex(kid)
    for entry in revoked:
        if entry == (kid if isinstance(entry, bytes) else kid_hex):
            raise AuthorityError("dock %s (key %s) is revoked by the unit" % (cert["dock"],
                                                                              _hex(kid)))
    if now_us is not None and not cert["nb"] <= now_us <= cert["na"]:
        raise AuthorityError("dock certificate of %s is not valid now" % cert["dock"])


def _name_ok(text) -> bool:
    return isinstance(text, str) and 0 < len(text) <= 80 and text == text.strip() and (
        "/" not in text)


def check_person_cert(doc) -> dict:
    """`doc` if it is a well-formed person certificate payload, else AuthorityError. (Issued,
    opened and checked in time by the records office, host_agent/keys.py: a recorder never
    sees one.)"""
    if not isinstance(doc, dict) or doc.get("type") != TYPE_PERSON or len(doc) != 10:
        raise AuthorityError("not a person certificate")
    roles, key = doc.get("roles"), doc.get("key")
    if (doc.get("v") != CERT_FORMAT or not _name_ok(doc.get("name"))
            or not _name_ok(doc.get("id_no")) or not isinstance(roles, list) or not roles
            or [r for r in roles if r not in PERSON_ROLES] or doc.get("clearance") not in CLASSES
            or not isinstance(key, bytes) or len(key) != 32 or not _int(doc.get("nb"))
            or not _int(doc.get("na")) or doc["na"] <= doc["nb"]
            or not isinstance(doc.get("unit"), str)):
        raise AuthorityError("person certificate: malformed")
    return doc


def key_id(public: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(public).digest()[:16]


def _hex(data: bytes) -> str:
    from binascii import hexlify

    return hexlify(data).decode()


def _transcript(label: bytes, device_id: str, device_nonce: bytes, dock_nonce: bytes,
                bound: bytes) -> bytes:
    if len(device_nonce) != NONCE_SIZE or len(dock_nonce) != NONCE_SIZE:
        raise AuthorityError("nonces are %d bytes" % NONCE_SIZE)
    return cbor.encode([label, device_id, device_nonce, dock_nonce, bound])


def dock_proof(device_id: str, device_nonce: bytes, dock_nonce: bytes, cert: bytes) -> bytes:
    """What the dock signs in `auth`: this recorder, both nonces, its own certificate."""
    return _transcript(_DOCK_PROOF, device_id, device_nonce, dock_nonce, cert)


def device_proof(device_id: str, device_nonce: bytes, dock_nonce: bytes,
                 dock_key: bytes) -> bytes:
    """What the recorder signs in `auth_ok`: itself, both nonces, the dock it accepted."""
    return _transcript(_DEVICE_PROOF, device_id, device_nonce, dock_nonce, dock_key)


def sign_statement(doc: dict, kid: bytes, sign_fn) -> bytes:
    return cose.sign1(cbor.encode(doc), kid, sign_fn)


def open_statement(data, public: bytes, verify_fn, kind: str) -> dict:
    """The payload of a receipt or head statement signed by `public`, checked for its type."""
    try:
        doc = cose.open_sign1(data, public, verify_fn)
    except cose.CoseError as exc:
        raise AuthorityError("%s: %s" % (kind, exc))
    if not isinstance(doc, dict) or doc.get("type") != kind:
        raise AuthorityError("not a %s" % kind)
    return doc


def receipt(device_id: str, seq: int, record_sha256: bytes, status: str, log_index: int,
            dock_id: str) -> dict:
    return {"type": TYPE_RECEIPT, "device": device_id, "seq": seq, "record": record_sha256,
            "status": status, "log": log_index, "dock": dock_id}


def head(device_id: str, seq: int, record_sha256: bytes, dock_id: str, nonce: bytes) -> dict:
    return {"type": TYPE_HEAD, "device": device_id, "seq": seq, "record": record_sha256,
            "dock": dock_id, "nonce": nonce}
