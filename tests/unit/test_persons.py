"""Authenticated persons of the records office (host_agent/custody/register.py): the unit
certifies a person's key, the register takes name, roles and clearance from the certificate,
and once it holds one certified person every act must be signed by one. Real keys, a real
vault; the hostile cases are real forgers (another key, another unit, an expired
certificate, a replayed proof, too low a clearance), each refused and registered."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host_agent.custody.register import CustodyError, PersonSigner, Register
from host_agent.keys import DAY_US, PersonKey, UnitKey, time_us
from host_agent.vault import Vault
from tests.custody_world import CASE, World, docked_office
from tests.unit.test_cli_bad_input import bodycam, refused


def ok(*args: str) -> str:
    proc = bodycam(*args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stdout


def last_row(vault: str) -> dict[str, Any]:
    return dict(json.loads(ok("custody", "register", vault, "--json"))[-1])


def person_dir(base: Path, name: str, unit: str, *roles: str, clearance: str = "none",
               id_no: str = "ID-1") -> str:
    """A person's key made and certified by the unit, via the CLI: DIR/person.{key,pub,cert}."""
    d = base / name.replace(" ", "_")
    ok("person", "new", "--dir", str(d))
    assert (d / "person.key").stat().st_mode & 0o777 == 0o600
    role_args = [a for r in roles for a in ("--role", r)]
    ok("unit", "certify-person", "--unit", unit, "--name", name, "--id-no", id_no, *role_args,
       "--clearance", clearance, "--key", str(d / "person.pub"))
    assert (d / "person.cert").is_file()
    return str(d)


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(vault, dock identity dir, unit dir) with one recorder's phase of CASE, docked."""
    yield str(docked_office(tmp_path)), str(tmp_path / "test-dock"), str(tmp_path / "unit")


