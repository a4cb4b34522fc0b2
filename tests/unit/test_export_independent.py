"""An export package checked the way a court's expert would, without this project's code.

`verify_package` below follows the steps the package's README.txt gives, using only the
standard library, `cbor2` and `cryptography`: nothing from protocol/ or host_agent/ (a test
below holds the module to that). Only the fixture that BUILDS the package uses the project
(tests.custody_world.World, the register, the exporter), imported inside it.

Each step follows the README a package carries (host_agent/custody/export.py), which says all
the verifier needs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

# ================================================================================================
# The independent verifier (standard library, cbor2, cryptography)
# ================================================================================================

COSE_SIGN1_TAG = 18
COSE_ALG, COSE_EDDSA = 1, -8
EM_DASH = "\u2014"


class Refused(Exception):
    """One step of the README failed."""


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ed25519_ok(public: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, msg)
    except (InvalidSignature, ValueError):
        return False
    return True


def open_sign1(data: bytes, public: bytes) -> bytes:
    """The payload of a COSE_Sign1 (RFC 9052 §4.2) that `public` signed with EdDSA."""
    try:
        item = cbor2.loads(data)
    except Exception as exc:  # any decoding failure is a refusal
        raise Refused(f"not CBOR: {exc}") from exc
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        raise Refused("not a tagged COSE_Sign1 (tag 18)")
    # (cbor2 gives the array inside a tag as a tuple)
    if not isinstance(item.value, list | tuple) or len(item.value) != 4:
        raise Refused("COSE_Sign1 is not an array of 4")
    protected, _unprotected, payload, signature = item.value
    if not all(isinstance(x, bytes) for x in (protected, payload, signature)):
        raise Refused("protected header, payload and signature are byte strings")
    if cbor2.loads(protected).get(COSE_ALG) != COSE_EDDSA:
        raise Refused("the protected header does not name EdDSA")
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    if not ed25519_ok(public, sig_structure, signature):
        raise Refused("the signature does not verify")
    return payload


def leaf_hash(entry: bytes) -> bytes:
    return sha256(b"\x00" + entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def inclusion_ok(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_package(root: Path, unit_key: bytes) -> Verdict:
    v = Verdict()
    try:
        _verify(root, unit_key, v)
    except Refused as exc:
        v.failures.append(f"stopped: {exc}")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            cbor2.CBORDecodeError) as exc:
        v.failures.append(f"stopped: {type(exc).__name__}: {exc}")
    return v


def _verify(root: Path, unit_key: bytes, v: Verdict) -> None:
    fail = v.failures.append

    # 1. sha256sum -c SHA256SUMS
    for line in (root / "SHA256SUMS").read_bytes().decode().split("\n"):  # as sha256sum
        if not line:
            continue
        digest, rel = line.split("  ", 1)
        path = root / rel
        if not path.is_file():
            fail(f"1. {rel}: listed in SHA256SUMS, missing")
        elif sha256(path.read_bytes()).hex() != digest:
            fail(f"1. {rel}: FAILED sha256sum check")

    # 2. certs/*.cose: COSE_Sign1 by the unit key; payload names dock, key, nb, na
    docks: list[dict[str, Any]] = []
    for path in sorted(root.glob("certs/*.cose")):
        try:
            doc = cbor2.loads(open_sign1(path.read_bytes(), unit_key))
        except Refused as exc:
            fail(f"2. {path.name}: {exc}")
            continue
        if not (isinstance(doc.get("key"), bytes) and len(doc["key"]) == 32):
            fail(f"2. {path.name}: no 32-byte dock key")
            continue
        docks.append(doc)
    if not docks:
        fail("2. no certificate in certs/ is signed by the unit key")

    # 3. log/checkpoint: C2SP signed note. The text is everything up to and including the
    # newline that ends the line before the blank line (README step 3).
    note = (root / "log" / "checkpoint").read_bytes().decode("utf-8")
    split = note.index("\n\n")
    text = note[:split + 1].encode()
    origin, size_text, root_b64 = text.decode().splitlines()[:3]
    cp_size, cp_root = int(size_text), base64.b64decode(root_b64, validate=True)
    signed_by = None
    block = note[split + 2:]
    if not block.endswith("\n"):
        fail("3. the note does not end with a newline")
    for line in block.removesuffix("\n").split("\n"):
        if not line.startswith(EM_DASH + " "):
            fail(f"3. not a signature line: {line!r}")
            continue
        name, blob = line[2:].split(" ")
        raw = base64.b64decode(blob, validate=True)
        key_hash, signature = raw[:4], raw[4:]
        for doc in docks:
            # the 4-byte key hash (README step 3; C2SP signed-note) picks the key
            if sha256(name.encode() + b"\n\x01" + doc["key"])[:4] != key_hash:
                continue
            if ed25519_ok(doc["key"], text, signature):
                signed_by = (name, doc["dock"])
            else:
                fail(f"3. the signature of {name} does not verify")
    if signed_by is None:
        fail("3. the checkpoint is not signed by a dock key certified in step 2")
    v.facts["checkpoint"] = {"origin": origin, "size": cp_size, "signed_by": signed_by}

    # 4. log/proofs.cbor: size and root are the checkpoint's; every entry proven
    proofs = cbor2.loads((root / "log" / "proofs.cbor").read_bytes())
    if proofs["size"] != cp_size or proofs["root"] != cp_root:
        fail("4. the proofs are not for the checkpoint's tree")
    proven: dict[int, dict[str, Any]] = {}
    for item in proofs["entries"]:
        if inclusion_ok(leaf_hash(item["entry"]), item["index"], cp_size, item["proof"],
                        cp_root):
            proven[item["index"]] = cbor2.loads(item["entry"])
        else:
            fail(f"4. log entry {item['index']}: its inclusion proof fails")
    v.facts["proven"] = len(proven)

    # 5. the export's entry names package.cbor's SHA-256; the request and its approval
    man_bytes = (root / "package.cbor").read_bytes()
    man = cbor2.loads(man_bytes)
    readme = (root / "README.txt").read_text()
    package_id = readme.splitlines()[0].removeprefix("Evidence export package ")
    if man.get("package") != package_id:
        fail("5. package.cbor is not the package README.txt names")
    if origin not in readme.splitlines()[3]:  # 'Made from the vault whose log is "ORIGIN"'
        fail("3. the checkpoint is of another vault than README.txt names")

    def fields(e: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(e["fields"])
        if not isinstance(out, dict):
            raise Refused("5. a register entry's fields are not a JSON object")
        return out

    exports = [(i, e) for i, e in proven.items() if e.get("kind") == "custody"
               and fields(e).get("act") == "export" and fields(e).get("package") == package_id]
    if len(exports) != 1:
        raise Refused(f"5. {len(exports)} proven export entries name package {package_id}")
    export_index, export = exports[0]
    ef = fields(export)
    if ef["package_sha256"] != sha256(man_bytes).hex():
        fail("5. package.cbor is not the one the export's log entry names")
    subject = export["subject"]
    request_id = int(subject.removeprefix("request/"))
    # the request's entry: "what": "request", "id" the request's number (README step 5)
    request = proven.get(man["request_log"], {})
    decision = proven.get(man["decision_log"], {})
    if export_index != man["export_log"]:
        fail("5. package.cbor's export_log is not the export's entry")
    if request.get("what") != "request" or request.get("id") != request_id:
        fail(f"5. the request {subject} is not proven")
    if (decision.get("what") != "decision" or decision.get("subject") != subject
            or fields(decision).get("approved") is not True):
        fail(f"5. no proven approval of {subject}")
    rf = fields(request) if request else {}
    v.facts.update({"package": package_id, "request": request_id, "body": rf.get("body"),
                    "letter": rf.get("letter"), "approver": decision.get("actor"),
                    "exported_by": export.get("actor"), "export_items": ef.get("items")})

    # 6. package.cbor lists every other file with its SHA-256 (raw 32 bytes)
    for rel, digest in sorted(man["files"].items()):
        path = root / rel
        if not path.is_file():
            fail(f"6. {rel}: listed in package.cbor, missing")
        elif sha256(path.read_bytes()) != digest:
            fail(f"6. {rel}: not the SHA-256 package.cbor lists")

    # 7. recorder keys, records, segments, links
    def one(kind: str, **want: Any) -> dict[str, Any] | None:
        found = [e for e in proven.values() if e.get("kind") == kind
                 and all(e.get(k) == x for k, x in want.items())]
        return found[0] if len(found) == 1 else None

    keys: dict[str, bytes] = {}
    for path in sorted(root.glob("keys/*.pub")):
        device = path.name.removesuffix(".pub")
        enrolment = one("enrolment", device_id=device)
        if enrolment is None or enrolment["public_key"] != path.read_bytes():
            fail(f"7. keys/{path.name}: not the key of a proven enrolment")
            continue
        keys[device] = path.read_bytes()
    verified: dict[tuple[str, int], tuple[bytes, bytes]] = {}  # (device, seq) -> (hash, prev)
    segments = 0
    for path in sorted(root.glob("records/*/*.cose")):
        device, seq = path.parent.name, int(path.stem)
        rel = f"records/{device}/{path.name}"
        data = path.read_bytes()
        if device not in keys:
            fail(f"7. {rel}: no proven key for {device}")
            continue
        try:
            record = cbor2.loads(open_sign1(data, keys[device]))
        except Refused as exc:
            fail(f"7. {rel}: {exc}")
            continue
        logged = one("record", device_id=device, seq=seq)
        if logged is None or logged["record_sha256"] != sha256(data):
            fail(f"7. {rel}: not the record the vault logged")
            continue
        if record["device_id"] != device or record["seq"] != seq:
            fail(f"7. {rel}: the record names {record['device_id']}/{record['seq']}")
            continue
        # only segment records carry "sha256"/"size" (README step 7)
        if "sha256" in record:
            seg = root / "segments" / f"{record['sha256'].hex()}.bin"
            if not seg.is_file():
                fail(f"7. {rel}: its segment is not in the package")
            else:
                seg_data = seg.read_bytes()
                if sha256(seg_data) != record["sha256"] or len(seg_data) != record["size"]:
                    fail(f"7. segments/{seg.name}: not the bytes record {rel} signed")
                else:
                    segments += 1
        verified[(device, seq)] = (sha256(data), record["prev"])
    links = 0
    for (device, seq), (_digest, prev) in sorted(verified.items()):
        before = verified.get((device, seq - 1))
        if before is not None:
            links += 1
            if before[0] != prev:
                fail(f"7. record {device}/{seq} does not link to record {seq - 1}")
    v.facts.update({"devices": sorted(keys), "records": len(verified), "segments": segments,
                    "links": links})


# ================================================================================================
# The tests (only the fixture below uses the project, to build the package)
# ================================================================================================

DEVICE = "SIM-1"
APPROVER = "Li Wei"
LETTER = "(2026) Gui 0102 Xing Chu No. 17"


@dataclass
class Built:
    pkg: Path
    unit_key: bytes
    package_id: str
    request_id: int
    case: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    from host_agent.custody import export as exporter
    from host_agent.custody.register import Register
    from tests.custody_world import CASE, World

    base = tmp_path_factory.mktemp("independent")
    world = World(base)
    try:
        world.recorder(DEVICE)
        world.phase(DEVICE, segments=2)
        register = Register(world.vault)
        register.add_person(APPROVER, id_no="450102198001011234", roles=["approver"],
                            clearance="state_secret", by="records office")
        rid = register.file_request(body="court", letter=LETTER, requester="Judge Zhang",
                                    requester_id="J-0042", reason="administrative trial",
                                    items=[{"case": CASE}], by="records office")
        register.decide(rid, approver=APPROVER, approved=True, note="", items_class="none")
        result = exporter.export(world.vault, rid, base / "pkg", by="records office",
                                 signer=world.dock, unit_public=world.unit.public)
        yield Built(base / "pkg", world.unit.public, result["package"], rid, CASE)
    finally:
        world.close()


@pytest.fixture
def pkg(built: Built, tmp_path: Path) -> Path:
    out = tmp_path / "pkg"
    shutil.copytree(built.pkg, out)
    return out


def test_the_verifier_uses_no_project_code() -> None:
    module = sys.modules[__name__]
    for name, value in vars(module).items():
        origin = getattr(value, "__module__", None) or getattr(value, "__name__", "")
        assert not str(origin).startswith(("host_agent", "protocol", "tests.")) or (
            origin == __name__), f"{name} comes from {origin}"


def test_the_package_verifies_by_the_readme(built: Built, pkg: Path) -> None:
    v = verify_package(pkg, built.unit_key)
    assert v.failures == []
    f = v.facts
    assert f["checkpoint"]["signed_by"] == ("bodycam-dock-test-dock", "test-dock")
    assert f["package"] == built.package_id
    assert (f["request"], f["body"], f["letter"]) == (built.request_id, "court", LETTER)
    assert f["approver"] == APPROVER
    assert f["exported_by"] == "records office"
    # phase_started, notice_given, 2 segments, phase_ended: 5 records, 4 links, 2 segments
    assert (f["devices"], f["records"], f["segments"], f["links"]) == ([DEVICE], 5, 2, 4)
    assert f["export_items"] == [f"{DEVICE}/{n}" for n in range(1, 6)]
    assert f["proven"] == 1 + 5 + 3  # enrolment, records, request + decision + export


def test_a_flipped_segment_byte_is_refused(built: Built, pkg: Path) -> None:
    seg = sorted((pkg / "segments").iterdir())[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))
    v = verify_package(pkg, built.unit_key)
    rel = f"segments/{seg.name}"
    assert f"1. {rel}: FAILED sha256sum check" in v.failures
    assert f"6. {rel}: not the SHA-256 package.cbor lists" in v.failures
    assert any(x.startswith(f"7. {rel}: not the bytes record") for x in v.failures)
    assert len(v.failures) == 3, v.failures
    assert v.facts["segments"] == 1


def test_another_unit_key_is_refused(pkg: Path) -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    v = verify_package(pkg, other)
    assert not v.ok
    assert "2. no certificate in certs/ is signed by the unit key" in v.failures
    assert "3. the checkpoint is not signed by a dock key certified in step 2" in v.failures
    assert v.facts["checkpoint"]["signed_by"] is None


def test_a_flipped_byte_in_any_file_is_refused(built: Built, pkg: Path) -> None:
    """The README's steps (SHA256SUMS aside) catch a flipped byte anywhere."""
    files = sorted(p for p in pkg.rglob("*") if p.is_file())
    assert len(files) == 16
    for path in files:
        original = path.read_bytes()
        for pos in sorted({0, len(original) // 2, len(original) - 1}):
            data = bytearray(original)
            data[pos] ^= 0x01
            path.write_bytes(bytes(data))
            v = verify_package(pkg, built.unit_key)
            path.write_bytes(original)
            rel = path.relative_to(pkg).as_posix()
            assert not v.ok, f"{rel} byte {pos}"
            if rel != "SHA256SUMS":
                # not only the convenience list: a step that proves something refuses it
                assert [x for x in v.failures if not x.startswith("1. ")], (rel, pos)
    assert verify_package(pkg, built.unit_key).ok


def test_the_inclusion_check_is_not_vacuous(pkg: Path) -> None:
    proofs = cbor2.loads((pkg / "log" / "proofs.cbor").read_bytes())
    size, root = proofs["size"], proofs["root"]
    for item in proofs["entries"]:
        leaf, index, proof = leaf_hash(item["entry"]), item["index"], item["proof"]
        assert inclusion_ok(leaf, index, size, proof, root)
        assert not inclusion_ok(leaf, index ^ 1, size, proof, root)
        assert not inclusion_ok(leaf, index, 1, proof, root)
        assert not inclusion_ok(leaf, size, size, proof, root)
        assert not inclusion_ok(leaf_hash(item["entry"] + b"\x00"), index, size, proof, root)
        assert not inclusion_ok(leaf, index, size, proof[:-1], root)
        assert not inclusion_ok(leaf, index, size, [*proof, root], root)
