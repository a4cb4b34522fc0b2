"""Make an export package (host_agent/custody/package.py says what is in one) under an
approved request, and the view and copy acts that hand out footage.

Nothing is half-written: the package is built in a staging directory beside the destination
and renamed into place only when complete; a refused export leaves nothing but its registered
refusal. Nothing leaves unregistered: the act is registered as begun (what = "begun", naming
the staging directory) before the directory exists, so a power cut mid-copy leaves only bytes
the register names; the act's own "access" row follows when it is complete.
"""

from __future__ import annotations

import hashlib
import html
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host_agent.custody import hall, package
from host_agent.custody import items as itemlib
from host_agent.custody.register import CustodyError, PersonSigner, RecordRef, Register
from host_agent.vault import log
from host_agent.vault.files import fsync_dir
from host_agent.vault.schema import now
from host_agent.vault.timeline import rebuild
from protocol import cbor

if TYPE_CHECKING:
    from host_agent.custody.archive import Archive
    from host_agent.vault import Signer

README = """\
Evidence export package {package}
================================================================

Made from the vault whose log is "{origin}" under access request #{request}
({body}, letter {letter}), approved by {approver}. Open summary.html to read it.

Check it with the bodycam tool:   bodycam verify THIS_DIRECTORY --trust UNIT.pub

The unit's public key must come from the unit itself, not from this package: unit.pub here
only says which key the package was made for.

Check it without the tool (sha256sum and any COSE / Ed25519 library). All hashes are SHA-256;
CBOR is RFC 8949; times in the entries are UTC text, in the certificates microseconds since
1970.
 1. sha256sum -c SHA256SUMS       every file arrived whole (a convenience: the proof follows).
 2. certs/*.cose are COSE_Sign1 (RFC 9052, tag 18: [protected, unprotected, payload,
    signature]) signed with EdDSA by the unit's key: the signature is Ed25519 over the CBOR of
    ["Signature1", protected, b"", payload]. The payload (CBOR) names the dock ("dock"), its
    Ed25519 key ("key") and its validity ("nb", "na").
 3. log/checkpoint is a C2SP signed note. Its text is everything up to and including the
    newline before the blank line: the origin, the tree size and the base64 root hash, one per
    line. The signature line is "— NAME BASE64"; BASE64 decodes to a 4-byte key hash
    (the first 4 bytes of SHA-256(NAME + "\\n" + 0x01 + dock key)) then the 64-byte Ed25519
    signature over the text: verify it with the dock key from step 2.
 4. log/proofs.cbor (CBOR): "size" and "root" are the checkpoint's; each of "entries" holds a
    log entry ("entry": CBOR bytes), its "index" and an RFC 6962 / RFC 9162 inclusion proof
    ("proof"): the leaf is SHA-256(0x00 || entry), an interior node SHA-256(0x01 || left ||
    right); each proof must lead from its leaf to the root.
 5. Decode the proven entries (CBOR maps). Register entries have "kind": "custody", a "what",
    an "actor" (who), an "at", a "subject" and "fields" (JSON text). The export is the entry
    whose fields hold "act": "export", "package": "{package}" and "package_sha256": the hex
    SHA-256 of package.cbor; its "items" are the records in the package. Its "subject" is
    "request/{request}": the request is the entry with "what": "request" and "id": {request}
    (body, letter, requester, ID number, reason in its fields); the approval is the entry with
    "what": "decision", the same subject and "approved": true in its fields, and its "actor"
    is the approver. The dock certificate must be valid ("nb" <= time <= "na") at the
    export's "at".
 6. package.cbor (CBOR) lists, under "files", every file but itself, SHA256SUMS and log/ with
    its SHA-256 (32 raw bytes): compare. Its "vault" is the checkpoint's origin.
 7. Each recorder's key (keys/DEVICE.pub, 32 bytes) is the "public_key" of its proven
    "enrolment" entry. Each record (records/DEVICE/SEQ.cose) is a COSE_Sign1 signed with
    EdDSA by that key (as in step 2); its SHA-256 is the "record_sha256" of its proven
    "record" entry; its payload (CBOR) is the signed manifest. A segment record's "sha256"
    and "size" are those of segments/SHA256.bin; event and gap records carry no segment.
    Records of one recorder link: "prev" of record n is the SHA-256 of record n-1's file
    (32 zero bytes for record 1); only records both present in the package can be linked.
 8. Hall footage (hall/SHA256.bin), if any, was not signed by a recorder: hall/SHA256.cose
    is the dock's attestation (COSE_Sign1 by the dock key, payload type "hall" naming the
    footage's "sha256" and "size"), and the proven entry with "what": "hall" names both
    ("object", "statement" in hex).
"""


