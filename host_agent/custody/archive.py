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
from pathlib import Path
from typing import Any, Protocol

# register kinds a dock's rows contribute to the central's register (see the docstring)
SHARED_KINDS = ("classify", "hold", "evidence", "hall", "recorder")


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
