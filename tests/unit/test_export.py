"""Tests for court export packages (host_agent/custody/export.py) and their offline check
(host_agent/custody/package.py `check`): a real vault, a lab unit with a certified dock and a
recorder signing real records (tests/custody_world.World), a real approved request, a real
package on disk. No mocks: every test alters the package on disk the way a careless copy or
a forger would and asks `check` what it sees.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host_agent.custody import export as exporter
from host_agent.custody import package
from host_agent.custody.package import PackageReport, check
from host_agent.custody.register import Register
from host_agent.keys import UnitKey
from host_agent.lab.unit import lab_unit
from protocol import cbor
from tests.custody_world import CASE, World

DEVICE = "SIM-1"
APPROVER = "Li Wei"
CLERK = "records office"
LETTER = "(2026) Gui 0102 Xing Chu No. 17"
LOG_CODES = {"checkpoint_bad", "proof_bad", "untrusted"}

# Every file of the package, as (pattern, which match): resolved against the built package.
# `test_the_patterns_name_every_file` fails if the package holds a file not named here, so
# the per-file tests below cover EVERY file.
FILES = [
    ("README.txt", 0), ("summary.html", 0), ("unit.pub", 0), ("package.cbor", 0),
    ("SHA256SUMS", 0), ("log/checkpoint", 0), ("log/proofs.cbor", 0), ("certs/*.cose", 0),
    (f"keys/{DEVICE}.pub", 0),
    *((f"records/{DEVICE}/{seq:08d}.cose", 0) for seq in range(1, 6)),
    ("segments/*.bin", 0), ("segments/*.bin", 1),
]
FILE_IDS = [f"{p}[{n}]" if "*" in p else p for p, n in FILES]


@dataclass
class Built:
    world: World
    pkg: Path  # the pristine package: tests work on copies
    request_id: int
    result: dict[str, Any]


def build(base: Path, *, earlier_dock: str | None = None) -> Built:
    """One recorder, one mandated phase of CASE (phase_started, notice_given, 2 segments,
    phase_ended: 5 records), Li Wei (approver, cleared state_secret) approves a court's
    request for the case, the records office exports it to base/pkg, the checkpoint signed
    by world.dock. With `earlier_dock`, another dock the unit certified signed a checkpoint of
    the vault before."""
    world = World(base)
    world.recorder(DEVICE)
    seqs = world.phase(DEVICE, segments=2)
    assert seqs == [1, 2, 3, 4, 5]
    if earlier_dock is not None:
        world.vault.checkpoint(lab_unit(base, earlier_dock)[1])
    register = Register(world.vault)
    register.add_person(APPROVER, id_no="450102198001011234", roles=["approver"],
                        clearance="state_secret", by=CLERK)
    rid = register.file_request(body="court", letter=LETTER, requester="Judge Zhang",
                                requester_id="J-0042", reason="administrative trial",
                                items=[{"case": CASE}], by=CLERK)
    register.decide(rid, approver=APPROVER, approved=True, note="", items_class="none")
    result = exporter.export(world.vault, rid, base / "pkg", by=CLERK, signer=world.dock,
                             unit_public=world.unit.public)
    return Built(world, base / "pkg", rid, result)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    b = build(tmp_path_factory.mktemp("export"))
    yield b
    b.world.close()


@pytest.fixture
def pkg(built: Built, tmp_path: Path) -> Path:
    """A fresh copy of the package at tmp_path/"pkg", for one test to alter."""
    out = tmp_path / "pkg"
    shutil.copytree(built.pkg, out)
    return out


@pytest.fixture
def unit_key(built: Built) -> bytes:
    return built.world.unit.public


def resolve(root: Path, pattern: str, n: int) -> str:
    matches = sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    assert len(matches) > n, f"the package holds no file {pattern}[{n}]: {matches}"
    return matches[n]


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def flip(path: Path, pos: int, mask: int = 0x01) -> bytes:
    """Flip bits of one byte of the file; its original bytes."""
    data = path.read_bytes()
    altered = bytearray(data)
    altered[pos] ^= mask
    path.write_bytes(bytes(altered))
    return data


def problems(report: PackageReport) -> set[tuple[str, str]]:
    return {(p.code, p.path) for p in report.problems}


# -- the untouched package -----------------------------------------------------------------------


def test_untouched_package_checks_clean_and_summary_names_who_and_what(
        built: Built, pkg: Path, unit_key: bytes) -> None:
    report = check(pkg, unit_key)
    assert report.problems == []
    assert report.to_dict()["ok"] is True
    s = report.summary
    assert s["package"] == built.result["package"]
    assert s["request"]["id"] == built.request_id
    assert s["request"]["body"] == "court"
    assert s["request"]["letter"] == LETTER
    assert s["request"]["requester"] == "Judge Zhang"
    assert s["approved_by"] == APPROVER
    assert s["made_by"] == CLERK
    assert s["records"] == built.result["records"] == 5
    assert s["segments"] == built.result["segments"] == 2
    assert s["devices"] == [DEVICE]
    assert s["dock"] == built.world.dock.dock_id == "test-dock"
    assert s["log"]["size"] == built.result["log_size"]


def test_the_patterns_name_every_file(pkg: Path) -> None:
    named = [resolve(pkg, p, n) for p, n in FILES]
    assert len(set(named)) == len(named)
    assert set(named) == all_files(pkg)


# -- one byte flipped, one file deleted, one file added --------------------------------------------


@pytest.mark.parametrize(("pattern", "n"), FILES, ids=FILE_IDS)
def test_a_flipped_byte_in_any_file_is_named(pkg: Path, unit_key: bytes, pattern: str,
                                             n: int) -> None:
    rel = resolve(pkg, pattern, n)
    path = pkg / rel
    size = path.stat().st_size
    for pos in sorted({0, size // 2, size - 1}):
        original = flip(path, pos)
        try:
            report = check(pkg, unit_key)
        finally:
            path.write_bytes(original)
        seen = problems(report)
        where = f"{rel} byte {pos}: {seen}"
        if rel == package.SUMS:
            # check() never reads SHA256SUMS (a convenience for `sha256sum -c`, not a proof):
            # a flipped byte in it goes unseen by check(), by design.
            assert report.problems == [], where
            continue
        assert report.problems, where
        assert report.to_dict()["ok"] is False
        if rel in (package.CHECKPOINT, package.PROOFS):
            assert any(path_ == rel and code in LOG_CODES for code, path_ in seen), where
        elif rel == package.MANIFEST:
            assert ("manifest_altered", rel) in seen, where
        else:
            assert ("altered", rel) in seen, where
        # and the deeper check sees it too, not only the manifest's list of hashes
        if rel.startswith("records/"):
            assert ("record_mismatch", rel) in seen, where
        elif rel.startswith("segments/"):
            assert ("hash_mismatch", rel) in seen, where
        elif rel.startswith("keys/"):
            assert ("key_mismatch", rel) in seen, where
        elif rel.startswith("certs/"):
            assert ("untrusted", "certs/") in seen, where
    assert check(pkg, unit_key).problems == []  # restored: the test altered what it meant to


@pytest.mark.parametrize(("pattern", "n"), FILES, ids=FILE_IDS)
def test_a_deleted_file_is_named(pkg: Path, unit_key: bytes, pattern: str, n: int) -> None:
    rel = resolve(pkg, pattern, n)
    (pkg / rel).unlink()
    report = check(pkg, unit_key)
    if rel == package.SUMS:
        # not read by check(): a package without it is as good (see the flipped-byte test)
        assert report.problems == []
        return
    assert ("missing", rel) in problems(report), problems(report)
    assert report.to_dict()["ok"] is False


@pytest.mark.parametrize("rel", ["notes.txt", "records/SIM-1/00000006.cose",
                                 "segments/" + "00" * 32 + ".bin"])
def test_a_stray_file_is_named(pkg: Path, unit_key: bytes, rel: str) -> None:
    (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
    (pkg / rel).write_bytes(b"not part of the export\n")
    report = check(pkg, unit_key)
    assert problems(report) == {("stray", rel)}


# -- trust -------------------------------------------------------------------------------------


def test_another_units_key_trusts_nothing(pkg: Path, tmp_path: Path) -> None:
    other = UnitKey.create(tmp_path / "other").public
    report = check(pkg, other)
    assert "untrusted" in {p.code for p in report.problems}
    assert report.to_dict()["ok"] is False
    assert "dock" not in report.summary  # no dock is vouched for by a unit nobody trusts


def test_a_record_from_another_recorder_is_named(pkg: Path, unit_key: bytes,
                                                 tmp_path: Path) -> None:
    other = World(tmp_path / "other")
    try:
        other.recorder("SIM-2")
        other.phase("SIM-2")
        src = other.vault.manifest_path("SIM-2", 3)
    finally:
        other.close()
    rel = package.record_path(DEVICE, 3)
    shutil.copyfile(src, pkg / rel)
    seen = problems(check(pkg, unit_key))
    assert ("altered", rel) in seen
    assert ("record_mismatch", rel) in seen
    assert all(path == rel for _, path in seen), seen


def test_a_record_signed_by_the_same_recorder_but_not_logged_is_named(
        pkg: Path, unit_key: bytes, tmp_path: Path) -> None:
    """The same device key (World seeds it from the device id) signed this record in another
    vault, for another case: its signature is good, but it is not the record this vault
    logged."""
    other = World(tmp_path / "other")
    try:
        other.recorder(DEVICE)
        other.phase(DEVICE, case="OTHER-2026-7")
        src = other.vault.manifest_path(DEVICE, 3)
    finally:
        other.close()
    rel = package.record_path(DEVICE, 3)
    assert src.read_bytes() != (pkg / rel).read_bytes()
    shutil.copyfile(src, pkg / rel)
    report = check(pkg, unit_key)
    seen = problems(report)
    assert ("altered", rel) in seen
    assert ("record_mismatch", rel) in seen
    assert report.summary["records"] == 4


def test_a_manifest_rewritten_to_match_a_new_segment_is_caught(pkg: Path,
                                                               unit_key: bytes) -> None:
    """A forger who replaces a segment and rewrites package.cbor's hash list to agree: the
    export's log entry pins package.cbor's SHA-256, and the record the recorder signed pins
    the segment's."""
    man_path = pkg / package.MANIFEST
    man = cbor.decode(man_path.read_bytes())
    seg = resolve(pkg, "segments/*.bin", 0)
    data = bytearray((pkg / seg).read_bytes())
    data[10] ^= 0x01
    (pkg / seg).write_bytes(bytes(data))
    man["files"][seg] = package.sha256_file(pkg / seg)
    man_path.write_bytes(bytes(cbor.encode(man)))
    seen = problems(check(pkg, unit_key))
    assert ("manifest_altered", package.MANIFEST) in seen
    assert ("hash_mismatch", seg) in seen
    assert ("altered", seg) not in seen  # the rewritten list agrees; the signatures do not