def _inside(root: Path, rel: str) -> Path:
    """root/rel, refused if `rel` (built from names others chose) would leave the package."""
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or not parts:
        raise CustodyError(f"{rel!r} would leave the package; refusing to write it")
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write(root: Path, rel: str, data: bytes, files: dict[str, bytes] | None) -> None:
    path = _inside(root, rel)
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if files is not None:
        files[rel] = hashlib.sha256(data).digest()


def _copy(vault: Archive, sha256: bytes, root: Path, rel: str,
          files: dict[str, bytes]) -> None:
    path = _inside(root, rel)
    vault.copy_object(sha256, path)
    files[rel] = package.sha256_file(path)


def authorised_refs(vault: Archive, register: Register, request_id: int, act: str,
                    refs: list[RecordRef] | None, by: str) -> tuple[dict[str, Any],
                                                                    list[RecordRef]]:
    """The request and the records an act may take under it (all the request covers when
    `refs` is None); refused and registered otherwise."""
    try:
        request = register.request(request_id)
        covered = itemlib.resolve(vault, register, request["items"])
    except CustodyError as exc:
        raise register.refuse(f"request/{request_id}", act, by, str(exc)) from None
    wanted = sorted(covered) if refs is None else sorted(set(refs))
    absent = itemlib.missing(vault, wanted)
    if absent:
        raise register.refuse(f"request/{request_id}", act, by,
                              "the vault holds no record " + ", ".join(map(str, absent[:5])),
                              [str(r) for r in wanted])
    if not wanted:
        raise register.refuse(f"request/{request_id}", act, by,
                              f"request #{request_id} covers no record the vault holds")
    cls = itemlib.items_class(vault, register, wanted)
    register.authorise(request_id, act, wanted, by=by, covered=covered, items_class=cls)
    return request, wanted


