"""End to end over a real pty through pyserial: MicroPython recorder → dock session → vault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from host_agent.dock.session import SessionError, dock
from host_agent.vault import Vault
from tests.hil.conftest import device_records, docked


def test_docking_offloads_verifies_and_frees_the_device(tmp_path: Path) -> None:
    with docked(tmp_path, segments=3, skew_us=2_500_000) as (rec, session):
        report = dock(session)
        left_on_device = device_records(rec)
    off = report.offload
    # Three segments, then the clock step the dock made, which the recorder signs as an event.
    assert off["stored"] == [1, 2, 3, 4] and off["released"] == [1, 2, 3, 4]
    assert off["quarantined"] == []
    assert off["bytes"] > 3 * 150_000
    assert left_on_device == []  # released only after the vault held them
    # The clock was 2.5 s off; after the step it is within a few ms, inside the stated bound.
    assert abs(report.clock["offset_before_us"] - 2_500_000) < 100_000
    assert abs(report.clock["offset_after_us"]) < 5_000
    assert report.readiness["ready"], report.readiness["reasons"]
    assert report.readiness["status"]["clock"]["state"] == "synced"
    with Vault.open(tmp_path / "vault", create=False) as vault:
        assert vault.verify() == []
        device_id = report.device_id
        public = vault.public_key(device_id)
        assert public is not None
        assert [r["seq"] for r in vault.records(device_id)] == [1, 2, 3, 4]
        assert [r["kind"] for r in vault.records(device_id)][-1] == "event"
        assert vault.dockings(device_id)[0]["report"]["device_id"] == device_id


def test_every_stored_manifest_verifies_with_an_independent_cose_verifier(tmp_path: Path) -> None:
    with docked(tmp_path) as (rec, session):
        report = dock(session)
    with Vault.open(tmp_path / "vault", create=False) as vault:
        public = vault.public_key(report.device_id)
    assert public is not None
    cose_files = sorted((tmp_path / "vault" / "manifests" / report.device_id).glob("*.cose"))
    assert len(cose_files) == 3  # the segments, then the signed clock step
    prev = bytes(32)
    import hashlib

    for path in cose_files:
        raw = path.read_bytes()
        tag = cbor2.loads(raw)
        protected, _unprotected, payload, signature = tag.value
        Ed25519PublicKey.from_public_bytes(public).verify(
            signature, cbor2.dumps(["Signature1", protected, b"", payload]))
        fields = cbor2.loads(payload)
        assert fields["prev"] == prev
        if fields["kind"] == "segment":
            assert fields["tracks"] == ["audio", "video"]  # Art. 2: both tracks, together
        else:
            assert fields["event"] == "clock_stepped" and fields["detail"]["dock"] == "test-dock"
        prev = hashlib.sha256(raw).digest()


def test_unknown_recorder_is_refused_and_keeps_its_segments(tmp_path: Path) -> None:
    with docked(tmp_path, enroll=False) as (rec, session):
        with pytest.raises(SessionError, match="not enrolled"):
            session.identify()
        assert len(device_records(rec)) == 4  # two segments, data and record each


def test_a_recorder_presenting_another_key_is_refused(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "vault")
    vault.enroll("SIM-CLONE", bytes(range(32)), by="test")
    with docked(tmp_path, vault=vault, device_id="SIM-CLONE") as (rec, session):
        with pytest.raises(SessionError, match="not its enrolled key"):
            session.identify()
        assert len(device_records(rec)) == 4
    vault.close()


def test_segment_altered_on_the_device_keeps_its_bytes_aside_and_the_chain_goes_on(
        tmp_path: Path) -> None:
    with docked(tmp_path, segments=2) as (rec, session):
        session.identify()
        seg1 = rec.storage / "rec" / "00000001.bin"
        data = bytearray(seg1.read_bytes())
        data[1000] ^= 0xFF
        seg1.write_bytes(bytes(data))
        off = session.offload()
        left = device_records(rec)
    # Record 1 is authentic: it is evidence, its altered bytes (read twice, the same) are kept
    # in quarantine; record 2 links to it and is stored as usual. The vault holds all the
    # recorder had, so both are freed.
    assert off.stored == [1, 2] and off.released == [1, 2] and off.held == []
    assert [(q["seq"], q["code"], q["record_stored"]) for q in off.quarantined] == [
        (1, "hash_mismatch", True)]
    assert off.chain_breaks == []
    assert left == []
    with Vault.open(tmp_path / "vault", create=False) as vault:
        rows = vault.records(session.identity.device_id)  # type: ignore[union-attr]
        assert [r["data_state"] for r in rows] == ["quarantined", "stored"]
        assert vault.verify() == []
        kept = vault.root / off.quarantined[0]["path"] / "segment.bin"
        assert kept.read_bytes() == bytes(data)


@pytest.mark.parametrize(
    "config, reason",
    [
        ({"backup_pct": 20}, "backup battery 20%"),
        ({"main_pct": 40, "main_charging": False}, "main battery 40%"),
        ({"fault": "camera sensor"}, "self-test faults: camera sensor"),
    ],
)
def test_readiness_names_what_keeps_a_recorder_from_duty(tmp_path, config, reason) -> None:
    with docked(tmp_path, segments=0, **config) as (rec, session):
        report = dock(session)
    assert not report.readiness["ready"]
    assert any(reason in r for r in report.readiness["reasons"]), report.readiness["reasons"]


def test_redocking_offloads_only_what_is_new(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "vault")
    with docked(tmp_path, vault=vault, segments=1) as (rec, session):
        first = dock(session)
    with docked(tmp_path, vault=vault, segments=2) as (rec, session):  # same storage: same key
        second = dock(session)
    assert first.offload["stored"] == [1, 2]  # the segments, then the signed clock step
    assert second.offload["stored"] == [3, 4, 5]
    assert vault.verify() == []
    vault.close()


def bodycam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host_agent.cli", *args], capture_output=True,
                          text=True, timeout=180)


def test_demo_json_then_vault_verify_catches_one_changed_byte(tmp_path: Path) -> None:
    demo = bodycam("demo", "--json", "--dir", str(tmp_path), "--segments", "2",
                   "--segment-ms", "300")
    assert demo.returncode == 0, demo.stderr
    report = json.loads(demo.stdout)
    vault_dir = Path(report["vault"])
    stored = report["offload"]["stored"]
    assert stored == list(range(1, len(stored) + 1))
    assert report["offload"]["segments"] >= 4  # two at boot, at least two in the phase
    (phase,) = report["phases"]
    assert phase["row"] == 4 and phase["notice_given"] and phase["ended_us"]
    assert [e["detail"]["action"] for e in phase["refusals"]] == ["pause"]
    ok = bodycam("vault", "verify", str(vault_dir))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{len(stored)} records verified" in ok.stdout
    victim = next(p for p in (vault_dir / "objects").rglob("*") if p.is_file())
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    bad = bodycam("vault", "verify", str(vault_dir), "--json")
    assert bad.returncode == 1
    problems = json.loads(bad.stdout)["problems"]
    assert [p["code"] for p in problems] == ["hash_mismatch"]
    assert victim.name in problems[0]["path"]


def test_the_mpy_firmware_docks_within_a_256k_heap(tmp_path: Path) -> None:
    # On the unix port the heap also holds ~143 KB of bytecode and module state that a board
    # keeps in flash (tests/hil/test_shift.py measures the rest over a shift).
    with docked(tmp_path, heapsize="256k", segments=2) as (rec, session):
        report = dock(session)
    assert report.offload["stored"] == [1, 2, 3]  # the segments, then the signed clock step
    assert "MemoryError" not in rec.log_text()


def test_dock_exits_non_zero_when_the_recorder_rejects_the_policy(tmp_path: Path) -> None:
    """`bodycam dock --policy` with a policy another unit signed: the recorder refuses it and
    the command says so, exit 1 (the docking itself is done and recorded)."""
    from host_agent.keys import UnitKey
    from protocol import policy

    stranger = UnitKey.create(tmp_path / "another-unit")
    doc = policy.annex()
    doc["version"] = 2
    (tmp_path / "p.cose").write_bytes(policy.sign(doc, stranger.kid, stranger.sign))
    with docked(tmp_path, segments=1) as (rec, session):
        rec.wait_for("ready for the dock")
        done = bodycam("dock", "--identity", str(tmp_path / "pki" / "test-dock"), "--port",
                       rec.port, "--vault", str(tmp_path / "vault"), "--enroll-unknown",
                       "--policy", str(tmp_path / "p.cose"))
    assert done.returncode == 1, done.stderr
    assert "rejected the policy" in done.stderr and "does not verify" in done.stderr
    assert "Traceback" not in done.stderr
