"""An export package for a court (Art. 9, 10), and its offline check.

A package is a directory anyone can copy; everything in it is checked from the unit's public
key alone (`bodycam verify PACKAGE --trust UNIT.pub`, or by hand: README.txt in the package)::

    package.cbor            what the package is (deterministic CBOR): format, package id, the
                            vault's log origin, the request it was made under, the records
                            and devices it holds, and the SHA-256 of every file below
    records/<device>/<seq:08d>.cose   each signed record, byte-exact as the recorder signed it
    segments/<sha256>.bin   each segment's bytes, named by their SHA-256
    keys/<device>.pub       each recorder's enrolled Ed25519 public key (32 bytes)
    hall/<sha256>.bin       fixed-camera footage of a case (not device-signed), and
    hall/<sha256>.cose      the dock's signed attestation of it (type "hall")
    certs/<n>.cose          the unit's certificates for the dock keys (COSE_Sign1)
    summary.html            for people: the request, the phases, the records
    README.txt              how to check the package without this tool
    log/checkpoint          the vault's log head (C2SP signed note), signed by a certified dock
    log/proofs.cbor         {"size", "root", "entries": [{"index", "entry", "proof"}]}: the log
                            entries the package rests on, each with its RFC 6962 inclusion
                            proof against the checkpoint
    SHA256SUMS              `sha256sum -c` over every other file (a convenience, not a proof)

The chain of trust: the unit key signs the dock certificate; its dock key signs the
checkpoint; the inclusion proofs put the log entries under the checkpoint's root; the export's
own register entry (an "access" entry, act "export") names this package and the SHA-256 of
package.cbor; package.cbor names every file's SHA-256; the records verify with the enrolled
device keys, whose enrolment entries are in the log too; each segment hashes to what its
record signed. The request and the approver's decision are log entries as well.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_agent.vault import checkpoint as notes
from host_agent.vault import evidence, log
from protocol import authority, cbor, cose

FORMAT = "bodycam-export/1"
MANIFEST = "package.cbor"
CHECKPOINT = "log/checkpoint"
PROOFS = "log/proofs.cbor"
SUMS = "SHA256SUMS"
UNLISTED = (MANIFEST, CHECKPOINT, PROOFS, SUMS)  # self-proving, or the proof itself
MAX_FILE = 1 << 36


@dataclass(frozen=True)
class Problem:
    code: str
    path: str
    detail: str


@dataclass
class PackageReport:
    problems: list[Problem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def add(self, code: str, path: str, detail: str) -> None:
        self.problems.append(Problem(code, path, detail))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.problems, "summary": self.summary,
                "problems": [vars(p) for p in self.problems]}


def sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def record_path(device_id: str, seq: int) -> str:
    return f"records/{device_id}/{seq:08d}.cose"


def segment_path(sha256: bytes) -> str:
    return f"segments/{sha256.hex()}.bin"


def check(root: Path, trusted_unit_key: bytes) -> PackageReport:
    """Check a package offline against the unit's public key; every problem named."""
    return _Checker(Path(root), trusted_unit_key).run()