def test_the_certificates_of_every_dock_and_the_signing_one_is_used(tmp_path: Path) -> None:
    """The export's dock never signed for this vault before (its certificate must come from
    the signer: an earlier export.py took certs/ only from the vault's docks table, which
    the export's own checkpoint fills too late); another dock did. Both certificates are in
    the package and the checkpoint is checked with the export's dock."""
    b = build(tmp_path, earlier_dock="dock-b")
    try:
        report = check(b.pkg, b.world.unit.public)
        certs = cbor.decode((b.pkg / package.MANIFEST).read_bytes())["certs"]
    finally:
        b.world.close()
    assert report.problems == []
    assert report.summary["dock"] == "test-dock"
    assert certs == ["certs/1.cose", "certs/2.cose"]


# -- a manifest whose structure one flipped byte broke is reported, never a traceback -------


# (what to find in package.cbor, which byte of it, the bits to flip)
MALFORMED = [
    pytest.param(b"\x81lcerts/1.cose", 1, 0x20, id="cert-name-as-bytes"),
    pytest.param(b"hunit.pub", 0, 0x20, id="file-name-as-bytes"),
    pytest.param(b"cref", 1, 0x02, id="record-without-ref"),
    pytest.param(b"jexport_log", 1, 0x02, id="export_log-key-renamed"),
]


@pytest.mark.parametrize(("needle", "offset", "mask"), MALFORMED)
def test_one_flipped_byte_of_the_manifest_is_reported_against_it(
        pkg: Path, unit_key: bytes, needle: bytes, offset: int, mask: int) -> None:
    man_path = pkg / package.MANIFEST
    at = man_path.read_bytes().find(needle)
    assert at >= 0
    flip(man_path, at + offset, mask)
    report = check(pkg, unit_key)  # must report, never raise
    assert report.to_dict()["ok"] is False
    assert package.MANIFEST in {p.path for p in report.problems}, problems(report)


def test_proofs_that_are_not_a_list_are_named_not_a_traceback(pkg: Path, unit_key: bytes) -> None:
    proofs = pkg / package.PROOFS
    doc = cbor.decode(proofs.read_bytes())
    doc["entries"] = 5
    proofs.write_bytes(bytes(cbor.encode(doc)))
    report = check(pkg, unit_key)
    assert ("proof_bad", package.PROOFS) in {(p.code, p.path) for p in report.problems}
