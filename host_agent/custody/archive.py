"""What the records office works on: one interface, two backends.

    host_agent/vault/       a dock's vault (SQLite, files): `Vault`
    host_agent/central/     the central index (PostgreSQL, the S3 Object Lock store):
                            `host_agent.central.archive.CentralArchive`

The register, the export and the compliance report (this package) read and write through
`Archive` only, so the records office does the same things, with the same rules, at a dock and
at the centre. Both keep the register as append-only rows, each with its entry in the
backend's own Merkle log (RFC 6962), and sign checkpoints of that log with a key the unit
certified: a package made at either is checked by the same `bodycam verify`.

Where the rows come from:
- at a dock, everything is the vault's own;
- at the centre, the evidence (keys, records, segments, dockings, docks) is what the docks
  forwarded and the central re-verified; the register is the central's own (people, requests,
  decisions, acts, refusals), and the docks' register rows that describe the evidence
  (classification, holds, evidence marks, hall footage, the recorders' custody) are read
  beside it, each tagged with its dock log's "origin". When several sources have a say on
  one subject, the strictest word wins (the highest class, any hold).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any, Protocol

# register kinds a dock's rows contribute to the central's register (see the docstring)
SHARED_KINDS = ("classify", "hold", "evidence", "hall", "recorder")
KINDS = SHARED_KINDS + ("person", "request", "decision", "begun", "access", "refusal",
                        "retention")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_TEXT: tuple[type, ...] = (str,)
_INT: tuple[type, ...] = (int,)
_BOOL: tuple[type, ...] = (bool,)
# The exact fields of each register row another machine's readers rely on, as this code
# writes them (register.py, hall.py, recorders.py): name -> the types it may have
SHAPES: dict[str, dict[str, tuple[type, ...]]] = {
    "classify": {"class": _TEXT, "reason": _TEXT},
    "hold": {"on": _BOOL, "reason": _TEXT},
    "evidence": {"case": _TEXT},
    "hall": {"camera": _TEXT, "location": _TEXT, "start": _TEXT, "end": _TEXT,
             "object": _TEXT, "size": _INT, "file": _TEXT, "provenance": _TEXT,
             "device_signed": _BOOL, "statement": _TEXT},
    "recorder/inventory": {"event": _TEXT, "model": _TEXT, "serial": _TEXT, "note": _TEXT},
    "recorder/issue": {"event": _TEXT, "officer": _TEXT, "docking": _INT},
    "recorder/return": {"event": _TEXT, "condition": _TEXT},
    "recorder/maintenance": {"event": _TEXT, "kind": _TEXT, "note": _TEXT,
                             "in_service": _BOOL},
}
SUBJECTS = {"classify": ("case/", "record/"), "hold": ("case/", "record/"),
            "evidence": ("record/",), "hall": ("case/",), "recorder": ("device/",)}


def row_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a register row as another machine sends it (a dock's log entry
    at the centre), before anything relies on it; None if it is one this code writes. Rows
    of the kinds the centre reads (SHARED_KINDS) must have exactly the fields their writers
    give them (SHAPES), with meaningful values."""
    from host_agent.custody.register import CLASSES, CustodyError, RecordRef, check_case

    if not all(isinstance(row.get(k), str) for k in ("what", "at", "actor", "subject")):
        return "a register row names what, when, who and its subject as text"
    what, subject = row["what"], row["subject"]
    if what not in KINDS:
        return f"a register row of unknown kind {what!r}"
    try:
        f = json.loads(str(row.get("fields")))
    except ValueError:
        return f"the fields of a {what} row are not JSON"
    if not isinstance(f, dict):
        return f"the fields of a {what} row are not an object"
    if what not in SHARED_KINDS:
        return None
    f = dict(f)
    proof = f.pop("proof", None)  # a signed act (register.py): checked where it is written
    if proof is not None and not (isinstance(proof, dict) and set(proof) == {"t", "key", "sig"}
                                  and isinstance(proof["t"], int)
                                  and all(isinstance(proof[k], str) for k in ("key", "sig"))):
        return f"a {what} row whose proof is not {{t, key, sig}}"
    shape = SHAPES.get(f"{what}/{f.get('event')}" if what == "recorder" else what)
    if shape is None or set(f) != set(shape) or not all(
            isinstance(f[k], t) for k, t in shape.items()):
        return f"a {what} row whose fields are not those this code writes"
    if not subject.startswith(SUBJECTS[what]):
        return f"a {what} row about {subject!r}"
    try:
        if subject.startswith("record/"):
            RecordRef.parse(subject.removeprefix("record/"))
        elif subject.startswith("case/"):
            check_case(subject.removeprefix("case/"))
        if what == "evidence":
            check_case(f["case"])
    except CustodyError as exc:
        return f"a {what} row: {exc}"
    if what == "classify" and f["class"] not in CLASSES:
        return f"a classification as {f['class']!r}"
    if what == "hall" and not (_HEX64.fullmatch(f["object"]) and _HEX.fullmatch(f["statement"])
                               and f["size"] >= 0 and f["device_signed"] is False):
        return "hall footage that does not name its object and attestation"
    return None


