"""Checkpoints: the log's size and root hash as a signed note, in the C2SP formats.

A checkpoint (c2sp.org/tlog-checkpoint) is the note text

    bodycam.vault/<vault id>        the origin: which log
    <tree size>                     decimal, no leading zeros
    <root hash>                     base64 of the RFC 6962 root of the first <size> entries

signed as a C2SP signed note (c2sp.org/signed-note): after the text, an empty line, then one
line per signature, "— <key name> <base64(key hash || signature)>", where for Ed25519 the key
hash is the first 4 bytes of SHA-256(key name || "\\n" || 0x01 || 32-byte public key) and the
signature is Ed25519 over the note text (everything up to and including the size/root lines'
final newline). Any tool that reads C2SP checkpoints reads ours.

The key name is the signing dock's (`Signer.name`), not the origin: many docks sign for one
vault, and each dock's certificate from the unit (protocol/authority.py) vouches for its key.

This module only formats, parses and checks signatures; which keys to trust, and whether a
checkpoint agrees with the log, is decided by `host_agent/vault/verify.py`. Parsing refuses
anything the specs do not allow (control characters, a missing blank line, a size with leading
zeros, non-canonical base64) with a CheckpointError saying what.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from host_agent.vault.errors import VaultError

ORIGIN_PREFIX = "bodycam.vault/"
SIG_TYPE_ED25519 = b"\x01"
KEY_HASH_SIZE = 4
ED25519_SIGNATURE_SIZE = 64
MAX_NOTE_BYTES = 64 << 10  # far above 16 Ed25519 signatures, the spec's minimum to accept
MAX_SIGNATURES = 64
_DASH = "\u2014"  # em dash, starts every signature line


class CheckpointError(VaultError):
    """Bytes that are not a well-formed checkpoint note, or a signer that cannot sign one."""


class Signer(Protocol):
    """What signs a checkpoint: a dock's identity. `cert`, if the object has one, is the
    unit's certificate for the key (protocol.authority.issue_cert) and is kept by the vault."""

    @property
    def name(self) -> str:
        """The key name in the note's signature line (no spaces, no "+")."""
        ...

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        ...

    def sign(self, msg: bytes) -> bytes:
        """An Ed25519 signature (64 bytes) over `msg`."""
        ...


@dataclass(frozen=True)
class Signature:
    """One signature line of a note."""

    name: str
    key_hash: bytes  # 4 bytes
    signature: bytes


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint note. `text` is what the signatures cover."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]
    text: bytes
    signatures: tuple[Signature, ...]


VAULT_ORIGIN = re.compile(re.escape(ORIGIN_PREFIX) + r"[0-9a-f]{32}")  # a vault's (uuid4 hex)


def origin_of(vault_id: str) -> str:
    """The origin line of a vault's checkpoints."""
    return ORIGIN_PREFIX + vault_id