def test_a_dock_with_certified_persons(office: tuple[str, str, str], tmp_path: Path) -> None:
    vault, dock, unit = office
    li = person_dir(tmp_path / "people", "Li Wei", unit, "approver", clearance="state_secret")
    wang = person_dir(tmp_path / "people", "Wang Fang", unit, "custodian")
    # the first certified person: registered by name, as before (the register is not yet
    # authenticated); the certificate is checked against the dock identity's unit key
    out = ok("custody", "person", vault, "--cert", str(Path(li) / "person.cert"), "--by",
             "desk", "--identity", dock)
    assert "Li Wei" in out and "certified" in out
    row = last_row(vault)
    assert row["what"] == "person" and row["subject"] == "person/Li Wei"
    assert row["fields"]["clearance"] == "state_secret" and row["fields"]["roles"] == ["approver"]
    assert bytes.fromhex(row["fields"]["cert"]) == (Path(li) / "person.cert").read_bytes()
    assert row["fields"]["key"] == (Path(li) / "person.pub").read_text().strip()
    # from now on the register is authenticated
    refused(bodycam("custody", "person", vault, "--cert", str(Path(wang) / "person.cert"),
                    "--by", "desk", "--identity", dock), "must sign")
    assert last_row(vault)["what"] == "refusal"
    ok("custody", "person", vault, "--cert", str(Path(wang) / "person.cert"), "--as", li,
       "--identity", dock)
    refused(bodycam("custody", "person", vault, "--name", "Zhou", "--id-no", "Z-1", "--role",
                    "approver", "--clearance", "state_secret", "--as", li),
            "only a person the unit certified")
    assert last_row(vault)["what"] == "refusal"
    refused(bodycam("custody", "request", vault, "--body", "court", "--letter", "L-17",
                    "--requester", "Judge Zhang", "--requester-id", "J-42", "--reason",
                    "trial", "--case", CASE, "--by", "desk"), "must sign")
    rid = str(json.loads(ok("custody", "request", vault, "--body", "court", "--letter", "L-17",
                            "--requester", "Judge Zhang", "--requester-id", "J-42",
                            "--reason", "trial", "--case", CASE, "--as", wang,
                            "--json"))["request"])
    # a clerk typing the approver's name is refused, and the refusal registered
    refused(bodycam("custody", "approve", vault, rid, "--by", "Li Wei"), "must sign")
    row = last_row(vault)
    assert (row["what"], row["actor"], row["subject"]) == ("refusal", "Li Wei", f"request/{rid}")
    # an officer who is not an approver cannot approve even when signing
    refused(bodycam("custody", "approve", vault, rid, "--as", wang), "not registered as an"
            " approver")
    assert "approved by Li Wei" in ok("custody", "approve", vault, rid, "--as", li)
    decision = last_row(vault)
    assert decision["what"] == "decision" and set(decision["fields"]["proof"]) == {
        "t", "key", "sig"}
    pkg = str(tmp_path / "pkg")
    refused(bodycam("custody", "export", vault, rid, "--out", pkg, "--by", "Wang Fang",
                    "--identity", dock), "must sign")
    assert not Path(pkg).exists()
    assert "5 records" in ok("custody", "export", vault, rid, "--out", pkg, "--as", wang,
                             "--identity", dock)
    assert "verified" in ok("verify", pkg, "--trust", str(Path(unit) / "unit.pub"))
    refused(bodycam("custody", "view", vault, rid, "--out", str(tmp_path / "v"), "--by",
                    "Wang Fang"), "must sign")
    ok("custody", "view", vault, rid, "--out", str(tmp_path / "v"), "--as", wang)
    refused(bodycam("vault", "case", vault, CASE, "--by", "Li Wei"), "must sign")
    ok("vault", "case", vault, CASE, "--as", li)
    refused(bodycam("custody", "classify", vault, "--case", CASE, "--class", "state_secret",
                    "--reason", "x", "--by", "desk"), "must sign")
    ok("custody", "classify", vault, "--case", CASE, "--class", "state_secret", "--reason",
       "witness", "--as", li)
    ok("custody", "hold", vault, "--case", CASE, "--reason", "appeal", "--as", li)
    rows = json.loads(ok("custody", "register", vault, "--json"))
    acts = [r for r in rows if r["what"] not in ("refusal",) and r["id"] > 1
            and r["what"] in ("person", "request", "decision", "begun", "access", "classify",
                              "hold")]
    assert all("proof" in r["fields"] for r in acts[1:]), acts  # all but the bootstrap
    refusals = [r for r in rows if r["what"] == "refusal"]
    assert len(refusals) == 9
    assert "signed" in ok("custody", "register", vault)
    proc = bodycam("vault", "verify", vault)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- hostile, through the register's API with real keys ---------------------------------------