def hand_out(vault: Archive, request_id: int, act: str, refs: list[RecordRef] | None,
             out: Path, by: str, person: PersonSigner | None = None) -> list[RecordRef]:
    """View or copy: the records and their segments, byte-exact, into `out` (a new
    directory), registered as `act` under the request (signed by `person`: register.py)."""
    if act not in ("view", "copy"):
        raise CustodyError(f"act {act!r} is not view or copy")
    register = Register(vault, person=person)
    _, wanted = authorised_refs(vault, register, request_id, act, refs, by)
    tmp = _staging(register, request_id, act, wanted, by, out)
    try:
        files: dict[str, bytes] = {}
        for ref in wanted:
            _write(tmp, package.record_path(ref.device_id, ref.seq),
                   vault.record_bytes(ref.device_id, ref.seq), files)
            fields = itemlib.signed_fields(vault, ref)
            if "sha256" in fields and vault.has_object(fields["sha256"]):
                _copy(vault, fields["sha256"], tmp, package.segment_path(fields["sha256"]),
                      files)
        register.register_act(request_id, act, wanted, by=by, out=str(out.absolute()),
                              files={k: v.hex() for k, v in sorted(files.items())})
        tmp.rename(out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return wanted


def export(vault: Archive, request_id: int, out: Path, *, by: str, signer: Signer,
           unit_public: bytes | None = None,
           person: PersonSigner | None = None) -> dict[str, Any]:
    """Make the package for a court under an approved request; what it holds (the act
    signed by `person`: register.py)."""
    register = Register(vault, unit_public=unit_public, person=person)
    request, wanted = authorised_refs(vault, register, request_id, "export", None, by)
    decision_log = vault.log_index(_last_id(vault, "decision", f"request/{request_id}"))
    request_log = vault.log_index(f"custody/{request_id}")
    tmp = _staging(register, request_id, "export", wanted, by, out)
    try:
        return _build(vault, register, request, wanted, out, tmp, by=by, signer=signer,
                      unit_public=unit_public, request_log=request_log,
                      decision_log=decision_log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _staging(register: Register, request_id: int, act: str, wanted: list[RecordRef], by: str,
             out: Path) -> Path:
    """The new directory an act is built in, beside `out`: registered as begun first."""
    if out.exists():
        raise CustodyError(f"{out} exists; name a new directory")
    if not out.parent.is_dir():
        raise CustodyError(f"{out.parent} is not a directory")
    tmp = out.parent.absolute() / f".part-{uuid.uuid4().hex}"
    register.register_begun(request_id, act, wanted, by=by, out=str(out.absolute()),
                            staging=str(tmp))
    tmp.mkdir()
    fsync_dir(out.parent)
    return tmp


def _last_id(vault: Archive, what: str, subject: str) -> str:
    rows = vault.custody(what=what, subject=subject)
    return f"custody/{rows[-1]['id']}"


def _build(vault: Archive, register: Register, request: dict[str, Any], wanted: list[RecordRef],
           out: Path, tmp: Path, *, by: str, signer: Signer, unit_public: bytes | None,
           request_log: int | None, decision_log: int | None) -> dict[str, Any]:
    files: dict[str, bytes] = {}
    records, devices, fields_of = [], [], {}
    proven = {request_log, decision_log}
    for device_id in sorted({r.device_id for r in wanted}):
        key = vault.public_key(device_id)
        assert key is not None
        _write(tmp, f"keys/{device_id}.pub", key, files)
        index = vault.log_index(f"devices/{device_id}")
        proven.add(index)
        devices.append({"device_id": device_id, "key": f"keys/{device_id}.pub", "log": index})
    for ref in wanted:
        rel = package.record_path(ref.device_id, ref.seq)
        _write(tmp, rel, vault.record_bytes(ref.device_id, ref.seq), files)
        fields = itemlib.signed_fields(vault, ref)
        fields_of[ref] = fields
        seg = None
        if "sha256" in fields and vault.has_object(fields["sha256"]):
            seg = package.segment_path(fields["sha256"])
            if seg not in files:
                _copy(vault, fields["sha256"], tmp, seg, files)
        index = vault.log_index(f"records/{ref.device_id}/{ref.seq}")
        proven.add(index)
        records.append({"ref": str(ref), "record": rel, "segment": seg, "log": index})
    certs: list[str] = []
    known = [getattr(signer, "cert", None)] + [d["cert"] for d in vault.docks()]
    for cert in dict.fromkeys(c for c in known if isinstance(c, bytes)):
        rel = f"certs/{len(certs) + 1}.cose"
        _write(tmp, rel, cert, files)
        certs.append(rel)
    if unit_public is not None:
        _write(tmp, "unit.pub", unit_public.hex().encode() + b"\n", files)
    hall_items = []
    for case in sorted({str(i["case"]) for i in request["items"] if "case" in i}):
        for h in hall.of_case(vault, case):
            sha = bytes.fromhex(h["object"])
            rel, srel = f"hall/{sha.hex()}.bin", f"hall/{sha.hex()}.cose"
            _copy(vault, sha, tmp, rel, files)
            _write(tmp, srel, bytes.fromhex(h["statement"]), files)
            index = vault.log_index(f"custody/{h['id']}")
            proven.add(index)
            hall_items.append({"id": h["id"], "case": case, "file": rel,
                               "statement": srel, "log": index})
    package_id = uuid.uuid4().hex
    _write(tmp, "summary.html", summary_html(vault, register, request, fields_of, package_id,
                                             by).encode(), files)
    _write(tmp, "README.txt", README.format(
        package=package_id, origin=vault.origin, request=request["id"], body=request["body"],
        letter=request["letter"], approver=request["decision"]["by"]).encode(), files)
    manifest = {"format": package.FORMAT, "package": package_id, "vault": vault.origin,
                "created_at": now(), "request": request["id"], "request_log": request_log,
                "decision_log": decision_log, "records": records, "devices": devices,
                "hall": hall_items,
                "certs": certs, "files": files}
    # the export's register entry needs the manifest's hash, and the manifest its index: the
    # entry goes at the next index of the log, which this transaction holds
    with vault.transaction():
        export_log = vault.log_size()
        manifest["export_log"] = export_log
        man_bytes = bytes(cbor.encode(manifest))
        _, index = register.register_act(
            request["id"], "export", wanted, by=by, package=package_id,
            hall=[h["id"] for h in hall_items],
            package_sha256=hashlib.sha256(man_bytes).hexdigest(), out=str(out.absolute()))
        if index != export_log:
            raise CustodyError("the log moved while the export was registered; try again")
    _write(tmp, package.MANIFEST, man_bytes, None)
    note = vault.checkpoint(signer)
    cp_size = int(note.split(b"\n")[1])
    proven.add(export_log)
    leaves = vault.log_leaves()[:cp_size]
    indices = sorted(i for i in proven if i is not None)
    proofs = log.inclusion_proofs(leaves, indices, cp_size)
    entries = [{"index": i, "entry": vault.log_entry_bytes(i), "proof": proofs[i]}
               for i in indices]
    _write(tmp, package.CHECKPOINT, note, None)
    _write(tmp, package.PROOFS, bytes(cbor.encode(
        {"size": cp_size, "root": log.root(leaves), "entries": entries})), None)
    sums = {**files, package.MANIFEST: hashlib.sha256(man_bytes).digest(),
            package.CHECKPOINT: hashlib.sha256(note).digest()}
    sums[package.PROOFS] = package.sha256_file(tmp / package.PROOFS)
    _write(tmp, package.SUMS, "".join(f"{h.hex()}  {rel}\n" for rel, h in sorted(sums.items())
                                      ).encode(), None)
    for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        fsync_dir(d)
    tmp.rename(out)
    fsync_dir(out.parent)
    return {"package": package_id, "out": str(out), "records": len(records),
            "segments": sum(1 for r in records if r["segment"]), "devices": len(devices),
            "hall": len(hall_items),
            "log_size": cp_size, "export_log": export_log}


def summary_html(vault: Archive, register: Register, request: dict[str, Any],
                 fields_of: dict[RecordRef, dict[str, Any]], package_id: str, by: str) -> str:
    """The people's page of a package: the request, the phases rebuilt, the records."""
    e = html.escape
    rows = []
    phases_html = []
    for device_id in sorted({r.device_id for r in fields_of}):
        chain = [fields_of[r] for r in sorted(fields_of) if r.device_id == device_id]
        for p in rebuild(chain):
            status = "; ".join(p.findings) or "complete, notice given"
            phases_html.append(
                f"<tr><td>{e(device_id)}</td><td>{p.row}</td><td>{e(p.case)}</td>"
                f"<td>{e(p.officer)}</td><td>{e(p.matter)} / {e(p.stage)}</td>"
                f"<td>{_utc(p.started_us)}</td><td>{_utc(p.ended_us)}</td>"
                f"<td>{len(p.segments)}</td><td>{len(p.refusals)}</td><td>{e(status)}</td></tr>")
    for ref in sorted(fields_of):
        f = fields_of[ref]
        what = f["kind"] if f["kind"] != "event" else f"event: {f['event']}"
        if f["kind"] == "gap":
            what = f"gap: {f['cause']}"
        digest = f["sha256"].hex() if "sha256" in f else ""
        rows.append(f"<tr><td>{e(str(ref))}</td><td>{e(what)}</td>"
                    f"<td>{_utc(f.get('t_start', f.get('t', f.get('t_last'))))}</td>"
                    f"<td>{f.get('size', '')}</td><td><code>{digest[:16]}</code></td></tr>")
    d = request["decision"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evidence export {package_id}</title>
<style>body{{font:14px/1.4 sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:2px 6px;text-align:left}} th{{background:#eee}}</style>
</head><body>
<h1>Evidence export package</h1>
<p>Package <code>{package_id}</code>, made by {e(by)} from vault <code>{e(vault.origin)}</code>.</p>
<h2>Authority</h2>
<table><tr><th>Request</th>
<td>#{request['id']}, filed {e(request['at'])} by {e(request['by'])}</td></tr>
<tr><th>Requesting body</th><td>{e(request['body'])}, letter {e(request['letter'])}</td></tr>
<tr><th>Requester</th><td>{e(request['requester'])} (ID {e(request['requester_id'])})</td></tr>
<tr><th>Reason</th><td>{e(request['reason'])}</td></tr>
<tr><th>Approved by</th><td>{e(d['by'])} at {e(d['at'])}</td></tr></table>
<h2>Phases</h2>
<table><tr><th>Recorder</th><th>Row</th><th>Case</th><th>Officer</th><th>Matter / stage</th>
<th>Started (UTC)</th><th>Ended (UTC)</th><th>Segments</th><th>Refused</th><th>Findings</th></tr>
{''.join(phases_html) or '<tr><td colspan="10">no phase among these records</td></tr>'}</table>
<h2>Records</h2>
<table><tr><th>Record</th><th>What</th><th>Time (UTC)</th><th>Bytes</th><th>SHA-256</th></tr>
{''.join(rows)}</table>
<p>How to check this package: README.txt.</p>
</body></html>
"""


def _utc(us: int | None) -> str:
    if us is None:
        return "—"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")
