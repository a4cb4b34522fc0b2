"""The unit's and the docks' Ed25519 keys on disk, the unit certifying a dock, a dock's identity.

    UNIT_DIR/unit.key    the unit's private key (32-byte seed, mode 0600): signs policies and
                         dock certificates; kept offline, on the records office's machine
    UNIT_DIR/unit.pub    its public key (hex): what recorders are commissioned with
    DOCK_DIR/dock.key    a dock's private key (seed, 0600), made on the dock PC, never copied
    DOCK_DIR/dock.pub    its public key (hex), to take to the unit for certifying
    DOCK_DIR/dock.cert   the unit's certificate for it (protocol/authority.py)
    DOCK_DIR/unit.pub    the unit's public key
    PERSON_DIR/person.key   a person of the records office's private key (seed, 0600)
    PERSON_DIR/person.pub   its public key (hex), to take to the unit for certifying
    PERSON_DIR/person.cert  the unit's certificate for it (name, ID, roles, clearance)

A private key file is created with O_EXCL and never overwritten. Every error is a KeyFileError
that names the file and what is wrong with it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from protocol import authority, cbor, cose

DAY_US = 86_400_000_000


class KeyFileError(Exception):
    """A key or certificate file is missing, damaged or does not fit; the message says which."""


def _verify(public: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, msg)
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature, ValueError: not a valid signature
        return False


verify = _verify  # `verify_fn` for protocol/authority.py and protocol/policy.py on CPython


def issue_person_cert(name: str, id_no: str, roles: list[str], clearance: str, key: bytes,
                      not_before_us: int, not_after_us: int, unit: str, unit_kid: bytes,
                      sign_fn: Any) -> bytes:
    """A person certificate (protocol/authority.py, type "person") signed by the unit."""
    doc = authority.check_person_cert({
        "v": authority.CERT_FORMAT, "type": authority.TYPE_PERSON, "name": name,
        "id_no": id_no, "roles": sorted(set(roles)), "clearance": clearance, "key": key,
        "nb": not_before_us, "na": not_after_us, "unit": unit})
    return cose.sign1(cbor.encode(doc), unit_kid, sign_fn)


def open_person_cert(data: bytes, unit_public: bytes) -> dict[str, Any]:
    """The person certificate's payload, if `data` is one signed by `unit_public`
    (AuthorityError otherwise); its validity in time is the caller's to check."""
    try:
        return authority.check_person_cert(cose.open_sign1(data, unit_public, _verify))
    except cose.BadSignature:
        raise authority.AuthorityError("person certificate not signed by this unit") from None
    except cose.CoseError as exc:
        raise authority.AuthorityError(f"not a person certificate: {exc}") from None


def read_person_cert(data: bytes) -> dict[str, Any]:
    """The payload of a person certificate, NOT checked against any unit: only whose it
    claims to be (the register checks it against the unit key)."""
    try:
        return authority.check_person_cert(cbor.decode(cose.parse_sign1(data).payload))
    except (cose.CoseError, cbor.CBORError) as exc:
        raise authority.AuthorityError(f"not a person certificate: {exc}") from None


def new_key(path: Path) -> bytes:
    """Make a private key at `path` (mode 0600, never over an existing file); its public key."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; a private key is never overwritten") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
    public = private.public_key().public_bytes_raw()
    _write_text(path.with_suffix(".pub"), public.hex() + "\n")
    return public


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        seed = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    if len(seed) != 32:
        raise KeyFileError(f"{path} is not an Ed25519 private key (32 bytes, {len(seed)} here)")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(text: str | Path) -> bytes:
    """A public key given as 64 hex digits, or as a file holding them (unit.pub, dock.pub)."""
    value = str(text).strip()
    source = "the key"
    if len(value) != 64 or not all(c in "0123456789abcdefABCDEF" for c in value):
        try:
            value = Path(text).read_text().strip()
        except OSError as exc:
            raise KeyFileError(f"{text}: neither 64 hex digits nor a readable key file"
                               f" ({exc.strerror})") from None
        source = str(text)
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise KeyFileError(f"{source} is not an Ed25519 public key (64 hex digits)")
    return key


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from None


class UnitKey:
    """The unit's signing key (Art. 12: the unit refines the rules and vouches for its docks)."""

    def __init__(self, private: Ed25519PrivateKey, name: str = "unit") -> None:
        self._private = private
        self.public = private.public_key().public_bytes_raw()
        self.kid = authority.key_id(self.public)
        self.name = name

    @classmethod
    def create(cls, unit_dir: Path) -> UnitKey:
        new_key(Path(unit_dir) / "unit.key")
        return cls.load(unit_dir)

    @classmethod
    def load(cls, unit_dir_or_key: Path) -> UnitKey:
        """From UNIT_DIR (its unit.key) or the unit.key file itself."""
        path = Path(unit_dir_or_key)
        return cls(load_key(path / "unit.key" if path.is_dir() else path))

    def sign(self, msg: bytes) -> bytes:
        return self._private.sign(msg)

    def certify_dock(self, dock_id: str, dock_public: bytes, *, days: int = 365,
                     may: tuple[str, ...] = authority.DOCK_RIGHTS, not_before_us: int | None = None,
                     unit_name: str | None = None) -> bytes:
        """A certificate that lets the dock `dock_id` with key `dock_public` do `may`."""
        start = time_us() if not_before_us is None else not_before_us
        try:
            return authority.issue_cert(dock_id, dock_public, start - DAY_US,
                                        start + days * DAY_US, may, unit_name or self.name,
                                        self.kid, self.sign)
        except authority.AuthorityError as exc:
            raise KeyFileError(f"cannot certify dock {dock_id!r}: {exc}") from None


    def certify_person(self, name: str, id_no: str, roles: list[str], clearance: str,
                       public: bytes, *, days: int = 365, not_before_us: int | None = None,
                       not_after_us: int | None = None, unit_name: str | None = None) -> bytes:
        """A certificate naming the person who holds `public`: their name, ID number, roles
        and clearance, as the records office will register them."""
        start = time_us() if not_before_us is None else not_before_us
        end = start + days * DAY_US if not_after_us is None else not_after_us
        try:
            return issue_person_cert(name, id_no, roles, clearance, public, start, end,
                                     unit_name or self.name, self.kid, self.sign)
        except authority.AuthorityError as exc:
            raise KeyFileError(f"cannot certify person {name!r}: {exc}") from None


