"""Everything the vault knows about one case: its phases, segments, events, gaps, hall footage,
its class and holds, and every request, access and refusal that touched it.

Looking is an access too: the viewer must be a registered person cleared for the case's
class, and each view is registered (what = "access", subject case/<case>, act "case").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from host_agent.custody import hall
from host_agent.custody import items as itemlib
from host_agent.custody.register import (
    PersonSigner,
    RecordRef,
    Register,
    check_case,
    class_rank,
)
from host_agent.vault.timeline import rebuild

if TYPE_CHECKING:
    from host_agent.custody.archive import Archive


def view(vault: Archive, case: str, *, by: str,
         person: PersonSigner | None = None) -> dict[str, Any]:
    """The case, for `by` (signed by `person` once the register is authenticated)."""
    check_case(case)
    register = Register(vault, person=person)
    members = sorted(itemlib.case_members(vault, register, case))
    cls = itemlib.items_class(vault, register, members, [case])
    viewer = register.person(by)
    subject = f"case/{case}"
    if viewer is None:
        raise register.refuse(subject, "case", by, f"{by} is not a registered person")
    if class_rank(viewer["clearance"]) < class_rank(cls):
        raise register.refuse(subject, "case", by,
                              f"{by} is cleared for {viewer['clearance']}, the case is {cls}")
    out = _gather(vault, register, case, members, cls)
    register.append("access", by, subject, {"act": "case", "items": [subject]}, act="case")
    return out


def _gather(vault: Archive, register: Register, case: str, members: list[RecordRef],
            cls: str) -> dict[str, Any]:
    phases, segments, events = [], [], []
    for device_id in sorted({r.device_id for r in members}):
        rows = {int(str(r["seq"])): r for r in vault.records(device_id)}
        fields = [itemlib.signed_fields(vault, r) for r in members if r.device_id == device_id]
        for p in rebuild(fields):
            if p.case == case:
                phases.append({"device": device_id, **p.to_dict()})
        for f in fields:
            row = rows[f["seq"]]
            ref = f"{device_id}/{f['seq']}"
            if f["kind"] == "segment":
                segments.append({"record": ref, "t_start": f["t_start"], "t_end": f["t_end"],
                                 "size": f["size"], "sha256": f["sha256"].hex(),
                                 "data": row["data_state"], "clock": f["clock"].get("state")})
            else:
                events.append({"record": ref, "kind": f["kind"],
                               "name": f.get("event", f.get("cause")),
                               "t": f.get("t", f.get("t_last")),
                               "detail": f.get("detail", {})})
    refs = {str(r) for r in members} | {f"case/{case}"}
    touched = []
    requests: set[str] = set()  # the requests that name the case or its records
    for entry in vault.custody():
        info: dict[str, Any] = entry["fields"]
        subject = str(entry["subject"])
        about = {str(i) for i in info.get("items") or [] if not isinstance(i, dict)}
        about |= {subject, subject.removeprefix("record/")}
        if entry["what"] == "request" and _names(info.get("items") or [], case, refs):
            requests.add(f"request/{entry['id']}")
            about.add(f"case/{case}")
        if about & refs or subject in requests:
            touched.append({"id": entry["id"], "what": entry["what"], "at": entry["at"],
                            "by": entry["actor"], "subject": subject,
                            **{k: v for k, v in info.items() if k not in ("items", "files")},
                            "items": len(info.get("items") or [])})
    return {"case": case, "class": cls, "held": register.held(f"case/{case}"),
            "records": len(members), "phases": phases, "segments": segments,
            "events": events, "hall": hall.of_case(vault, case), "register": touched}


def _names(items: list[Any], case: str, refs: set[str]) -> bool:
    """Whether a request's items name the case or any of its records."""
    for item in items:
        if isinstance(item, dict) and (item.get("case") == case
                                       or set(item.get("records") or []) & refs):
            return True
    return False
