"""The records office at the command line, as a person runs it: each command in a subprocess
on a vault with a recorder's phase in it. Refusals and bad input are one clear line and exit
status 2, never a traceback; a package that does not verify is exit status 1 naming why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_agent.keys import UnitKey
from tests.custody_world import CASE, World, docked_office
from tests.unit.test_cli_bad_input import bodycam, refused


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(vault, dock identity dir, unit.pub) with one recorder's phase, released and docked."""
    yield (str(docked_office(tmp_path)), str(tmp_path / "test-dock"),
           str(tmp_path / "unit" / "unit.pub"))


def ok(*args: str) -> str:
    proc = bodycam(*args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def test_request_approve_export_verify(office: tuple[str, str, str], tmp_path: Path) -> None:
    vault, dock, unit = office
    ok("custody", "person", vault, "--name", "Li Wei", "--id-no", "L-1", "--role", "approver",
       "--clearance", "state_secret", "--by", "desk")
    out = json.loads(ok("custody", "request", vault, "--body", "court", "--letter", "L-17",
                        "--requester", "Judge Zhang", "--requester-id", "J-42", "--reason",
                        "trial", "--case", CASE, "--by", "desk", "--json"))
    rid = str(out["request"])
    pkg = str(tmp_path / "pkg")
    refused(bodycam("custody", "export", vault, rid, "--out", pkg, "--by", "desk",
                    "--identity", dock), "not yet decided")
    ok("custody", "approve", vault, rid, "--by", "Li Wei")
    assert "5 records" in ok("custody", "export", vault, rid, "--out", pkg, "--by", "desk",
                             "--identity", dock)
    assert "verified" in ok("verify", pkg, "--trust", unit)
    refused(bodycam("custody", "export", vault, rid, "--out", pkg, "--by", "desk",
                    "--identity", dock), "exists")
    other = UnitKey.create(tmp_path / "other")
    proc = bodycam("verify", pkg, "--trust", other.public.hex())
    refused(proc, "do not rely on it", status=1)
    assert "untrusted" in proc.stdout
    seg = next((tmp_path / "pkg" / "segments").iterdir())
    seg.write_bytes(b"x" + seg.read_bytes()[1:])
    proc = bodycam("verify", pkg, "--trust", unit, "--json")
    assert proc.returncode == 1
    problems = json.loads(proc.stdout)["problems"]
    assert {(p["code"], p["path"]) for p in problems} >= {
        ("altered", f"segments/{seg.name}"), ("hash_mismatch", f"segments/{seg.name}")}
    register = ok("custody", "register", vault)
    assert "refusal" in register and "act=export" in register


def test_bad_input_is_one_clear_line(office: tuple[str, str, str], tmp_path: Path) -> None:
    vault, dock, unit = office
    refused(bodycam("custody", "export", vault, "99", "--out", str(tmp_path / "p"), "--by",
                    "desk", "--identity", dock), "no access request #99")
    refused(bodycam("custody", "request", vault, "--body", "court", "--letter", "L",
                    "--requester", "Z", "--requester-id", "J", "--reason", "r", "--by", "d"),
            "names no items")
    refused(bodycam("custody", "request", vault, "--body", "press", "--letter", "L",
                    "--requester", "Z", "--requester-id", "J", "--reason", "r", "--by", "d",
                    "--case", CASE), "invalid choice")
    refused(bodycam("custody", "request", vault, "--body", "court", "--letter", "L",
                    "--requester", "Z", "--requester-id", "J", "--reason", "r", "--by", "d",
                    "--device", "REC-1", "--from", "yesterday", "--to", "2026-01-01"),
            "not a date or time")
    refused(bodycam("custody", "classify", vault, "--case", CASE, "--record", "REC-1/1",
                    "--class", "state_secret", "--reason", "x", "--by", "d"),
            "one --case or one --record")
    refused(bodycam("custody", "classify", vault, "--record", "REC-1", "--class",
                    "state_secret", "--reason", "x", "--by", "d"), "DEVICE/SEQ")
    refused(bodycam("vault", "case", vault, CASE, "--by", "Nobody"), "not a registered person")
    refused(bodycam("custody", "retention", vault, "--by", "job", "--keep-days", "30"),
            "at least 183 days")
    refused(bodycam("custody", "retention", vault, "--by", "job", "--as-of", "2099-01-01"),
            "only a --dry-run")
    refused(bodycam("device", "issue", vault, "REC-404", "--officer", "O", "--by", "d"),
            "not a recorder this vault enrolled")
    refused(bodycam("custody", "register", str(tmp_path / "nothing")), "not a vault")
    assert not (tmp_path / "nothing").exists()
    refused(bodycam("verify", str(tmp_path / "nothing"), "--trust", unit), status=1)
    rid = str(json.loads(ok("custody", "request", vault, "--body", "audit", "--letter", "A-1",
                            "--requester", "Auditor", "--requester-id", "A", "--reason",
                            "audit", "--case", CASE, "--by", "desk", "--json"))["request"])
    refused(bodycam("custody", "deny", vault, rid, "--by", "Nobody"), "not registered as an"
            " approver")  # a stranger cannot close a request by refusing it
    refused(bodycam("custody", "report", vault, "--html", str(tmp_path / "no" / "dir.html")),
            "No such file or directory")
    refused(bodycam("verify", str(tmp_path), "--trust", "not-a-key"), "verify")
    refusals = json.loads(ok("custody", "register", vault, "--json"))
    reasons = [r["fields"]["reason"] for r in refusals if r["what"] == "refusal"]
    assert any("no access request #99" in r for r in reasons)
    assert any("not a registered person" in r for r in reasons)
    assert any("REC-404" in r for r in reasons)


def test_device_custody_and_report(office: tuple[str, str, str], tmp_path: Path) -> None:
    vault, _, _ = office
    ok("device", "add", vault, "REC-1", "--by", "desk", "--model", "DSJ-V9")
    assert "held by 4501-0233" in ok("device", "issue", vault, "REC-1", "--officer",
                                     "4501-0233", "--by", "desk")
    assert "held by 4501-0233" in ok("device", "inventory", vault)
    ok("device", "return", vault, "REC-1", "--by", "desk", "--condition", "fine")
    history = json.loads(ok("device", "history", vault, "REC-1", "--json"))
    assert [e["event"] for e in history][-2:] == ["issue", "return"]
    report = json.loads(ok("custody", "report", vault, "--json"))
    assert report["format"] == "bodycam-compliance/1"
    assert {f["code"] for f in report["findings"]} == {"late_offload"}  # recorded in 2023
    html = tmp_path / "r.html"
    text = ok("custody", "report", vault, "--html", str(html))
    assert "1 finding(s)" in text and html.read_text().lower().startswith("<!doctype html>")


def test_a_copy_cut_at_any_point_leaves_only_bytes_the_register_names(tmp_path: Path) -> None:
    """A power cut mid-copy: the process is killed as soon as its staging directory appears
    (wherever the copy then is); the register already names that directory."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from host_agent.vault import Vault

    w = World(tmp_path)
    w.recorder("REC-1")
    for _ in range(4):
        w.segment("REC-1", data=os.urandom(16 << 20))
    w.close()
    vault = str(tmp_path / "vault")
    ok("custody", "person", vault, "--name", "Li", "--id-no", "L-1", "--role", "approver",
       "--by", "desk")
    rid = str(json.loads(ok("custody", "request", vault, "--body", "unit", "--letter", "U-1",
                            "--requester", "Li", "--requester-id", "L-1", "--reason", "audit",
                            "--device", "REC-1", "--from", "2000-01-01T00:00Z", "--to",
                            "2100-01-01T00:00Z", "--by", "desk", "--json"))["request"])
    ok("custody", "approve", vault, rid, "--by", "Li")
    out = tmp_path / "outbox"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "host_agent.cli", "custody", "copy", vault,
                             rid, "--out", str(out / "copy"), "--by", "Li"])
    deadline = time.monotonic() + 60
    while not any(out.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # cut while copying 64 MiB, not after
    (left,) = list(out.iterdir())  # the staging directory, or the finished copy
    with Vault.open(vault, create=False) as v:
        begun = v.custody(what="begun", subject=f"request/{rid}")
    assert len(begun) == 1 and begun[0]["fields"]["act"] == "copy"
    assert str(left) in (begun[0]["fields"]["staging"], begun[0]["fields"]["out"])
