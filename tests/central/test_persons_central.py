"""Authenticated persons at the centre (host_agent/custody/register.py): the same mechanism as
at a dock, the certificates checked against central.toml's `unit_key`. Real PostgreSQL, real
Ceph RGW, real keys, the CLI as a person types it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host_agent.keys import UnitKey
from tests.central.test_custody_central import Office, bodycam, ok, refused


@pytest.fixture
def centre(tmp_path: Path, ceph: Any, postgres: Any) -> Iterator[Office]:
    o = Office(tmp_path, ceph, postgres)
    yield o
    o.close()


def person_dir(base: Path, name: str, unit: Path, role: str, clearance: str) -> str:
    d = base / name.replace(" ", "_")
    ok("person", "new", "--dir", str(d))
    ok("unit", "certify-person", "--unit", str(unit), "--name", name, "--id-no", f"ID-{name}",
       "--role", role, "--clearance", clearance, "--key", str(d / "person.pub"))
    return str(d)


def test_certified_persons_at_the_centre(centre: Office, tmp_path: Path) -> None:
    c = str(centre.config)
    unit = tmp_path / "pki" / "unit"
    li = person_dir(tmp_path / "people", "Li Wei", unit, "approver", "state_secret")
    wang = person_dir(tmp_path / "people", "Wang Fang", unit, "custodian", "none")
    UnitKey.create(tmp_path / "other")
    zhou = person_dir(tmp_path / "people", "Zhou Min", tmp_path / "other", "approver",
                      "state_secret")
    assert "not signed by this unit" in refused(
        "custody", "person", c, "--cert", str(Path(zhou) / "person.cert"), "--by", "registry")
    ok("custody", "person", c, "--cert", str(Path(li) / "person.cert"), "--by", "registry")
    assert "must sign" in refused("custody", "person", c, "--cert",
                                  str(Path(wang) / "person.cert"), "--by", "registry")
    ok("custody", "person", c, "--cert", str(Path(wang) / "person.cert"), "--as", li)
    rid = str(json.loads(ok("custody", "request", c, "--body", "court", "--letter", "G-17",
                            "--requester", "Judge Huang", "--requester-id", "J-7", "--reason",
                            "trial", "--case", "CASE-REC-1", "--case", "CASE-REC-3", "--as",
                            wang, "--json"))["request"])
    assert "must sign" in refused("custody", "approve", c, rid, "--by", "Li Wei")
    ok("custody", "approve", c, rid, "--as", li)
    assert "must sign" in refused("vault", "case", c, "CASE-REC-3", "--by", "Li Wei")
    ok("vault", "case", c, "CASE-REC-3", "--as", li, "--json")
    pkg = tmp_path / "pkg"
    assert "must sign" in refused("custody", "export", c, rid, "--out", str(pkg), "--by",
                                  "clerk")
    ok("custody", "export", c, rid, "--out", str(pkg), "--as", wang, "--json")
    assert "verified" in ok("verify", str(pkg), "--trust", str(centre.unit_pub))
    rows = [r for r in json.loads(ok("custody", "register", c, "--json")) if "origin" not in r]
    assert [r["what"] for r in rows] == [
        "refusal", "person", "refusal", "person", "request", "refusal", "decision", "refusal",
        "access", "refusal", "begun", "access"]
    assert all("proof" in r["fields"] for r in rows[3:] if r["what"] != "refusal")
    assert bodycam("custody", "register", c).returncode == 0