def check_key_name(name: object) -> str:
    """`name` if it is a valid key name: non-empty text, no spaces, no "+", no control
    characters; else CheckpointError."""
    if not isinstance(name, str) or not name:
        raise CheckpointError("a checkpoint key name is non-empty text")
    if any(c.isspace() or c == "+" or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise CheckpointError(f"key name {name!r} holds a space, a '+' or a control character")
    return name


def key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte key hash of an Ed25519 key under a name (C2SP signed-note)."""
    material = name.encode() + b"\n" + SIG_TYPE_ED25519 + public_key
    return hashlib.sha256(material).digest()[:KEY_HASH_SIZE]


def note_text(origin: str, size: int, root: bytes) -> bytes:
    """The checkpoint body: origin, size and base64 root hash, each line ending in "\\n"."""
    _check_origin(origin)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckpointError("a tree size is an integer >= 0")
    if len(root) != 32:
        raise CheckpointError("a root hash is 32 bytes")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()


def signer_identity(signer: Signer) -> tuple[str, bytes, bytes | None]:
    """(key name, public key, certificate or None) of a signer, checked; CheckpointError if it
    is not one."""
    try:
        name, public_key = signer.name, signer.public_key
    except AttributeError as exc:
        raise CheckpointError(f"a checkpoint signer needs name and public_key: {exc}") from exc
    check_key_name(name)
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise CheckpointError("a checkpoint signer's public key is 32 bytes (Ed25519)")
    cert = getattr(signer, "cert", None)
    if cert is not None and not isinstance(cert, bytes):
        raise CheckpointError("a signer's certificate is bytes (COSE_Sign1)")
    return name, public_key, cert


def sign(origin: str, size: int, root: bytes, signer: Signer) -> bytes:
    """The signed checkpoint note (UTF-8 bytes) of a tree, signed by `signer`."""
    return sign_text(note_text(origin, size, root), signer)


def sign_text(text: bytes, signer: Signer) -> bytes:
    """Any note text (UTF-8, ending in a newline) signed by `signer` as a C2SP signed note. The
    signature is checked before it is returned, so a broken signer never yields a note nobody
    can verify."""
    name, public_key, _cert = signer_identity(signer)
    _check_text(text)
    signature = signer.sign(text)
    if not isinstance(signature, bytes) or len(signature) != ED25519_SIGNATURE_SIZE:
        raise CheckpointError("the signer did not return a 64-byte Ed25519 signature")
    if not ed25519_ok(public_key, text, signature):
        raise CheckpointError(f"the signature of {name} does not verify with its public key")
    blob = base64.b64encode(key_hash(name, public_key) + signature).decode()
    return text + f"\n{_DASH} {name} {blob}\n".encode()


def parse(note: bytes) -> Checkpoint:
    """Parse a checkpoint note (signatures are not checked here: see `verify`)."""
    text, signatures = parse_note(note)
    lines = text.decode()[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise CheckpointError("a checkpoint has origin, size and root hash lines, none empty")
    origin, size_text, root_text = lines[:3]
    _check_origin(origin)
    if not size_text.isascii() or not size_text.isdigit() or (
            size_text != "0" and size_text.startswith("0")):
        raise CheckpointError(f"tree size {size_text!r} is not a decimal without leading zeros")
    root = _b64(root_text, "root hash")
    if len(root) != 32:
        raise CheckpointError("the root hash is not 32 bytes")
    return Checkpoint(origin, int(size_text), root, tuple(lines[3:]), text, signatures)


def parse_note(note: bytes) -> tuple[bytes, tuple[Signature, ...]]:
    """Split any signed note into its text (what the signatures cover) and its signatures."""
    if len(note) > MAX_NOTE_BYTES:
        raise CheckpointError(f"a checkpoint note is at most {MAX_NOTE_BYTES} bytes")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError("a note is UTF-8 text") from exc
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise CheckpointError("a note holds no control characters but newlines")
    if not decoded.endswith("\n"):
        raise CheckpointError("a note ends with a newline")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise CheckpointError("no blank line between the note text and its signatures")
    text, block = decoded[:split + 1], decoded[split + 2:]
    if not block:
        raise CheckpointError("the note carries no signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"more than {MAX_SIGNATURES} signatures")
    return text.encode(), tuple(_parse_signature(line) for line in lines)


def verify(text: bytes, signatures: tuple[Signature, ...], name: str,
           public_key: bytes) -> bool | None:
    """Check a note's signature(s) by the Ed25519 key `public_key` under `name`: None if the
    note carries none by that key (name and key hash both match), True if they verify, False
    if one does not (then the whole note is to be refused, as the spec advises)."""
    kh = key_hash(name, public_key)
    found = [s for s in signatures if s.name == name and s.key_hash == kh]
    if not found:
        return None
    return all(len(s.signature) == ED25519_SIGNATURE_SIZE
               and ed25519_ok(public_key, text, s.signature) for s in found)


def ed25519_ok(public_key: bytes, msg: bytes, signature: bytes) -> bool:
    """True if `signature` is an Ed25519 signature of `msg` by `public_key` (never raises)."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(bytes(signature), msg)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _check_text(text: bytes) -> None:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError("a note text is UTF-8") from exc
    if not decoded.endswith("\n"):
        raise CheckpointError("a note text ends with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise CheckpointError("a note holds no control characters but newlines")


def _check_origin(origin: str) -> None:
    if not origin or any(c.isspace() or ord(c) < 0x20 for c in origin):
        raise CheckpointError(f"origin {origin!r} is empty or holds spaces")


def _parse_signature(line: str) -> Signature:
    if not line.startswith(_DASH + " "):
        raise CheckpointError(f"signature line {line[:40]!r} does not start with an em dash")
    parts = line[2:].split(" ")
    if len(parts) != 2:
        raise CheckpointError(f"signature line {line[:40]!r} is not '— <name> <signature>'")
    name, blob = parts
    check_key_name(name)
    raw = _b64(blob, "signature")
    if len(raw) < KEY_HASH_SIZE + 1:
        raise CheckpointError(f"signature by {name} is too short")
    return Signature(name, raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:])


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CheckpointError(f"the {what} is not base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise CheckpointError(f"the {what} is not in canonical base64")
    return raw
