"""Footage from fixed cameras (annex rows 1-2: the hall where parties are received and
heard), imported into a case with its provenance.

No recorder signed it, so nothing proves where it came from but the import: the dock signs
a statement (type "hall": case, camera, location, times, the bytes' SHA-256 and size, who
imported it and when) with its certified key, the bytes go into objects/ by their SHA-256,
and a register row (what = "hall", subject case/<case>) keeps the statement and the
provenance, marked `device_signed: false`. Every view of a case says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from host_agent.custody import times
from host_agent.custody.register import CustodyError, check_case, check_name
from protocol import authority

if TYPE_CHECKING:
    from host_agent.custody.archive import Archive
    from host_agent.vault import Signer, Vault

TYPE_HALL = "hall"


def import_footage(vault: Vault, *, case: str, camera: str, location: str, source: Path,
                   start_us: int, end_us: int, provenance: str, by: str,
                   signer: Signer) -> dict[str, Any]:
    """Import a file of hall footage into `case`; the register row's fields."""
    check_case(case)
    check_name(camera, "camera")
    check_name(by, "--by")
    if not location.strip() or not provenance.strip():
        raise CustodyError("hall footage needs its location and provenance (how it was taken"
                           " off the camera, by whom)")
    if start_us >= end_us:
        raise CustodyError("the footage must end after it starts")
    if not source.is_file():
        raise CustodyError(f"{source} is not a file")
    sha, size = vault.store_object(source)
    doc = {"type": TYPE_HALL, "case": case, "camera": camera, "location": location,
           "t_start": start_us, "t_end": end_us, "sha256": sha, "size": size,
           "by": by, "at": times.now_us(), "dock": getattr(signer, "dock_id", signer.name)}
    statement = authority.sign_statement(doc, authority.key_id(signer.public_key), signer.sign)
    fields = {"camera": camera, "location": location, "start": times.iso(start_us),
              "end": times.iso(end_us), "object": sha.hex(), "size": size,
              "file": source.name, "provenance": provenance, "device_signed": False,
              "statement": statement.hex()}
    row_id, _ = vault.append_custody("hall", by, f"case/{case}", fields)
    return {"id": row_id, **fields}


def of_case(vault: Archive, case: str) -> list[dict[str, Any]]:
    """The case's hall footage: each row's fields, then what the register says of the row
    itself (so no field can stand in for its id or author), never device-signed."""
    return [{**r["fields"], "id": r["id"], "at": r["at"], "by": r["actor"],
             "device_signed": False}
            for r in vault.custody(what="hall", subject=f"case/{case}")]


def objects(vault: Archive) -> dict[str, int]:
    """object hex -> size, of all hall footage (verify accounts for these files)."""
    return {str(r["fields"]["object"]): int(r["fields"]["size"])
            for r in vault.custody(what="hall")}
