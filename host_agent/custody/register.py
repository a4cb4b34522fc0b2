"""The access register (Art. 9, 10), classification (Art. 3) and holds: who may see what.

Everything the records office decides is a row of the vault's `custody` table, appended with
its entry in the vault's Merkle log in the same transaction, so the register can no more be
edited quietly than the evidence. The current state (a person's clearance, a request's
approval, a case's class, a hold) is the latest row about it: nothing is ever updated.

    person      subject person/<name>     id_no, roles (approver, custodian, officer), clearance
    request     subject request           body, letter, requester, requester_id, reason, items
    decision    subject request/<id>      approved (true/false), note; by the approver
    classify    subject case/<c> | record/<device>/<seq>      class, reason
    hold        subject case/<c> | record/<device>/<seq>      on (true/false), reason
    evidence    subject record/<device>/<seq>                 case (the record is evidence in it)
    begun       subject request/<id>      act, items, out, staging: bytes are being copied
                                          into `staging` (registered before the first byte)
    access      subject request/<id>      act (view, copy, export, case), items, and what left
    refusal     subject request/<id> | what was asked          act, reason, items

A request's id is its row id. View, copy and export need an approved request from one of the
bodies of Art. 10 (or the unit itself) that covers every item, approved by a person whose
clearance reaches the highest class among the items at the time of the act; anything else is
refused, and the refusal is registered before the caller hears of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host_agent.vault.store import DEVICE_ID

if TYPE_CHECKING:
    from host_agent.custody.archive import Archive

CLASSES = ("none", "personal_privacy", "commercial_secret", "state_secret")  # Art. 3, rising
BODIES = ("public_security", "procuratorate", "court", "state_security",
          "discipline_inspection", "audit", "unit")  # Art. 10, and the unit's own use
ROLES = ("approver", "custodian", "officer")
ACTS = ("view", "copy", "export")
_NAME = re.compile(r"[^\s/][^/]{0,79}")
_CASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class CustodyError(Exception):
    """An act the register refuses; the message says why (and the refusal is registered)."""


@dataclass(frozen=True, order=True)
class RecordRef:
    """One signed record of the vault: "<device>/<seq>"."""

    device_id: str
    seq: int

    def __str__(self) -> str:
        return f"{self.device_id}/{self.seq}"

    @classmethod
    def parse(cls, text: str) -> RecordRef:
        device, _, seq = text.rpartition("/")
        if not DEVICE_ID.fullmatch(device) or not seq.isdigit() or int(seq) < 1:
            raise CustodyError(f"{text!r} is not a record (DEVICE/SEQ, e.g. SIM-1/4)")
        return cls(device, int(seq))


def check_name(text: str, what: str) -> str:
    if not isinstance(text, str) or not _NAME.fullmatch(text.strip()) or text != text.strip():
        raise CustodyError(f"{what} {text!r} is empty, too long or holds a '/'")
    return text


def check_case(text: str) -> str:
    if not isinstance(text, str) or not _CASE.fullmatch(text):
        raise CustodyError(f"case number {text!r} is not 1-64 of [A-Za-z0-9._-]")
    return text


def class_rank(name: str) -> int:
    try:
        return CLASSES.index(name)
    except ValueError:
        raise CustodyError(f"class {name!r} is not one of {', '.join(CLASSES)}") from None


class Register:
    """The custody register of one vault."""

    def __init__(self, vault: Archive) -> None:
        self.vault = vault

    # -- reading -------------------------------------------------------------------------------

    def latest(self, what: str, subject: str) -> dict[str, Any] | None:
        rows = self.vault.custody(what=what, subject=subject)
        return rows[-1] if rows else None

    def person(self, name: str) -> dict[str, Any] | None:
        row = self.latest("person", f"person/{name}")
        return None if row is None else {"name": name, **row["fields"]}

    def request(self, request_id: int) -> dict[str, Any]:
        """The request with its current decision ("decision": None until decided)."""
        rows = self.vault.custody(what="request", since_id=request_id - 1)[:1]
        if not rows or rows[0]["id"] != request_id:
            raise CustodyError(f"there is no access request #{request_id}")
        decision = self.latest("decision", f"request/{request_id}")
        return {"id": request_id, "at": rows[0]["at"], "by": rows[0]["actor"],
                **rows[0]["fields"], "decision": None if decision is None else
                {"approved": decision["fields"]["approved"], "by": decision["actor"],
                 "at": decision["at"], "note": decision["fields"].get("note", "")}}

    def latest_each(self, what: str, subject: str) -> list[dict[str, Any]]:
        """The latest row about a subject from each source that has a say on it: the vault
        alone at a dock; the central and each dock at the centre (host_agent/custody/archive.py)."""
        last: dict[str | None, dict[str, Any]] = {}
        for row in self.vault.custody(what=what, subject=subject):
            last[row.get("origin")] = row
        return list(last.values())

    def class_of(self, subject: str) -> str:
        """The highest class any source gave the subject ("none" if none did)."""
        names = [str(r["fields"]["class"]) for r in self.latest_each("classify", subject)]
        return max(names or ["none"], key=class_rank)

    def held(self, subject: str) -> bool:
        return any(r["fields"]["on"] for r in self.latest_each("hold", subject))

    def evidence_cases(self, ref: RecordRef) -> list[str]:
        return [str(r["fields"]["case"]) for r in
                self.vault.custody(what="evidence", subject=f"record/{ref}")]

    def record_class(self, ref: RecordRef, cases: list[str]) -> str:
        """The highest class on the record itself and on any case it belongs to."""
        names = [self.class_of(f"record/{ref}")] + [self.class_of(f"case/{c}") for c in cases]
        return max(names, key=class_rank)

    # -- writing -------------------------------------------------------------------------------

    def add_person(self, name: str, *, id_no: str, roles: list[str], clearance: str,
                   by: str) -> int:
        check_name(name, "name")
        check_name(by, "--by")
        check_name(id_no, "ID number")
        class_rank(clearance)
        bad = [r for r in roles if r not in ROLES]
        if bad or not roles:
            raise CustodyError(f"roles must be some of {', '.join(ROLES)}, not {bad or roles}")
        return self.vault.append_custody("person", by, f"person/{name}", {
            "id_no": id_no, "roles": sorted(set(roles)), "clearance": clearance})[0]

    def file_request(self, *, body: str, letter: str, requester: str, requester_id: str,
                     reason: str, items: list[dict[str, Any]], by: str) -> int:
        """Register a request (Art. 10: the body's letter, the requester and their ID); its
        id. It allows nothing until a cleared approver approves it."""
        if body not in BODIES:
            raise CustodyError(f"requesting body {body!r} is not one of {', '.join(BODIES)}")
        for value, what in ((letter, "letter number"), (requester, "requester"),
                            (requester_id, "requester's ID number"), (reason, "reason"),
                            (by, "--by")):
            if not isinstance(value, str) or not value.strip():
                raise CustodyError(f"the request needs its {what}")
        if not items:
            raise CustodyError("the request names no items (a case, a device and time range,"
                               " or records)")
        return self.vault.append_custody("request", by, "request", {
            "body": body, "letter": letter, "requester": requester,
            "requester_id": requester_id, "reason": reason, "items": items})[0]

    def decide(self, request_id: int, *, approver: str, approved: bool, note: str,
               items_class: str) -> None:
        """The approver's decision. Approval needs a person with the approver role and a
        clearance reaching `items_class` (the highest class among the request's items);
        otherwise it is refused and the refusal registered."""
        check_name(approver, "--by")
        self.request(request_id)  # there is one
        subject = f"request/{request_id}"
        # approving needs the items' clearance; refusing needs a registered approver
        self.check_clearance(subject, "approve" if approved else "deny", approver,
                             items_class if approved else "none")
        with self.vault.transaction():  # two approvers at once: the second sees the first
            earlier = self.latest("decision", subject)
            if earlier is None:
                self.vault.append_custody("decision", approver, subject,
                                          {"approved": approved, "note": note})
                return
        raise self.refuse(subject, "decide", approver,
                          f"request #{request_id} was already decided by {earlier['actor']}")

    def check_clearance(self, subject: str, act: str, approver: str, items_class: str) -> None:
        person = self.person(approver)
        if person is None or "approver" not in person["roles"]:
            raise self.refuse(subject, act, approver,
                              f"{approver} is not registered as an approver")
        if class_rank(person["clearance"]) < class_rank(items_class):
            raise self.refuse(subject, act, approver,
                              f"{approver} is cleared for {person['clearance']}, the items"
                              f" include {items_class}")

    def authorise(self, request_id: int, act: str, refs: list[RecordRef], *, by: str,
                  covered: set[RecordRef], items_class: str) -> dict[str, Any]:
        """Check that `act` on `refs` may happen under the request: approved, covering every
        item (`covered`: what its items resolve to), by an approver still cleared for the
        items' class. Returns the request; otherwise registers the refusal and raises it."""
        subject = f"request/{request_id}"
        try:
            request = self.request(request_id)
        except CustodyError as exc:
            raise self.refuse(subject, act, by, str(exc)) from None
        decision = request["decision"]
        if decision is None or not decision["approved"]:
            state = "not yet decided" if decision is None else f"refused by {decision['by']}"
            raise self.refuse(subject, act, by, f"request #{request_id} is {state}",
                              [str(r) for r in refs])
        outside = sorted(set(refs) - covered)
        if outside:
            raise self.refuse(subject, act, by,
                              f"request #{request_id} does not cover "
                              + ", ".join(str(r) for r in outside[:5])
                              + (f" and {len(outside) - 5} more" if len(outside) > 5 else ""),
                              [str(r) for r in refs])
        self.check_clearance(subject, act, decision["by"], items_class)
        return request

    def register_act(self, request_id: int, act: str, refs: list[RecordRef], *, by: str,
                     **extra: Any) -> tuple[int, int]:
        """Register an act done under a request; (row id, log index)."""
        return self.vault.append_custody("access", by, f"request/{request_id}", {
            "act": act, "items": [str(r) for r in refs], **extra})

    def register_begun(self, request_id: int, act: str, refs: list[RecordRef], *, by: str,
                       out: str, staging: str) -> None:
        """Register that an act's bytes start to leave (into `staging`, for `out`)."""
        self.vault.append_custody("begun", by, f"request/{request_id}", {
            "act": act, "items": [str(r) for r in refs], "out": out, "staging": staging})

    def refuse(self, subject: str, act: str, by: str, reason: str,
               items: list[str] | None = None) -> CustodyError:
        """Register a refusal; the error to raise."""
        self.vault.append_custody("refusal", by or "?", subject,
                                  {"act": act, "reason": reason, "items": items or []})
        return CustodyError(reason)

    def classify(self, subject: str, cls: str, *, by: str, reason: str) -> None:
        class_rank(cls)
        check_name(by, "--by")
        if not reason.strip():
            raise CustodyError("a classification needs its reason")
        self.vault.append_custody("classify", by, subject, {"class": cls, "reason": reason})

    def hold(self, subject: str, on: bool, *, by: str, reason: str) -> None:
        check_name(by, "--by")
        if not reason.strip():
            raise CustodyError("a hold (or its lifting) needs its reason")
        self.vault.append_custody("hold", by, subject, {"on": on, "reason": reason})

    def mark_evidence(self, ref: RecordRef, case: str, *, by: str) -> None:
        check_case(case)
        check_name(by, "--by")
        self.vault.append_custody("evidence", by, f"record/{ref}", {"case": case})

    def entries(self) -> list[dict[str, Any]]:
        """The whole register, oldest first, each with its log index (a dock's row read at
        the centre: its index in that dock's log)."""
        rows = self.vault.custody()
        for row in rows:
            if "log" not in row:
                row["log"] = self.vault.log_index(f"custody/{row['id']}")
        return rows
