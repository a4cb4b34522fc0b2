"""What a request's items, a case and a record's class come to, in records of the vault.

An item is one of
    {"case": CASE}                                   every record of the case
    {"device": ID, "from_us": T0, "to_us": T1}       a recorder's records overlapping [T0, T1)
    {"records": ["ID/SEQ", …]}                       those records
A record belongs to a case when its signed phase names the case, or when the register marked
it as evidence in the case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from host_agent.custody.register import CustodyError, RecordRef, check_case, class_rank
from protocol import cose, manifest

if TYPE_CHECKING:
    from host_agent.custody.archive import Archive
    from host_agent.custody.register import Register


def signed_fields(vault: Archive, ref: RecordRef) -> dict[str, Any]:
    """The manifest fields of a stored record, as signed."""
    raw = vault.record_bytes(ref.device_id, ref.seq)
    return manifest.decode(cose.parse_sign1(raw).payload)


def phase_case(vault: Archive, ref: RecordRef) -> str | None:
    phase = signed_fields(vault, ref).get("phase") or {}
    case = phase.get("case")
    return case if isinstance(case, str) and case else None


def case_members(vault: Archive, register: Register, case: str) -> set[RecordRef]:
    check_case(case)
    out: set[RecordRef] = set()
    for device_id in vault.case_devices(case):
        for row in vault.records(device_id):
            ref = RecordRef(device_id, int(str(row["seq"])))
            if phase_case(vault, ref) == case:
                out.add(ref)
    for mark in vault.custody(what="evidence"):
        ref = RecordRef.parse(str(mark["subject"]).removeprefix("record/"))
        # a mark on a record this archive does not hold (yet) adds nothing to the case
        if mark["fields"]["case"] == case and vault.stored_record_hash(ref.device_id,
                                                                       ref.seq):
            out.add(ref)
    return out


def cases_of(vault: Archive, register: Register, ref: RecordRef) -> list[str]:
    """The cases a record belongs to."""
    cases = set(register.evidence_cases(ref))
    case = phase_case(vault, ref)
    if case:
        cases.add(case)
    return sorted(cases)


def check_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items of a request, checked for shape (not yet against the vault)."""
    for item in items:
        if not isinstance(item, dict):
            raise CustodyError(f"an item is a case, a device and time range, or records:"
                               f" not {item!r}")
        if set(item) == {"case"}:
            check_case(item["case"])
        elif set(item) == {"device", "from_us", "to_us"}:
            if not all(isinstance(item[k], int) for k in ("from_us", "to_us")) or (
                    item["from_us"] >= item["to_us"]):
                raise CustodyError(f"the time range of {item['device']} is empty or not times")
        elif set(item) == {"records"}:
            for text in item["records"]:
                RecordRef.parse(text)
        else:
            raise CustodyError(f"an item is a case, a device and time range, or records:"
                               f" not {item!r}")
    return items


def resolve(vault: Archive, register: Register, items: list[dict[str, Any]]) -> set[RecordRef]:
    """The records the items name that the vault holds."""
    out: set[RecordRef] = set()
    for item in check_items(items):
        if "case" in item:
            out |= case_members(vault, register, item["case"])
        elif "device" in item:
            out |= {RecordRef(str(item["device"]), seq) for seq in vault.records_between(
                str(item["device"]), item["from_us"], item["to_us"])}
        else:
            out |= {ref for ref in map(RecordRef.parse, item["records"])
                    if vault.stored_record_hash(ref.device_id, ref.seq) is not None}
    return out


def missing(vault: Archive, refs: list[RecordRef]) -> list[RecordRef]:
    """The records named that the vault does not hold."""
    return [r for r in refs if vault.stored_record_hash(r.device_id, r.seq) is None]


def items_class(vault: Archive, register: Register, refs: set[RecordRef] | list[RecordRef],
                extra_cases: list[str] | tuple[str, ...] = ()) -> str:
    """The highest class among the records (and these cases)."""
    names = ["none"] + [register.class_of(f"case/{c}") for c in extra_cases]
    for ref in refs:
        names.append(register.record_class(ref, cases_of(vault, register, ref)))
    return max(names, key=class_rank)