class _Checker:
    def __init__(self, root: Path, unit_key: bytes) -> None:
        self.root = root
        self.unit_key = unit_key
        self.report = PackageReport()
        self.add = self.report.add
        self.docks: list[tuple[dict[str, Any], bytes]] | None = None

    def read(self, rel: str, what: str) -> bytes | None:
        path = self.root / rel
        try:
            if path.stat().st_size > MAX_FILE:
                self.add("too_large", rel, f"{what} is larger than any package file may be")
                return None
            return path.read_bytes()
        except FileNotFoundError:
            self.add("missing", rel, f"{what} is missing")
        except OSError as exc:
            self.add("unreadable", rel, f"cannot read {what}: {exc.strerror}")
        return None

    def run(self) -> PackageReport:
        if not self.root.is_dir():
            self.add("not_a_package", str(self.root), "not a directory")
            return self.report
        man_bytes = self.read(MANIFEST, "the package manifest")
        if man_bytes is None:
            return self.report
        try:
            man = cbor.decode(man_bytes)
            if not isinstance(man, dict) or man.get("format") != FORMAT:
                raise cbor.CBORError(f"not a {FORMAT} manifest")
        except cbor.CBORError as exc:
            self.add("manifest_altered", MANIFEST, f"not a package manifest: {exc}")
            return self.report
        bad_shape = _shape_problem(man)
        if bad_shape:
            self.add("manifest_altered", MANIFEST, f"not a package manifest: {bad_shape}")
            return self.report
        self.check_files(man)
        entries = self.check_log(man)
        if entries is None:
            return self.report
        self.check_export(man, man_bytes, entries)
        keys = self.check_devices(man, entries)
        self.check_records(man, entries, keys)
        self.check_hall(man, entries)
        return self.report

    # -- files ---------------------------------------------------------------------------------

    def check_files(self, man: dict[str, Any]) -> None:
        files = man.get("files")
        if not isinstance(files, dict):
            self.add("manifest_altered", MANIFEST, "the manifest lists no files")
            return
        for rel, want in sorted(files.items()):
            if not isinstance(rel, str) or ".." in rel.split("/") or rel.startswith("/"):
                self.add("manifest_altered", MANIFEST, f"names a file outside: {rel!r}")
                continue
            path = self.root / rel
            if not path.is_file():
                self.add("missing", rel, "listed in the package manifest, not in the package")
            elif sha256_file(path) != want:
                self.add("altered", rel, "its SHA-256 is not the one the package manifest"
                                         " lists")
        listed = set(files) | set(UNLISTED)
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and rel not in listed:
                self.add("stray", rel, "in the package but not in its manifest")

    # -- trust and the log ---------------------------------------------------------------------

    def dock_keys(self, man: dict[str, Any]) -> list[tuple[dict[str, Any], bytes]]:
        """The dock certificates the trusted unit signed: (certificate, its dock key)."""
        if self.docks is not None:
            return self.docks
        out = []
        others = []
        for rel in man.get("certs", []):
            data = self.read(rel, "a dock certificate")
            if data is None:
                continue
            try:
                doc = authority.open_cert(data, self.unit_key, notes.ed25519_ok)
            except authority.AuthorityError as exc:
                try:
                    kid = cose.parse_sign1(data).kid.hex()
                except cose.CoseError:
                    kid = "?"
                others.append(f"{rel}: {exc} (signed by unit key id {kid})")
                continue
            out.append((doc, bytes(doc["key"])))
        if not out:
            self.add("untrusted", "certs/",
                     "no dock certificate in the package is signed by the trusted unit key"
                     f" (key id {authority.key_id(self.unit_key).hex()}): "
                     + ("; ".join(others) or "the package holds none"))
        self.docks = out
        return out

    def check_log(self, man: dict[str, Any]) -> dict[int, dict[str, Any]] | None:
        note = self.read(CHECKPOINT, "the log checkpoint")
        proofs_raw = self.read(PROOFS, "the inclusion proofs")
        docks = self.dock_keys(man)
        if note is None or proofs_raw is None:
            return None
        try:
            cp = notes.parse(note)
        except notes.CheckpointError as exc:
            self.add("checkpoint_bad", CHECKPOINT, str(exc))
            return None
        if cp.origin != man.get("vault"):
            self.add("checkpoint_bad", CHECKPOINT,
                     f"a checkpoint of {cp.origin}, the package is from {man.get('vault')}")
        signed_by = None
        for doc, key in docks:
            for sig in cp.signatures:
                if notes.key_hash(sig.name, key) == sig.key_hash:
                    if notes.verify(cp.text, cp.signatures, sig.name, key):
                        signed_by = doc
                    else:
                        self.add("checkpoint_bad", CHECKPOINT,
                                 f"the signature of {sig.name} does not verify")
        if docks and signed_by is None:
            self.add("untrusted", CHECKPOINT,
                     "the checkpoint is not signed by any dock the trusted unit certified")
        elif signed_by is not None:
            self.report.summary["dock"] = signed_by["dock"]
            self.report.summary["dock_cert_valid_us"] = [signed_by["nb"], signed_by["na"]]
        try:
            proofs = cbor.decode(proofs_raw)
            items = proofs["entries"]
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise TypeError("its entries are not a list of maps")
            if proofs["size"] != cp.size or proofs["root"] != cp.root:
                self.add("proof_bad", PROOFS, "the proofs are for another log head than the"
                                              " checkpoint's")
                return None
        except (cbor.CBORError, KeyError, TypeError) as exc:
            self.add("proof_bad", PROOFS, f"not the package's proofs: {exc}")
            return None
        entries: dict[int, dict[str, Any]] = {}
        for item in items:
            try:
                index, entry, proof = item["index"], item["entry"], item["proof"]
                ok = log.verify_inclusion(log.leaf_hash(entry), index, cp.size, proof, cp.root)
                decoded = cbor.decode(entry)
            except (cbor.CBORError, KeyError, TypeError, ValueError) as exc:
                self.add("proof_bad", PROOFS, f"an entry cannot be read: {exc}")
                continue
            if not ok:
                self.add("proof_bad", PROOFS, f"log entry {index} is not in the signed log")
                continue
            if isinstance(decoded, dict):
                entries[index] = decoded
        self.report.summary["log"] = {"origin": cp.origin, "size": cp.size,
                                      "entries_proven": len(entries)}
        return entries

    def entry(self, entries: dict[int, dict[str, Any]], index: object, kind: str,
              what: str) -> dict[str, Any] | None:
        e = entries.get(index) if isinstance(index, int) else None
        if e is None or e.get("kind") != kind:
            self.add("proof_bad", PROOFS, f"{what}: no proven log entry (index {index})")
            return None
        return e

    def check_hall(self, man: dict[str, Any], entries: dict[int, dict[str, Any]]) -> None:
        """Fixed-camera footage: not device-signed; its dock's attestation and its register
        entry (proven in the log) name its bytes."""
        count = 0
        for h in man.get("hall", []):
            rel, srel = str(h.get("file")), str(h.get("statement"))
            e = self.entry(entries, h.get("log"), "custody", f"hall footage {h.get('id')}")
            data, statement = self.read(rel, "hall footage"), self.read(srel, "its attestation")
            if e is None or data is None or statement is None:
                continue
            try:
                fields = json.loads(e["fields"])
            except (ValueError, TypeError, KeyError):
                fields = {}
            sha = hashlib.sha256(data).digest()
            if (e.get("what") != "hall" or fields.get("object") != sha.hex()
                    or fields.get("statement") != statement.hex()):
                self.add("hall_mismatch", rel, "not the footage and attestation the register"
                                               " logged")
                continue
            doc = None
            for _, key in self.docks or []:
                try:
                    doc = authority.open_statement(statement, key, notes.ed25519_ok, "hall")
                    break
                except authority.AuthorityError:
                    continue
            if doc is None or doc.get("sha256") != sha or doc.get("size") != len(data):
                self.add("untrusted", srel, "not attested by a dock the trusted unit certified")
                continue
            count += 1
        self.report.summary["hall"] = count

    # -- the register: request, decision, export -----------------------------------------------

    def check_export(self, man: dict[str, Any], man_bytes: bytes,
                     entries: dict[int, dict[str, Any]]) -> None:
        """The proven export entry that names this manifest's SHA-256, and the request and
        approval it was made under, found among the proven entries (the indices the manifest
        gives are only hints: an altered manifest is named as such)."""
        digest = hashlib.sha256(man_bytes).hexdigest()
        exports = [(e, f) for e, f in _custody(entries) if e.get("what") == "access"
                   and f.get("act") == "export"]
        if not exports:
            self.add("proof_bad", PROOFS, "no proven log entry of the export")
            return
        found = [(e, f) for e, f in exports if f.get("package_sha256") == digest]
        if not found:
            self.add("manifest_altered", MANIFEST,
                     "its SHA-256 is not the one the export's log entry names")
            return
        export, ef = found[0]
        if ef.get("package") != man.get("package"):
            self.add("manifest_altered", MANIFEST, "names another package than its export")
        subject = str(export.get("subject"))
        requests = [(e, f) for e, f in _custody(entries) if e.get("what") == "request"
                    and f"request/{e.get('id')}" == subject]
        decisions = [(e, f) for e, f in _custody(entries) if e.get("what") == "decision"
                     and e.get("subject") == subject and f.get("approved") is True]
        if not requests:
            self.add("register_bad", PROOFS, f"the request of the export ({subject}) is not"
                                             " among the proven entries")
            return
        if not decisions:
            self.add("register_bad", PROOFS, f"no proven approval of {subject}")
            return
        request, rf = requests[0]
        decision = decisions[-1][0]
        rid = request.get("id")
        records = sorted(str(r["ref"]) for r in man["records"])
        if sorted(ef.get("items", [])) != records:
            self.add("register_bad", MANIFEST,
                     "the records are not those the export's log entry names")
        window = self.report.summary.get("dock_cert_valid_us")
        made = export.get("at")
        if window and isinstance(made, str) and not window[0] <= _us(made) <= window[1]:
            self.add("untrusted", CHECKPOINT, f"the dock's certificate was not valid when the"
                                              f" package was made ({made})")
        self.report.summary.update({
            "package": man.get("package"), "made_at": export.get("at"),
            "made_by": export.get("actor"),
            "request": {"id": rid, "body": rf.get("body"), "letter": rf.get("letter"),
                        "requester": rf.get("requester"), "reason": rf.get("reason"),
                        "filed_at": request.get("at")},
            "approved_by": decision.get("actor"), "approved_at": decision.get("at")})

    # -- devices and records -------------------------------------------------------------------

    def check_devices(self, man: dict[str, Any],
                      entries: dict[int, dict[str, Any]]) -> dict[str, bytes]:
        keys: dict[str, bytes] = {}
        for d in man.get("devices", []):
            device_id = d.get("device_id")
            e = self.entry(entries, d.get("log"), "enrolment", f"the enrolment of {device_id}")
            data = self.read(str(d.get("key")), f"the public key of {device_id}")
            if e is None or data is None:
                continue
            if e.get("device_id") != device_id or e.get("public_key") != data:
                self.add("key_mismatch", str(d.get("key")),
                         f"not the key the vault enrolled for {device_id}")
                continue
            keys[str(device_id)] = data
        self.report.summary["devices"] = sorted(keys)
        return keys

    def check_records(self, man: dict[str, Any], entries: dict[int, dict[str, Any]],
                      keys: dict[str, bytes]) -> None:
        count = segments = 0
        links: dict[tuple[str, int], tuple[bytes, bytes]] = {}  # (dev, seq) -> (hash, prev)
        for r in man.get("records", []):
            ref = str(r.get("ref"))
            device_id, _, seq_text = ref.rpartition("/")
            rel = str(r.get("record"))
            e = self.entry(entries, r.get("log"), "record", f"record {ref}")
            data = self.read(rel, f"record {ref}")
            if e is None or data is None:
                continue
            digest = hashlib.sha256(data).digest()
            if e.get("device_id") != device_id or e.get("record_sha256") != digest:
                self.add("record_mismatch", rel, f"record {ref} is not the one the vault"
                                                 " logged")
                continue
            key = keys.get(device_id)
            if key is None:
                self.add("key_missing", rel, f"no proven key for {device_id}")
                continue
            try:
                fields = evidence.open_record(data, key, device_id)
            except evidence.EvidenceError as exc:
                self.add(exc.code, rel, f"record {ref}: {exc.detail}")
                continue
            if str(fields["seq"]) != seq_text:
                self.add("record_mismatch", rel, f"the file holds record {fields['seq']}")
                continue
            count += 1
            links[(device_id, fields["seq"])] = (digest, fields["prev"])
            if "sha256" in fields and e.get("data_state") == "stored":
                seg = r.get("segment")
                if seg != segment_path(fields["sha256"]):
                    self.add("segment_missing", rel, f"segment of {ref} is not in the package")
                    continue
                path = self.root / seg
                if path.is_file() and (sha256_file(path) != fields["sha256"]
                                       or path.stat().st_size != fields["size"]):
                    self.add("hash_mismatch", seg, f"segment of {ref}: not the signed bytes")
                elif path.is_file():
                    segments += 1
        for (device_id, seq), (_digest, prev) in sorted(links.items()):
            before = links.get((device_id, seq - 1))
            if before is not None and before[0] != prev:
                self.add("chain_broken", record_path(device_id, seq),
                         f"record {seq} of {device_id} does not link to record {seq - 1}")
        self.report.summary["records"] = count
        self.report.summary["segments"] = segments


