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

Authenticated persons. A person may be registered from the unit's certificate for their key
(protocol/authority.py, type "person"; `bodycam unit certify-person`): name, ID number,
roles and clearance then come from the certificate, checked against the unit key, and the
person row keeps it (`cert`, hex) and the key (`key`). A register that holds no certified
person works as it always did: `--by NAME` is registered, not authenticated. Once one
certified person is registered the register is *authenticated*, for good: registering an
uncertified person is refused, and every act (registering people, filing requests,
decisions, classification, holds, evidence marks, the begun and access rows of view, copy,
export and case view) must carry a `proof` in its fields by a certified person: their
Ed25519 signature over `statement()` (deterministic CBOR of the context, the log's origin,
what, subject, the fields without the proof, the actor and the time `t` the signer
states), made with the key their registered certificate names, that certificate valid at
`t`, and `t` within 5 minutes of the register's clock. A name alone, another key, another
unit's certificate, an expired one or a proof made for another row is refused, and the
refusal registered (refusals themselves carry no proof: anyone may be refused).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host_agent.keys import open_person_cert, read_person_cert, time_us, verify
from host_agent.vault.store import DEVICE_ID
from protocol import authority, cbor

if TYPE_CHECKING:
    from host_agent.custody.archive import Archive

CLASSES = ("none", "personal_privacy", "commercial_secret", "state_secret")  # Art. 3, rising
BODIES = ("public_security", "procuratorate", "court", "state_security",
          "discipline_inspection", "audit", "unit")  # Art. 10, and the unit's own use
ROLES = ("approver", "custodian", "officer")
ACTS = ("view", "copy", "export")
_NAME = re.compile(r"[^\s/][^/]{0,79}")
_CASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PROOF_WINDOW_US = 5 * 60 * 1_000_000  # |t - now| of a signed act
_STATEMENT = "bodycam-register-act-v1"


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


def statement(origin: str, what: str, subject: str, fields: dict[str, Any], actor: str,
              t: int) -> bytes:
    """What a person signs for a register row: deterministic CBOR binding the log, the kind
    of row, its subject, its fields (without the proof), who acts and when they say so."""
    body = json.loads(json.dumps({k: v for k, v in fields.items() if k != "proof"}))
    return cbor.encode({"ctx": _STATEMENT, "origin": origin, "what": what, "subject": subject,
                        "fields": body, "actor": actor, "t": t})


class PersonSigner:
    """Signs register rows for a certified person (host_agent.keys.PersonKey: their key and
    the unit's certificate); the register checks what it signs."""

    def __init__(self, person: Any) -> None:
        self.person = person
        self.name = str(person.name)

    def prove(self, origin: str, what: str, subject: str, fields: dict[str, Any],
              actor: str) -> dict[str, Any]:
        t = time_us()
        sig = self.person.sign(statement(origin, what, subject, fields, actor, t))
        return {"t": t, "key": self.person.public.hex(), "sig": sig.hex()}