class Office:
    """A vault with CASE, the unit, and Li Wei (approver, state_secret) and Wang Fang
    (custodian) certified and registered; request #rid filed by Wang Fang."""

    def __init__(self, base: Path) -> None:
        w = World(base)
        w.recorder("REC-1")
        w.phase("REC-1")
        w.release("REC-1")
        w.docking("REC-1")
        self.world, self.vault, self.unit = w, w.vault, w.unit
        self.li = self.person(base / "li", "Li Wei", ["approver"], "state_secret")
        self.wang = self.person(base / "wang", "Wang Fang", ["custodian"], "none")
        Register(self.vault, unit_public=self.unit.public).add_certified_person(
            self.li.cert, by="desk")
        self.as_li().add_certified_person(self.wang.cert, by="Li Wei")
        self.rid = self.file()

    def person(self, d: Path, name: str, roles: list[str], clearance: str,
               unit: UnitKey | None = None, **validity: int) -> PersonKey:
        public = PersonKey.create(d)
        cert = (unit or self.unit).certify_person(name, f"ID-{name}", roles, clearance,
                                                  public, **validity)
        (d / "person.cert").write_bytes(cert)
        return PersonKey.load(d)

    def register(self, person: Any = None) -> Register:
        return Register(self.vault, unit_public=self.unit.public, person=person)

    def as_li(self) -> Register:
        return self.register(PersonSigner(self.li))

    def file(self) -> int:
        return self.register(PersonSigner(self.wang)).file_request(
            body="court", letter="L-17", requester="Judge Zhang", requester_id="J-42",
            reason="trial", items=[{"case": CASE}], by="Wang Fang")

    def refused(self, act: Any, *words: str) -> dict[str, Any]:
        """`act()` is refused, naming `words`, and the refusal is the register's last row."""
        before = len(self.vault.custody())
        with pytest.raises(CustodyError) as err:
            act()
        for w in words:
            assert w in str(err.value), (w, str(err.value))
        rows = self.vault.custody()
        assert len(rows) == before + 1 and rows[-1]["what"] == "refusal", rows[before:]
        assert rows[-1]["fields"]["reason"] == str(err.value)
        return dict(rows[-1])

    def approve(self, register: Register, rid: int, by: str = "Li Wei",
                cls: str = "none") -> None:
        register.decide(rid, approver=by, approved=True, note="", items_class=cls)


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Office]:
    o = Office(tmp_path)
    yield o
    o.world.close()


class ForgingSigner(PersonSigner):
    """Says it is Li Wei's key, signs with another."""

    def __init__(self, liar: PersonKey, victim: PersonKey) -> None:
        super().__init__(liar)
        self.name, self.victim = victim.name, victim

    def prove(self, origin: str, what: str, subject: str, fields: dict[str, Any],
              actor: str) -> dict[str, Any]:
        proof = super().prove(origin, what, subject, fields, actor)
        return {**proof, "key": self.victim.public.hex()}


class ReplayingSigner(PersonSigner):
    """Hands in a proof it saw on another row."""

    def __init__(self, name: str, proof: dict[str, Any]) -> None:
        self.name, self.proof = name, proof

    def prove(self, origin: str, what: str, subject: str, fields: dict[str, Any],
              actor: str) -> dict[str, Any]:
        return self.proof


def test_a_name_alone_is_refused_after_the_switch(hostile: Office) -> None:
    o = hostile
    assert o.register().authenticated()
    row = o.refused(lambda: o.approve(o.register(), o.rid), "must sign")
    assert row["actor"] == "Li Wei" and row["subject"] == f"request/{o.rid}"
    o.refused(lambda: o.register().add_person("Zhou", id_no="Z", roles=["approver"],
                                              clearance="state_secret", by="desk"),
              "only a person the unit certified")
    o.refused(lambda: o.register().classify(f"case/{CASE}", "none", by="Li Wei",
                                            reason="x"), "must sign")
    assert o.register().request(o.rid)["decision"] is None


def test_a_forged_proof_is_refused(hostile: Office, tmp_path: Path) -> None:
    o = hostile
    mallory = o.person(tmp_path / "mallory", "Li Wei", ["approver"], "state_secret",
                       unit=UnitKey.create(tmp_path / "evil-unit"))
    # her own key, her own (other unit's) certificate in Li Wei's name
    o.refused(lambda: o.approve(o.register(PersonSigner(mallory)), o.rid),
              "another key than Li Wei's")
    # her own key, claiming to be Li Wei's
    o.refused(lambda: o.approve(o.register(ForgingSigner(mallory, o.li)), o.rid),
              "signature on the act is not Li Wei's")
    assert o.register().request(o.rid)["decision"] is None


def test_a_certificate_from_another_unit_is_refused(hostile: Office, tmp_path: Path) -> None:
    o = hostile
    zhou = o.person(tmp_path / "zhou", "Zhou Min", ["approver"], "state_secret",
                    unit=UnitKey.create(tmp_path / "other-unit"))
    o.refused(lambda: o.as_li().add_certified_person(zhou.cert, by="Li Wei"),
              "not signed by this unit")
    assert o.register().person("Zhou Min") is None