def _us(iso: str) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1_000_000)
    except ValueError:
        return -1


def _custody(entries: dict[int, dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The proven register entries, each with its fields decoded (unreadable ones left out)."""
    out = []
    for e in entries.values():
        if e.get("kind") != "custody":
            continue
        try:
            fields = json.loads(e["fields"])
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(fields, dict):
            out.append((e, fields))
    return out


_SHAPE: dict[str, tuple[type, ...]] = {"package": (str,), "vault": (str,), "files": (dict,),
                                       "records": (list,), "devices": (list,),
                                       "certs": (list,), "hall": (list,)}
_ITEM_SHAPE: dict[str, dict[str, tuple[type, ...]]] = {
    "records": {"ref": (str,), "record": (str,), "segment": (str, type(None)), "log": (int,)},
    "devices": {"device_id": (str,), "key": (str,), "log": (int,)},
    "hall": {"id": (int, str), "file": (str,), "statement": (str,), "log": (int,)},
}


def _shape_problem(man: dict[str, Any]) -> str | None:
    """What is wrong with the manifest's shape, before anything relies on it; None if fine."""
    for key, types in _SHAPE.items():
        if not isinstance(man.get(key, [] if key == "hall" else None), types):
            return f"{key!r} is missing or not a {types[0].__name__}"
    if not all(isinstance(k, str) and isinstance(v, bytes) and len(v) == 32
               for k, v in man["files"].items()):
        return "'files' does not map names to SHA-256 digests"
    if not all(isinstance(c, str) for c in man["certs"]):
        return "'certs' does not list file names"
    for key, fields in _ITEM_SHAPE.items():
        for item in man.get(key, []):
            if not isinstance(item, dict) or not all(
                    isinstance(item.get(f), types) for f, types in fields.items()):
                return f"an entry of {key!r} is not what a package lists"
    return None
