"""The records office against its hostile users: access only under an approved request that
covers the items, by a cleared approver; every act and every refusal registered and in the
vault's log; the register as tamper-evident as the evidence; retention that removes only what
it may; recorders issued only when ready; hall footage that says it is not device-signed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_agent.custody import (
    CustodyError,
    RecordRef,
    Register,
    case,
    hall,
    package,
    retention,
    times,
)
from host_agent.custody.archive import docking_problem, row_problem
from host_agent.custody.export import export, hand_out
from host_agent.custody.recorders import Recorders
from host_agent.vault import Vault
from protocol import cbor
from tests.custody_world import CASE, World

DAY_US = 86_400_000_000


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.recorder("REC-1")
    w.phase("REC-1")  # records 1..5 of CASE
    w.segment("REC-1")  # record 6: in no case
    w.release("REC-1")
    w.docking("REC-1")
    reg = Register(w.vault)
    reg.add_person("Li Wei", id_no="L-1", roles=["approver"], clearance="state_secret",
                   by="desk")
    reg.add_person("Huang Min", id_no="H-1", roles=["approver"], clearance="none", by="desk")
    reg.add_person("Clerk", id_no="C-1", roles=["custodian"], clearance="personal_privacy",
                   by="desk")
    yield w
    # every row these flows wrote is one the central takes from a forwarding dock
    for (entry,) in w.vault.db.execute("SELECT entry FROM log WHERE kind = 'custody'"):
        doc = cbor.decode(bytes(entry))
        assert row_problem(doc) is None, doc
    for docking in w.vault.dockings():
        assert docking_problem(docking["report"]) is None, docking
    w.close()


def file_request(w: World, items: list[dict[str, object]] | None = None) -> int:
    return Register(w.vault).file_request(
        body="procuratorate", letter="桂检 2026-17", requester="Prosecutor Wu",
        requester_id="P-9", reason="review", items=items or [{"case": CASE}], by="desk")


def approve(w: World, rid: int, approver: str = "Li Wei", cls: str = "none") -> None:
    Register(w.vault).decide(rid, approver=approver, approved=True, note="", items_class=cls)


def register_rows(w: World, what: str) -> list[dict[str, object]]:
    return w.vault.custody(what=what)


def last_refusal(w: World) -> str:
    return str(register_rows(w, "refusal")[-1]["fields"]["reason"])  # type: ignore[index]


def test_view_needs_an_approved_request_and_is_registered(world: World, tmp_path: Path
                                                          ) -> None:
    rid = file_request(world)
    with pytest.raises(CustodyError, match="not yet decided"):
        hand_out(world.vault, rid, "view", None, tmp_path / "v1", "desk")
    assert not (tmp_path / "v1").exists()
    assert "not yet decided" in last_refusal(world)
    approve(world, rid)
    refs = hand_out(world.vault, rid, "view", None, tmp_path / "v1", "desk")
    assert [str(r) for r in refs] == [f"REC-1/{n}" for n in range(1, 6)]
    got = sorted(p.relative_to(tmp_path / "v1").as_posix()
                 for p in (tmp_path / "v1").rglob("*") if p.is_file())
    assert len([g for g in got if g.startswith("records/")]) == 5
    assert len([g for g in got if g.startswith("segments/")]) == 2
    act = register_rows(world, "access")[-1]
    assert act["fields"]["act"] == "view" and len(act["fields"]["items"]) == 5  # type: ignore[index]
    assert world.vault.log_index(f"custody/{act['id']}") is not None


def test_an_act_outside_the_request_is_refused_and_registered(world: World,
                                                              tmp_path: Path) -> None:
    rid = file_request(world)
    approve(world, rid)
    with pytest.raises(CustodyError, match="does not cover REC-1/6"):
        hand_out(world.vault, rid, "copy", [RecordRef("REC-1", 6)], tmp_path / "c", "desk")
    assert not (tmp_path / "c").exists()
    refusal = register_rows(world, "refusal")[-1]
    assert refusal["fields"]["act"] == "copy"  # type: ignore[index]
    assert refusal["fields"]["items"] == ["REC-1/6"]  # type: ignore[index]
    with pytest.raises(CustodyError, match="holds no record REC-1/99"):
        hand_out(world.vault, rid, "copy", [RecordRef("REC-1", 99)], tmp_path / "c", "desk")


def test_a_denied_request_allows_nothing(world: World, tmp_path: Path) -> None:
    rid = file_request(world)
    Register(world.vault).decide(rid, approver="Huang Min", approved=False, note="no letter",
                                 items_class="none")
    with pytest.raises(CustodyError, match="refused by Huang Min"):
        hand_out(world.vault, rid, "view", None, tmp_path / "v", "desk")
    with pytest.raises(CustodyError, match="already decided"):
        approve(world, rid)


def test_only_a_registered_approver_may_approve(world: World) -> None:
    rid = file_request(world)
    with pytest.raises(CustodyError, match="Clerk is not registered as an approver"):
        approve(world, rid, "Clerk")
    with pytest.raises(CustodyError, match="Nobody is not registered"):
        approve(world, rid, "Nobody")
    assert Register(world.vault).request(rid)["decision"] is None


def test_state_secret_cannot_go_out_under_an_approver_without_clearance(
        world: World, tmp_path: Path) -> None:
    reg = Register(world.vault)
    rid = file_request(world)
    approve(world, rid, "Huang Min")  # cleared for none: fine while the case is unclassified
    reg.classify(f"case/{CASE}", "state_secret", by="desk", reason="names an informant")
    with pytest.raises(CustodyError, match="Huang Min is cleared for none.*state_secret"):
        export(world.vault, rid, tmp_path / "pkg", by="desk", signer=world.dock)
    assert not (tmp_path / "pkg").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".part-")] == []
    assert register_rows(world, "refusal")[-1]["fields"]["act"] == "export"  # type: ignore[index]
    # a new request cannot be approved by her either, and a cleared approver can
    rid2 = file_request(world)
    with pytest.raises(CustodyError, match="cleared for none"):
        approve(world, rid2, "Huang Min", cls="state_secret")
    approve(world, rid2, "Li Wei", cls="state_secret")
    done = export(world.vault, rid2, tmp_path / "pkg", by="desk", signer=world.dock)
    assert done["records"] == 5
    # a single record classified higher than its case counts too
    reg.classify("record/REC-1/6", "commercial_secret", by="desk", reason="a firm's books")
    rid3 = file_request(world, [{"records": ["REC-1/6"]}])
    with pytest.raises(CustodyError, match="commercial_secret"):
        approve(world, rid3, "Huang Min", cls="commercial_secret")


def test_every_act_and_refusal_is_in_the_log_and_the_register_cannot_be_edited(
        world: World, tmp_path: Path) -> None:
    rid = file_request(world)
    with pytest.raises(CustodyError):
        hand_out(world.vault, rid, "view", None, tmp_path / "v", "desk")
    approve(world, rid)
    hand_out(world.vault, rid, "copy", None, tmp_path / "c", "desk")
    rows = Register(world.vault).entries()
    assert {r["what"] for r in rows} >= {"person", "request", "refusal", "decision", "access"}
    assert all(isinstance(r["log"], int) for r in rows)
    assert world.vault.verify_report().problems == []
    db = sqlite3.connect(world.vault.root / "vault.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE custody SET actor = 'someone else' WHERE what = 'decision'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM custody WHERE what = 'refusal'")
    # an operator who drops the triggers to rewrite who approved is caught by verify
    db.execute("DROP TRIGGER custody_no_update")
    db.execute("UPDATE custody SET actor = 'Huang Min' WHERE what = 'decision'")
    db.commit()
    db.close()
    problems = world.vault.verify_report().problems
    assert any(p.code == "schema_altered" for p in problems)
    assert any("custody" in p.detail and "actor" in p.detail for p in problems)


def test_retention_keeps_the_young_the_unreleased_the_held_and_a_case(world: World) -> None:
    w = world
    later = times.now_us() + 200 * DAY_US
    w.segment("REC-1")  # record 7: in no case, never released
    w.segment("REC-1")  # record 8: in no case, released, held
    w.release("REC-1", [8])
    Register(w.vault).hold("record/REC-1/8", True, by="desk", reason="complaint pending")
    with pytest.raises(CustodyError, match="only a --dry-run"):
        retention.run(w.vault, by="job", as_of_us=later)
    with pytest.raises(CustodyError, match="at least 183 days"):
        retention.run(w.vault, by="job", keep_days=30)
    young = retention.run(w.vault, by="job")
    assert young.removed == [] and young.kept == {"younger than 183 days": 5}
    plan = retention.run(w.vault, by="job", as_of_us=later, dry_run=True)
    assert [r["record"] for r in plan.removed] == ["REC-1/6"]
    assert plan.kept == {"in a case": 2, "not yet released by its recorder": 1,
                         "under a hold": 1}
    assert w.vault.custody(what="retention") == []  # a dry run removes nothing
    sha = w.vault.records("REC-1")[5]["segment_sha256"]
    assert isinstance(sha, bytes) and w.vault.object_path(sha).exists()
    Register(w.vault).hold("record/REC-1/8", False, by="desk", reason="complaint closed")
    plan = retention.run(w.vault, by="job", as_of_us=later, dry_run=True)
    assert [r["record"] for r in plan.removed] == ["REC-1/6", "REC-1/8"]


def test_retention_removal_is_registered_and_verify_accepts_only_it(world: World) -> None:
    w = world
    def in_200_days() -> int:
        return times.now_us() + 200 * DAY_US

    out = retention.run(w.vault, by="retention-job", clock=in_200_days)
    assert [r["record"] for r in out.removed] == ["REC-1/6"]
    sha = w.vault.records("REC-1")[5]["segment_sha256"]
    assert isinstance(sha, bytes) and not w.vault.object_path(sha).exists()
    assert w.vault.manifest_path("REC-1", 6).exists()  # the signed record stays
    logged = w.vault.custody(what="retention")
    assert logged[0]["subject"] == "record/REC-1/6" and logged[0]["actor"] == "retention-job"
    assert w.vault.log_index(f"custody/{logged[0]['id']}") is not None
    assert w.vault.verify_report().problems == []
    again = retention.run(w.vault, by="retention-job", clock=in_200_days)
    assert again.removed == []  # removed once
    # a segment deleted by hand is still a problem
    other = w.vault.records("REC-1")[2]["segment_sha256"]
    assert isinstance(other, bytes)
    w.vault.object_path(other).unlink()
    assert [p.code for p in w.vault.verify_report().problems] == ["object_missing"]


def test_retention_never_removes_bytes_a_kept_record_shares(world: World) -> None:
    w = world
    same = b"the same bytes " * 100
    w.segment("REC-1", data=same)  # record 7: expired, released, in no case
    w.segment("REC-1", data=same)  # record 8: the same bytes, held
    w.release("REC-1", [7, 8])
    Register(w.vault).hold("record/REC-1/8", True, by="desk", reason="complaint")
    out = retention.run(w.vault, by="job", clock=lambda: times.now_us() + 200 * DAY_US)
    assert [r["record"] for r in out.removed] == ["REC-1/6"]
    assert out.kept["its bytes are also a kept record's"] == 1
    assert w.vault.verify_report().problems == []


def test_a_recorder_is_issued_only_when_ready(world: World) -> None:
    rec = Recorders(world.vault)
    rec.inventory_add("REC-1", by="desk", model="DSJ-V9", serial="V9-0001")
    assert rec.issue("REC-1", "4501-0233", by="desk")
    with pytest.raises(CustodyError, match="issued to 4501-0233"):
        rec.issue("REC-1", "4501-0999", by="desk")
    rec.give_back("REC-1", by="desk", condition="scratched lens")
    with pytest.raises(CustodyError, match="no readiness check since it came back"):
        rec.issue("REC-1", "4501-0999", by="desk")
    world.docking("REC-1", ready=False, reasons=["main battery 40% < 80%"])
    with pytest.raises(CustodyError, match="not ready for duty.*40%"):
        rec.issue("REC-1", "4501-0999", by="desk")
    rec.maintain("REC-1", by="workshop", kind="repair", note="battery replaced",
                 in_service=False)
    world.docking("REC-1")
    with pytest.raises(CustodyError, match="out of service"):
        rec.issue("REC-1", "4501-0999", by="desk")
    with pytest.raises(CustodyError, match="not a recorder this vault enrolled"):
        rec.issue("REC-404", "4501-0999", by="desk")
    events = [e["event"] for e in rec.history("REC-1")]
    assert events[0] == "enrolled" and "refused issue" in events and "repair" not in events
    assert events.count("docked") == 3 and "maintenance" in events
    inv = rec.inventory()
    assert inv == [{"device_id": "REC-1", "holder": None, "in_service": False,
                    "model": "DSJ-V9", "serial": "V9-0001",
                    "last_docking": inv[0]["last_docking"], "ready": True}]


def test_hall_footage_is_attested_not_device_signed_and_verified(world: World,
                                                                tmp_path: Path) -> None:
    clip = tmp_path / "hall-cam-2.mp4"
    clip.write_bytes(b"hall camera footage " * 500)
    start = times.parse("2026-05-01T09:00Z")
    got = hall.import_footage(world.vault, case=CASE, camera="hall-cam-2",
                              location="hearing room 2", source=clip, start_us=start,
                              end_us=start + 600_000_000, provenance="copied off the NVR by Chen",
                              by="desk", signer=world.dock)
    assert got["device_signed"] is False
    assert world.vault.verify_report().problems == []
    Register(world.vault).add_person("Viewer", id_no="V-1", roles=["custodian"],
                                     clearance="none", by="desk")
    seen = case.view(world.vault, CASE, by="Viewer")
    assert [h["camera"] for h in seen["hall"]] == ["hall-cam-2"]
    # it goes into the case's court package, attested, and checks offline
    rid = file_request(world)
    approve(world, rid)
    export(world.vault, rid, tmp_path / "pkg", by="desk", signer=world.dock)
    checked = package.check(tmp_path / "pkg", world.unit.public)
    assert checked.problems == [] and checked.summary["hall"] == 1
    statement = tmp_path / "pkg" / "hall" / f"{got['object']}.cose"
    signed = statement.read_bytes()
    statement.write_bytes(signed[:-1] + bytes([signed[-1] ^ 1]))  # one bit of the signature
    assert {p.code for p in package.check(tmp_path / "pkg", world.unit.public).problems} >= {
        "altered", "hall_mismatch"}
    # the bytes cannot be swapped quietly
    obj = world.vault.object_path(bytes.fromhex(got["object"]))
    obj.chmod(0o644)
    obj.write_bytes(b"other footage " * 500)
    assert any(p.code in ("hash_mismatch", "size_mismatch")
               for p in world.vault.verify_report().problems)


def test_case_view_lists_everything_and_is_itself_registered(world: World, tmp_path: Path
                                                             ) -> None:
    rid = file_request(world)
    approve(world, rid)
    hand_out(world.vault, rid, "view", None, tmp_path / "v", "desk")
    reg = Register(world.vault)
    reg.classify(f"case/{CASE}", "personal_privacy", by="desk", reason="a minor")
    seen = case.view(world.vault, CASE, by="Clerk")
    assert seen["class"] == "personal_privacy" and seen["records"] == 5
    assert len(seen["phases"]) == 1 and len(seen["segments"]) == 2
    assert {e["name"] for e in seen["events"]} == {"phase_started", "notice_given",
                                                     "phase_ended"}
    whats = [e["what"] for e in seen["register"]]
    assert whats[:4] == ["request", "decision", "begun", "access"] and "classify" in whats
    reg.classify(f"case/{CASE}", "state_secret", by="desk", reason="raised")
    with pytest.raises(CustodyError, match="Clerk is cleared for personal_privacy"):
        case.view(world.vault, CASE, by="Clerk")
    views = [r for r in world.vault.custody(what="access", subject=f"case/{CASE}")]
    assert len(views) == 1 and views[0]["actor"] == "Clerk"


def test_a_vault_made_before_the_register_gets_its_table(tmp_path: Path) -> None:
    v = Vault.open(tmp_path / "v")
    v.close()
    db = sqlite3.connect(tmp_path / "v" / "vault.sqlite")
    for trigger in ("custody_no_update", "custody_no_delete", "custody_no_replace"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("DROP INDEX custody_by_subject")
    db.execute("DROP TABLE custody")
    db.commit()
    db.close()
    with Vault.open(tmp_path / "v", create=False) as again:
        assert again.custody() == []
        assert again.verify_report().problems == []