def test_the_cli_refuses_another_units_certificate(office: tuple[str, str, str],
                                                   tmp_path: Path) -> None:
    vault, dock, _ = office
    UnitKey.create(tmp_path / "other")
    zhou = person_dir(tmp_path / "people", "Zhou Min", str(tmp_path / "other"), "approver")
    refused(bodycam("custody", "person", vault, "--cert", str(Path(zhou) / "person.cert"),
                    "--by", "desk", "--identity", dock), "not signed by this unit")
    assert last_row(vault)["what"] == "refusal"


def test_an_expired_certificate_is_refused(hostile: Office, tmp_path: Path) -> None:
    o = hostile
    now = time_us()
    old = o.person(tmp_path / "old", "Old Hand", ["approver"], "state_secret",
                   not_before_us=now - 3 * DAY_US, not_after_us=now - DAY_US)
    o.refused(lambda: o.as_li().add_certified_person(old.cert, by="Li Wei"), "not valid now")
    # a certificate that runs out after it was registered: its acts are refused after that
    brief = o.person(tmp_path / "brief", "Brief Stay", ["approver"], "state_secret",
                     not_before_us=now - DAY_US, not_after_us=time_us() + 1_500_000)
    o.as_li().add_certified_person(brief.cert, by="Li Wei")
    time.sleep(2)
    o.refused(lambda: o.approve(o.register(PersonSigner(brief)), o.rid, by="Brief Stay"),
              "Brief Stay's certificate is not valid")
    o.refused(lambda: o.register(PersonSigner(brief)).hold(f"case/{CASE}", True,
                                                           by="Brief Stay", reason="x"),
              "not valid at the act's time")


def test_a_proof_replayed_on_another_request_is_refused(hostile: Office) -> None:
    o = hostile
    o.approve(o.as_li(), o.rid)
    proof = o.vault.custody(what="decision", subject=f"request/{o.rid}")[-1]["fields"]["proof"]
    second = o.file()
    o.refused(lambda: o.approve(o.register(ReplayingSigner("Li Wei", proof)), second),
              "not Li Wei's for this decision of request/")
    # on the same request with other fields (a note added) it does not hold either
    o.refused(lambda: o.register(ReplayingSigner("Li Wei", proof)).decide(
        o.rid, approver="Li Wei", approved=True, note="added later", items_class="none"),
        f"not Li Wei's for this decision of request/{o.rid}")
    assert o.register().request(second)["decision"] is None


def test_a_clearance_below_the_items_class_is_refused(hostile: Office, tmp_path: Path) -> None:
    o = hostile
    o.as_li().classify(f"case/{CASE}", "state_secret", by="Li Wei", reason="witness")
    low = o.person(tmp_path / "low", "Low Clear", ["approver"], "commercial_secret")
    o.as_li().add_certified_person(low.cert, by="Li Wei")
    assert o.register().person("Low Clear")["clearance"] == "commercial_secret"
    o.refused(lambda: o.approve(o.register(PersonSigner(low)), o.rid, by="Low Clear",
                                cls="state_secret"), "cleared for commercial_secret")


def test_an_archive_without_certified_persons_works_as_before(tmp_path: Path) -> None:
    w = World(tmp_path)
    try:
        r = Register(w.vault)
        r.add_person("Li Wei", id_no="L", roles=["approver"], clearance="none", by="desk")
        assert not r.authenticated()
        rid = r.file_request(body="court", letter="L", requester="J", requester_id="J",
                             reason="r", items=[{"case": CASE}], by="desk")
        r.decide(rid, approver="Li Wei", approved=True, note="", items_class="none")
        assert "proof" not in w.vault.custody(what="decision")[-1]["fields"]
    finally:
        w.close()
    assert isinstance(w.vault, Vault)
