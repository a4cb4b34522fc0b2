"""After `bodycam demo` (the real firmware in MicroPython, docked over a pty), the records office
exports the case for a court under an approved request, and the package verifies offline; a
changed byte, a dropped file or another unit's key is named. Every command as a person types
it."""

from __future__ import annotations

import json
from pathlib import Path

from host_agent.keys import UnitKey
from tests.hil.test_dock_serial import bodycam


def ok(*args: str) -> str:
    proc = bodycam(*args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stdout


def test_demo_then_a_court_export_verifies_offline(tmp_path: Path) -> None:
    demo = json.loads(ok("demo", "--json", "--dir", str(tmp_path), "--segments", "1",
                         "--segment-ms", "300"))
    vault = demo["vault"]
    (phase,) = demo["phases"]
    case = phase["case"]
    ok("custody", "person", vault, "--name", "Li Wei", "--id-no", "450102198001011234",
       "--role", "approver", "--clearance", "state_secret", "--by", "records office")
    rid = str(json.loads(ok(
        "custody", "request", vault, "--body", "court", "--letter", "(2026)桂0102行初17号",
        "--requester", "Judge Zhang", "--requester-id", "J-0042", "--reason", "trial",
        "--case", case, "--by", "records office", "--json"))["request"])
    ok("custody", "approve", vault, rid, "--by", "Li Wei")
    pkg = tmp_path / "package"
    ok("custody", "export", vault, rid, "--out", str(pkg), "--by", "records office",
       "--identity", str(tmp_path / "demo-dock"))
    unit = str(tmp_path / "unit" / "unit.pub")
    checked = json.loads(ok("verify", str(pkg), "--trust", unit, "--json"))
    assert checked["ok"] and checked["summary"]["records"] == len(phase["segments"]) + len(
        phase["events"]) + 1  # the phase_started event, its events and its segments
    assert checked["summary"]["request"]["body"] == "court"
    # the export is in the register and the vault's log, and the vault still verifies
    register = json.loads(ok("custody", "register", vault, "--json"))
    (export_entry,) = [r for r in register if r["what"] == "access"]
    assert export_entry["fields"]["act"] == "export" and isinstance(export_entry["log"], int)
    ok("vault", "verify", vault)

    other = UnitKey.create(tmp_path / "another-unit")
    wrong = bodycam("verify", str(pkg), "--trust", other.public.hex(), "--json")
    assert wrong.returncode == 1
    assert "untrusted" in {p["code"] for p in json.loads(wrong.stdout)["problems"]}

    record = next((pkg / "records").rglob("*.cose"))
    dropped = record.read_bytes()
    record.unlink()
    gone = json.loads(bodycam("verify", str(pkg), "--trust", unit, "--json").stdout)
    assert ("missing", record.relative_to(pkg).as_posix()) in {
        (p["code"], p["path"]) for p in gone["problems"]}
    record.write_bytes(dropped[:-1] + bytes([dropped[-1] ^ 1]))
    flipped = json.loads(bodycam("verify", str(pkg), "--trust", unit, "--json").stdout)
    assert {p["path"] for p in flipped["problems"]} == {record.relative_to(pkg).as_posix()}
