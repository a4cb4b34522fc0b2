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


def row_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a register row as another machine sends it (a dock's log entry
    at the centre), before anything relies on it; None if it is one this code wrote. The
    rows others rely on (SHARED_KINDS) are checked field by field."""
    from host_agent.custody.recorders import EVENTS
    from host_agent.custody.register import CLASSES

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
    about_record_or_case = subject.startswith(("case/", "record/"))
    if what == "classify" and (f.get("class") not in CLASSES or not about_record_or_case):
        return f"a classification of {subject!r} as {f.get('class')!r}"
    if what == "hold" and (not isinstance(f.get("on"), bool) or not about_record_or_case):
        return f"a hold on {subject!r} that is neither on nor off"
    if what == "evidence" and (not isinstance(f.get("case"), str)
                               or not subject.startswith("record/")):
        return f"an evidence mark of {subject!r} in no case"
    if what == "hall" and not (subject.startswith("case/")
                               and _HEX64.fullmatch(str(f.get("object")))
                               and isinstance(f.get("size"), int)
                               and isinstance(f.get("statement"), str)):
        return "hall footage that does not name its object, size and attestation"
    if what == "recorder" and (f.get("event") not in EVENTS
                               or not subject.startswith("device/")
                               or (f["event"] == "issue" and not isinstance(f.get("officer"), str))
                               or (f["event"] == "maintenance"
                                   and not isinstance(f.get("in_service"), bool))):
        return f"a recorder custody row of event {f.get('event')!r} is not one this code writes"
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