class PersonKey:
    """A person's key and the unit's certificate for it (PERSON_DIR/person.key, person.cert):
    what signs their acts in the register (host_agent/custody/register.py)."""

    def __init__(self, private: Ed25519PrivateKey, cert: bytes, cert_doc: dict[str, Any]) -> None:
        self._private = private
        self.public = private.public_key().public_bytes_raw()
        self.cert = cert
        self.cert_doc = cert_doc

    @property
    def name(self) -> str:
        return str(self.cert_doc["name"])

    def sign(self, msg: bytes) -> bytes:
        return self._private.sign(msg)

    @classmethod
    def create(cls, person_dir: Path) -> bytes:
        """Make PERSON_DIR/person.key (and person.pub); the public key."""
        return new_key(Path(person_dir) / "person.key")

    @classmethod
    def load(cls, person_dir: Path) -> PersonKey:
        """PERSON_DIR's key and certificate (the certificate is read, not trusted: the
        register checks it against the unit key), which must certify this key."""
        person_dir = Path(person_dir)
        private = load_key(person_dir / "person.key")
        try:
            cert = (person_dir / "person.cert").read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read {person_dir / 'person.cert'}: {exc.strerror}"
                               " (bodycam unit certify-person)") from None
        try:
            doc = read_person_cert(cert)
        except authority.AuthorityError as exc:
            raise KeyFileError(f"{person_dir / 'person.cert'}: {exc}") from None
        if doc["key"] != private.public_key().public_bytes_raw():
            raise KeyFileError(f"{person_dir / 'person.cert'} certifies another key than"
                               " person.key")
        return cls(private, cert, doc)


def time_us() -> int:
    return time.time_ns() // 1000


@dataclass
class DockIdentity:
    """Who a dock is, as it proves it to recorders and signs its vault's checkpoints."""

    dock_id: str
    private: Ed25519PrivateKey = field(repr=False)
    cert: bytes
    cert_doc: dict[str, Any]
    unit_public: bytes

    @property
    def public_key(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    @property
    def name(self) -> str:
        """The key name in signed notes (vault checkpoints)."""
        return f"bodycam-dock-{self.dock_id}"

    def sign(self, msg: bytes) -> bytes:
        return self.private.sign(msg)

    @classmethod
    def create_key(cls, dock_dir: Path) -> bytes:
        """Make the dock's key in DOCK_DIR; its public key, for the unit to certify."""
        return new_key(Path(dock_dir) / "dock.key")

    @classmethod
    def install_cert(cls, dock_dir: Path, cert: bytes, unit_public: bytes) -> DockIdentity:
        """Put the unit's certificate (and the unit's public key) beside the dock's key."""
        dock_dir = Path(dock_dir)
        try:
            (dock_dir / "dock.cert").write_bytes(cert)
        except OSError as exc:
            raise KeyFileError(f"cannot write {dock_dir / 'dock.cert'}: {exc.strerror}") from None
        _write_text(dock_dir / "unit.pub", unit_public.hex() + "\n")
        return cls.load(dock_dir)

    @classmethod
    def load(cls, dock_dir: Path) -> DockIdentity:
        """DOCK_DIR's key and certificate, checked: the certificate is the unit's, for this
        key, and valid now."""
        dock_dir = Path(dock_dir)
        if not dock_dir.is_dir():
            raise KeyFileError(f"{dock_dir} is not a dock identity directory (see `bodycam"
                               " dock-identity new` and `bodycam unit certify`)")
        private = load_key(dock_dir / "dock.key")
        unit_public = public_key(dock_dir / "unit.pub")
        try:
            cert = (dock_dir / "dock.cert").read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read {dock_dir / 'dock.cert'}: {exc.strerror}") from None
        try:
            doc = authority.open_cert(cert, unit_public, verify)
            authority.admit(doc, time_us(), [])
        except authority.AuthorityError as exc:
            raise KeyFileError(f"{dock_dir / 'dock.cert'}: {exc}") from None
        if doc["key"] != private.public_key().public_bytes_raw():
            raise KeyFileError(f"{dock_dir / 'dock.cert'} certifies another key than dock.key")
        return cls(doc["dock"], private, cert, doc, unit_public)