def docking_problem(report: object) -> str | None:
    """What is wrong with a docking report another machine sends, for the readers here (the
    compliance report, the recorders' history): each part they read has its type."""
    if not isinstance(report, dict):
        return "a docking report is a JSON object"
    parts: dict[str, tuple[object, tuple[type, ...]]] = {}
    clock, readiness, offload = (report.get(k) for k in ("clock", "readiness", "offload"))
    parts.update(clock=(clock, (dict,)), readiness=(readiness, (dict,)),
                 offload=(offload, (dict,)), dock=(report.get("dock"), (str,)))
    if isinstance(clock, dict):
        parts["clock.offset_before_us"] = (clock.get("offset_before_us"), (int,))
    if isinstance(readiness, dict):
        status = readiness.get("status")
        parts.update(ready=(readiness.get("ready"), (bool,)),
                     reasons=(readiness.get("reasons"), (list,)), status=(status, (dict,)))
        health = status.get("health") if isinstance(status, dict) else None
        parts["health"] = (health, (dict,))
        if isinstance(health, dict):
            parts.update(foreign=(health.get("foreign"), (list,)),
                         storage_full=(health.get("storage_full"), (bool,)))
    if isinstance(offload, dict):
        parts["offload.stored"] = (offload.get("stored"), (list,))
    for name, (value, types) in parts.items():
        if value is not None and not isinstance(value, types):
            return f"a docking report whose {name} is a {type(value).__name__}"
    return None


class Archive(Protocol):
    @property
    def origin(self) -> str:
        """The origin line of this backend's log checkpoints."""
        ...

    # -- the evidence ----------------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]: ...

    def public_key(self, device_id: str) -> bytes | None: ...

    def records(self, device_id: str) -> list[dict[str, Any]]:
        """The records-table rows of a device, in seq order (host_agent/vault/schema.py)."""
        ...

    def stored_record_hash(self, device_id: str, seq: int) -> bytes | None: ...

    def record_bytes(self, device_id: str, seq: int) -> bytes: ...

    def records_between(self, device_id: str, from_us: int, to_us: int) -> list[int]: ...

    def case_devices(self, case: str) -> list[str]: ...

    def events(self, *, device_id: str | None = None,
               case_no: str | None = None) -> list[dict[str, Any]]: ...

    def dockings(self, device_id: str | None = None) -> list[dict[str, Any]]: ...

    def docks(self) -> list[dict[str, Any]]:
        """The keys that signed this backend's checkpoints or the docks' (name, public_key,
        cert)."""
        ...

    def has_object(self, sha256: bytes) -> bool: ...

    def copy_object(self, sha256: bytes, dest: Path) -> None:
        """The object's bytes, checked against `sha256`, into the new file `dest`."""
        ...

    # -- the register and its log ----------------------------------------------------------------

    def custody(self, *, what: str | None = None, subject: str | None = None,
                since_id: int = 0) -> list[dict[str, Any]]: ...

    def append_custody(self, what: str, actor: str, subject: str,
                       fields: dict[str, Any]) -> tuple[int, int]:
        """(row id, log index) of a new register row."""
        ...

    def log_index(self, ref: str) -> int | None:
        """The index of the log entry committing to a row ("records/D/S", "devices/D",
        "custody/N")."""
        ...

    def log_size(self) -> int: ...

    def log_leaves(self) -> list[bytes]: ...

    def log_entry_bytes(self, index: int) -> bytes: ...

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """Appends inside it land at consecutive indices, after `log_size()` read in it."""
        ...

    def checkpoint(self, signer: Any) -> bytes:
        """Sign the log's size and root (a C2SP signed note) with a unit-certified key."""
        ...