class Register:
    """The custody register of one vault. `unit_public` checks person certificates (a dock
    identity's unit key, the central's `unit_key`); `person` signs the acts done through
    this register (a PersonSigner), needed once the register is authenticated."""

    def __init__(self, vault: Archive, *, unit_public: bytes | None = None,
                 person: PersonSigner | None = None) -> None:
        self.vault = vault
        self.unit_public = unit_public
        self.signer = person

    # -- authentication --------------------------------------------------------------------------

    def authenticated(self) -> bool:
        """Whether a certified person was ever registered (then every act must be signed)."""
        return any("cert" in r["fields"] for r in self.vault.custody(what="person"))

    def proof_problem(self, what: str, actor: str, subject: str,
                      fields: dict[str, Any]) -> str | None:
        """Why the row's proof does not show that `actor` did it; None if it does."""
        proof = fields.get("proof")
        if not isinstance(proof, dict):
            return (f"the register is authenticated: {actor} must sign the act (--as"
                    " PERSON_DIR); a name alone (--by) is not enough")
        person = self.person(actor)
        if person is None or "cert" not in person:
            return f"{actor} is not a person the unit certified in this register"
        t, key, sig = proof.get("t"), proof.get("key"), proof.get("sig")
        if not isinstance(t, int) or not isinstance(sig, str) or not isinstance(key, str):
            return "the act's proof is not {t, key, sig}"
        if key != person["key"]:
            return f"the act is signed by another key than {actor}'s certified one"
        if abs(t - time_us()) > PROOF_WINDOW_US:
            return "the act's signed time is more than 5 minutes from the register's clock"
        try:
            doc = read_person_cert(bytes.fromhex(person["cert"]))
            signature = bytes.fromhex(sig)
        except (ValueError, authority.AuthorityError) as exc:
            return f"the act's proof or {actor}'s certificate cannot be read: {exc}"
        if not doc["nb"] <= t <= doc["na"]:
            return f"{actor}'s certificate is not valid at the act's time"
        if not verify(bytes.fromhex(key), statement(self.vault.origin, what, subject, fields,
                                                    actor, t), signature):
            return f"the signature on the act is not {actor}'s for this {what} of {subject}"
        return None

    def signed(self, what: str, actor: str, subject: str, fields: dict[str, Any], *,
               act: str) -> dict[str, Any]:
        """`fields` with the acting person's proof, checked; when the register is
        authenticated and the act is not validly signed, the refusal registered and raised."""
        fields = json.loads(json.dumps(fields))
        if self.signer is not None:
            if self.signer.name != actor:
                raise self.refuse(subject, act, actor,
                                  f"{actor} cannot sign as {self.signer.name}")
            fields["proof"] = self.signer.prove(self.vault.origin, what, subject, fields,
                                                actor)
        if self.signer is not None or self.authenticated():
            problem = self.proof_problem(what, actor, subject, fields)
            if problem is not None:
                raise self.refuse(subject, act, actor, problem)
        return fields

    def append(self, what: str, actor: str, subject: str, fields: dict[str, Any], *,
               act: str) -> tuple[int, int]:
        """Append a row for an act by `actor`, signed when it must be; (row id, log index)."""
        return self.vault.append_custody(what, actor, subject,
                                         self.signed(what, actor, subject, fields, act=act))

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
        if self.authenticated():
            raise self.refuse(f"person/{name}", "person", by,
                              "the register is authenticated: only a person the unit"
                              " certified is registered (--cert)")
        return self.append("person", by, f"person/{name}", {
            "id_no": id_no, "roles": sorted(set(roles)), "clearance": clearance},
            act="person")[0]

    def add_certified_person(self, cert: bytes, *, by: str) -> tuple[int, dict[str, Any]]:
        """Register the person the unit's certificate names, as it names them; (row id,
        the certificate's payload)."""
        check_name(by, "--by")
        if self.unit_public is None:
            raise CustodyError("no unit key to check the certificate against (a dock's"
                               " --identity; unit_key in central.toml)")
        try:
            doc = open_person_cert(cert, self.unit_public)
        except authority.AuthorityError as exc:
            raise self.refuse("person", "person", by, str(exc)) from None
        subject = f"person/{doc['name']}"
        if not doc["nb"] <= time_us() <= doc["na"]:
            raise self.refuse(subject, "person", by,
                              f"the certificate of {doc['name']} is not valid now")
        row = self.append("person", by, subject, {
            "id_no": doc["id_no"], "roles": sorted(set(doc["roles"])),
            "clearance": doc["clearance"], "key": doc["key"].hex(), "cert": cert.hex(),
            "nb": doc["nb"], "na": doc["na"]}, act="person")
        return row[0], doc

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
        return self.append("request", by, "request", {
            "body": body, "letter": letter, "requester": requester,
            "requester_id": requester_id, "reason": reason, "items": items},
            act="request")[0]

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
        fields = self.signed("decision", approver, subject, {"approved": approved,
                                                             "note": note},
                             act="approve" if approved else "deny")
        with self.vault.transaction():  # two approvers at once: the second sees the first
            earlier = self.latest("decision", subject)
            if earlier is None:
                self.vault.append_custody("decision", approver, subject, fields)
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
        if "na" in person and not person["nb"] <= time_us() <= person["na"]:
            raise self.refuse(subject, act, approver,
                              f"{approver}'s certificate is not valid now")

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
        return self.append("access", by, f"request/{request_id}", {
            "act": act, "items": [str(r) for r in refs], **extra}, act=act)

    def register_begun(self, request_id: int, act: str, refs: list[RecordRef], *, by: str,
                       out: str, staging: str) -> None:
        """Register that an act's bytes start to leave (into `staging`, for `out`)."""
        self.append("begun", by, f"request/{request_id}", {
            "act": act, "items": [str(r) for r in refs], "out": out, "staging": staging},
            act=act)

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
        self.append("classify", by, subject, {"class": cls, "reason": reason}, act="classify")

    def hold(self, subject: str, on: bool, *, by: str, reason: str) -> None:
        check_name(by, "--by")
        if not reason.strip():
            raise CustodyError("a hold (or its lifting) needs its reason")
        self.append("hold", by, subject, {"on": on, "reason": reason}, act="hold")

    def mark_evidence(self, ref: RecordRef, case: str, *, by: str) -> None:
        check_case(case)
        check_name(by, "--by")
        self.append("evidence", by, f"record/{ref}", {"case": case}, act="evidence")

    def entries(self) -> list[dict[str, Any]]:
        """The whole register, oldest first, each with its log index (a dock's row read at
        the centre: its index in that dock's log)."""
        rows = self.vault.custody()
        for row in rows:
            if "log" not in row:
                row["log"] = self.vault.log_index(f"custody/{row['id']}")
        return rows
