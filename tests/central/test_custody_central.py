"""The records office works from the centre: the access register, the export and the
compliance report run on the central index (real PostgreSQL, real Ceph RGW) with the same code
and rules as on a dock's vault (host_agent/custody/archive.py), as a user types them.

Two docks of one unit forward three recorders; dock B classified its case state secret and
dock A imported hall footage into its case. At the centre: the class a dock gave is honoured, a
package made from the centre is checked by `bodycam verify` against the unit key alone, and
the report finds what the docks' own reports find. Hostile parts are played too: an operator
with SQL on the central register, a person registered only at a dock, a dock that put other
bytes over a locked segment, a dock-only act tried at the centre."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from host_agent.central.archive import CentralArchive, office_signer
from host_agent.custody import hall, report, times
from host_agent.custody.register import Register
from host_agent.keys import public_key
from host_agent.vault import VaultError
from tests.central.tier import Tier
from tests.custody_world import World

AS_OF = "2026-06-01T00:00Z"


class Office:
    """The centre after both docks forwarded, and a central.toml for the CLI."""

    def __init__(self, base: Path, ceph: Any, postgres: Any) -> None:
        self.a = World(base / "a", "dock-a", pki=base / "pki")
        self.b = World(base / "b", "dock-b", pki=base / "pki")
        for world, names in ((self.a, ("REC-1", "REC-2")), (self.b, ("REC-3",))):
            for name in names:
                world.recorder(name)
                world.phase(name, case=f"CASE-{name}", refuse="pause")
                world.release(name)
                world.docking(name)
        # dock B says its case is a state secret; dock A adds hall footage to its case
        Register(self.b.vault).classify("case/CASE-REC-3", "state_secret", by="desk-b",
                                        reason="names an informant")
        clip = base / "hall.mp4"
        clip.write_bytes(b"hall camera footage " * 500)
        start = times.parse("2026-05-01T09:00Z")
        hall.import_footage(self.a.vault, case="CASE-REC-1", camera="hall-cam-2",
                            location="hearing room 2", source=clip, start_us=start,
                            end_us=start + 600_000_000, provenance="copied off the NVR",
                            by="desk-a", signer=self.a.dock)
        self.tier = Tier(ceph, postgres, self.a.unit.public)
        for world in (self.a, self.b):
            world.checkpoint()
            self.tier.forwarder(world).run()
        # the central's key, certified by the unit, in a central.toml the office uses
        self.config = self.tier.config(ceph, self.a.unit, base / "central")
        conf = self.config.parent
        self.unit_pub = conf / "unit.pub"
        signer = office_signer("test", str(conf / "office.key"), str(conf / "office.cert"),
                               self.a.unit.public)
        assert signer is not None
        self.signer = signer

    def archive(self) -> CentralArchive:
        return CentralArchive(self.tier.dsn, self.tier.objects, self.signer,
                              self.a.unit.public)

    def close(self) -> None:
        self.tier.close()
        self.a.close()
        self.b.close()


@pytest.fixture
def office(tmp_path: Path, ceph: Any, postgres: Any) -> Iterator[Office]:
    o = Office(tmp_path, ceph, postgres)
    yield o
    o.close()


def bodycam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host_agent.cli", *args], capture_output=True,
                          text=True, timeout=120)


def ok(*args: str) -> str:
    done = bodycam(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(*args: str) -> str:
    done = bodycam(*args)
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_a_court_package_from_the_centre_holds_both_docks_evidence(office: Office,
                                                                   tmp_path: Path) -> None:
    c = str(office.config)
    ok("custody", "person", c, "--name", "Li", "--id-no", "A-1", "--role", "approver",
       "--clearance", "commercial_secret", "--by", "registry")
    ok("custody", "person", c, "--name", "Wang", "--id-no", "A-2", "--role", "approver",
       "--clearance", "state_secret", "--by", "registry")
    out = json.loads(ok("custody", "request", c, "--body", "court", "--letter", "(2026)G-17",
                        "--requester", "Judge Huang", "--requester-id", "J-7", "--reason",
                        "trial", "--case", "CASE-REC-1", "--case", "CASE-REC-3", "--by",
                        "registry", "--json"))
    rid = str(out["request"])
    # the class dock B gave its case is the centre's rule too
    assert "cleared for commercial_secret" in refused("custody", "approve", c, rid, "--by", "Li")
    # a person registered only at a dock is nobody at the centre
    Register(office.a.vault).add_person("Zhao", id_no="Z-1", roles=["approver"],
                                        clearance="state_secret", by="desk-a")
    office.tier.forwarder(office.a).run()
    assert "not registered as an approver" in refused("custody", "approve", c, rid, "--by",
                                                      "Zhao")
    ok("custody", "approve", c, rid, "--by", "Wang")
    # the case as the centre sees it: dock B's class, dock A's hall footage; looking is registered
    seen = json.loads(ok("vault", "case", c, "CASE-REC-3", "--by", "Wang", "--json"))
    assert seen["class"] == "state_secret" and seen["records"] == len(
        office.b.vault.records("REC-3"))
    assert "cleared for commercial_secret" in refused("vault", "case", c, "CASE-REC-3", "--by",
                                                      "Li")
    hall_a = json.loads(ok("vault", "case", c, "CASE-REC-1", "--by", "Li", "--json"))["hall"]
    assert len(hall_a) == 1 and hall_a[0]["device_signed"] is False
    pkg = tmp_path / "pkg"
    made = json.loads(ok("custody", "export", c, rid, "--out", str(pkg), "--by", "clerk",
                         "--json"))
    # every record of both cases, from both docks, with the hall footage of dock A
    assert made["devices"] == 2 and made["hall"] == 1
    assert made["records"] == sum(len(w.vault.records(d)) for w, d in (
        (office.a, "REC-1"), (office.b, "REC-3")))
    checked = ok("verify", str(pkg), "--trust", str(office.unit_pub))
    assert "verified" in checked and "central" in checked
    # the register at the centre: the refusals, the decision and the export, each in its log
    rows = json.loads(ok("custody", "register", c, "--json"))
    own = [r for r in rows if "origin" not in r]
    assert [r["what"] for r in own] == ["person", "person", "request", "refusal", "refusal",
                                        "decision", "access", "refusal", "access", "begun",
                                        "access"]
    assert all(isinstance(r["log"], int) for r in own)
    # and what the docks registered about the evidence is read beside it, at its dock's index
    theirs = [r for r in rows if "origin" in r]
    assert {r["what"] for r in theirs} == {"classify", "hall"}
    assert {r["log"] for r in theirs if r["origin"] == office.b.vault.origin} == {
        office.b.vault.log_index(f"custody/{r['id']}") for r in office.b.vault.custody()}
    # looking is not writing: a listing adds nothing to the central's log
    size = office.tier.sql("SELECT count(*) FROM central_log")[0][0]
    ok("custody", "register", c, "--json")
    assert office.tier.sql("SELECT count(*) FROM central_log")[0][0] == size
    # a changed byte anywhere in the package is named
    seg = next((pkg / "segments").iterdir())
    seg.write_bytes(seg.read_bytes()[:-1] + b"\0")
    assert bodycam("verify", str(pkg), "--trust", str(office.unit_pub)).returncode == 1


def test_the_centre_reports_what_the_docks_report(office: Office) -> None:
    scope = report.Scope(as_of_us=times.parse(AS_OF))
    docks = report.build(office.a.vault, scope)["findings"] + report.build(
        office.b.vault, scope)["findings"]
    with office.archive() as archive:
        central = report.build(archive, scope)

    def key(f: dict[str, Any]) -> tuple[Any, ...]:
        return f["code"], f["device"], f["t_us"], tuple(f["records"]), f["detail"]

    assert sorted(map(key, central["findings"])) == sorted(map(key, docks))
    assert {f["code"] for f in central["findings"]} >= {"refused", "late_offload"}
    assert len(central["phases"]) == 3 and central["vault"] == archive.origin
    # the same from the command line, as JSON and as a page
    done = json.loads(ok("custody", "report", str(office.config), "--as-of", AS_OF, "--json"))
    assert sorted(map(key, done["findings"])) == sorted(map(key, docks))


def test_an_operator_with_sql_cannot_rewrite_the_central_register(office: Office) -> None:
    with office.archive() as archive:
        Register(archive).add_person("Li", id_no="A-1", roles=["approver"],
                                     clearance="none", by="registry")
        note = archive.checkpoint(office.signer)
    with psycopg.connect(office.tier.dsn) as db:
        for sql in ("UPDATE register SET fields = '{}'", "DELETE FROM register",
                    "DELETE FROM central_log", "UPDATE central_checkpoints SET size = 0"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                db.execute(sql)  # type: ignore[arg-type]
            db.rollback()
    # the log still extends the checkpoint signed over it
    with office.archive() as archive:
        Register(archive).add_person("Wang", id_no="A-2", roles=["approver"],
                                     clearance="none", by="registry")
        again = archive.checkpoint(office.signer)
    assert int(again.split(b"\n")[1]) == int(note.split(b"\n")[1]) + 1
    # the table's owner turns the triggers off, cuts the log and the checkpoints the database
    # kept, turns them on again: the office refuses to sign, by the notes the store keeps
    with psycopg.connect(office.tier.dsn) as db:
        for table in ("register", "central_log", "central_checkpoints"):
            db.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")  # type: ignore[arg-type]
        db.execute("DELETE FROM register WHERE what = 'person' AND fields LIKE '%A-2%'")
        db.execute("DELETE FROM central_log WHERE idx = (SELECT max(idx) FROM central_log)")
        db.execute("DELETE FROM central_checkpoints")
        for table in ("register", "central_log", "central_checkpoints"):
            db.execute(f"ALTER TABLE {table} ENABLE TRIGGER ALL")  # type: ignore[arg-type]
    with office.archive() as archive, pytest.raises(VaultError, match="no longer extends"):
        archive.checkpoint(office.signer)


def test_other_bytes_put_over_a_locked_segment_are_not_handed_out(office: Office,
                                                                   tmp_path: Path) -> None:
    with office.archive() as archive:
        (sha,) = [bytes(r[0]) for r in office.tier.sql(
            "SELECT object_sha256 FROM records WHERE device_id = 'REC-3' AND object_sha256 IS"
            " NOT NULL ORDER BY seq LIMIT 1")]
        # a dock with write access puts a newer version under the same name
        office.tier.s3.put_object(Bucket=office.tier.bucket, Key=f"objects/{sha.hex()}",
                                  Body=b"not the evidence")
        archive.copy_object(sha, tmp_path / "seg.bin")
        import hashlib

        assert hashlib.sha256((tmp_path / "seg.bin").read_bytes()).digest() == sha


def test_dock_only_acts_are_refused_at_the_centre(office: Office, tmp_path: Path) -> None:
    c = str(office.config)
    assert "done at a dock" in refused("custody", "retention", c, "--by", "desk")
    assert "done at a dock" in refused("device", "issue", c, "REC-1", "--officer", "X",
                                       "--by", "desk")
    # a central.toml that names no reachable database is one line too
    bad = office.config.parent / "bad.toml"
    bad.write_text(office.config.read_text().replace(office.tier.dsn,
                                                     f"dbname=none_{uuid.uuid4().hex[:6]}"
                                                     " host=127.0.0.1 port=1"))
    assert "cannot use the database" in refused("custody", "register", str(bad))
    # the office's key may do nothing a dock does: a certificate with a dock's rights is refused
    conf = office.config.parent
    (conf / "office-dock.cert").write_bytes(office.a.unit.certify_dock(
        "office", public_key(conf / "office.pub")))
    bad.write_text(office.config.read_text().replace('"office.cert"', '"office-dock.cert"'))
    assert "'records' alone" in refused("custody", "register", str(bad))


HALL = {"camera": "c", "location": "l", "start": "s", "end": "e", "object": "ab" * 32,
        "size": 1, "file": "f", "provenance": "p", "device_signed": False, "statement": "00"}


@pytest.mark.parametrize("what,subject,fields", [
    ("classify", "case/CASE-REC-1", {"class": "top-top-secret", "reason": "r"}),
    ("classify", "case/CASE-REC-1", {"class": "none"}),  # no reason: not what we write
    ("recorder", "device/REC-1", {"event": "issue"}),  # issued to no one
    ("recorder", "device/REC-1", {"event": "inventory", "note": ""}),  # no model, no serial
    ("hold", "case/CASE-REC-1", {"on": True, "reason": "r", "items": 1}),
    ("hall", "case/CASE-REC-1", {**HALL, "id": "../../../escaped"}),  # a name for its file
    ("hall", "case/CASE-REC-1", {**HALL, "device_signed": True}),  # "a recorder signed it"
    ("hall", "case/CASE-REC-1", {**HALL, "statement": "zz"}),
    ("evidence", "record/../../x/1", {"case": "CASE-REC-1"}),
])
def test_a_register_row_a_dock_made_up_is_refused_and_the_office_goes_on(
        office: Office, what: str, subject: str, fields: dict[str, Any]) -> None:
    """A dock's operator writes a row into the vault's register by hand (SQL-free: through
    the vault's own append, which any code on the dock can call): the central refuses it,
    flags the dock, and the records office at the centre works on undisturbed."""
    from host_agent.central.forward import ForwardError

    office.a.vault.append_custody(what, "mallory", subject, fields)
    with pytest.raises(ForwardError, match=r"entry \d+: "):
        office.tier.forwarder(office.a).run()
    flagged = office.tier.sql("SELECT flagged FROM logs WHERE origin = %s",
                              office.a.vault.origin)[0][0]
    assert flagged and "entry" in flagged
    rows = json.loads(ok("custody", "register", str(office.config), "--json"))
    assert not any(r.get("actor") == "mallory" for r in rows)
    # while it is flagged, what only dock A attests (its hall footage) adds nothing to a case;
    # what dock B said (the class of its case) still counts
    assert {r["what"] for r in rows if "origin" in r} == {"classify"}
    assert json.loads(ok("custody", "report", str(office.config), "--as-of", AS_OF,
                         "--json"))["findings"]
