"""What a dock and the central service say to each other (HTTP POST /v1, CBOR bodies).

Every request is a COSE_Sign1 signed by the dock's key, carrying the unit's certificate for
that key, so the central knows which certified dock speaks without any other login:

    {"v": 1, "type": "state", "dock", "cert", "origin", "t"}
        → {"next": entries the central holds of this log, "flagged": reason or None}
    {"v": 1, "type": "forward", "dock", "cert", "origin", "t",
     "from": index of the first entry, "entries": [{"entry": log entry bytes,
                                                    "record": signed record bytes (records)}],
     "checkpoint": the dock's signed checkpoint note of the log at from + len(entries)}
        → {"next", "flagged", "cosigned": the checkpoint with the central's cosignature,
           "stored": records stored, "duplicates": entries it already held}
    {"v": 1, "type": "uploads", "dock", "cert", "origin", "t",
     "objects": [{"sha256": 32 bytes, "size", "hold": a legal hold (evidence in a case)}]}
        → {"uploads": [{"sha256", "url": a presigned PUT, "headers": to send with it, exactly}
                       or {"sha256", "held": True} (in the store already)]}

Errors are answered as {"error": text, "flagged": reason or None} with HTTP 4xx/5xx. The
signature is checked over the bytes received; the certificate with the unit's key and the
central's list of revoked docks.
"""

from __future__ import annotations

from typing import Any

from host_agent.vault import checkpoint as notes
from protocol import authority, cbor, cose

VERSION = 1
MAX_BODY = 256 << 20  # a batch of records (the segments go to the object store, not here)
MAX_UPLOADS = 1024  # objects in one uploads request
MAX_OBJECT = 5 << 30  # S3's largest single PUT


class WireError(ValueError):
    """A request the central refuses; the message says why."""


def request(doc: dict[str, Any], kid: bytes, sign: Any) -> bytes:
    return cose.sign1(cbor.encode({"v": VERSION, **doc}), kid, sign)


def open_request(body: bytes, unit_key: bytes, revoked: set[bytes],
                 now_us: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the request, its dock's certificate) once both check out; WireError otherwise."""
    try:
        env = cose.parse_sign1(body)
        doc = cbor.decode(env.payload)
    except (cose.CoseError, cbor.CBORError) as exc:
        raise WireError(f"not a signed request: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION or not isinstance(
            doc.get("cert"), bytes):
        raise WireError("not a request of this protocol (or no certificate)")
    cert = admit_cert(doc["cert"], unit_key, revoked, now_us)
    key = bytes(cert["key"])
    if env.kid != authority.key_id(key) or not notes.ed25519_ok(key, env.tbs, env.signature):
        raise WireError(f"the request is not signed by the key of dock {cert['dock']}")
    if doc.get("dock") != cert["dock"]:
        raise WireError(f"the request names dock {doc.get('dock')!r}, its certificate"
                        f" {cert['dock']!r}")
    if not isinstance(doc.get("origin"), str) or not notes.VAULT_ORIGIN.fullmatch(
            doc["origin"]):
        raise WireError("the request names no vault's log origin (bodycam.vault/<32 hex>)")
    return doc, cert


def admit_cert(cert: bytes, unit_key: bytes, revoked: set[bytes],
               now_us: int) -> dict[str, Any]:
    """The payload of a dock certificate the central takes now: the unit's, valid now, not
    revoked; WireError otherwise."""
    try:
        doc = authority.open_cert(cert, unit_key, notes.ed25519_ok)
        authority.admit(doc, now_us, list(revoked))
    except authority.AuthorityError as exc:
        raise WireError(f"dock certificate refused: {exc}") from None
    return doc


def answer(doc: dict[str, Any]) -> bytes:
    return bytes(cbor.encode(doc))


def read_answer(body: bytes) -> dict[str, Any]:
    try:
        doc = cbor.decode(body)
    except cbor.CBORError as exc:
        raise WireError(f"the central's answer is not CBOR: {exc}") from None
    if not isinstance(doc, dict):
        raise WireError("the central's answer is not a map")
    return doc
