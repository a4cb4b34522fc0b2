"""Vault verification (host_agent/vault/verify.py), one rule per test: what it says of a
rolled-back log, a checkpoint note too large to be one, and a stored record whose signature
no longer verifies. Real files, real SQLite, real Ed25519."""

from __future__ import annotations

import shutil
from pathlib import Path

from host_agent.vault import Vault
from host_agent.vault import checkpoint as notes
from tests.factories import RecordChain
from tests.unit.test_checkpoint import Dock
from tests.unit.test_vault import commit_n, keep_checkpoint

DEVICE = "SIM-1234"


def test_a_rolled_back_log_is_reported_with_how_many_entries_were_cut(tmp_path: Path) -> None:
    chain = RecordChain(DEVICE, seed=b"vault rules")
    root, old = tmp_path / "vault", tmp_path / "old"
    dock = Dock()
    with Vault.open(root) as vault:
        vault.enroll(DEVICE, chain.public_key, by="test")
        commit_n(vault, chain, 1)
        vault.checkpoint(dock)  # the vault knows this dock's key
    shutil.copytree(root, old)
    with Vault.open(root) as vault:
        commit_n(vault, chain, 2)
        kept = keep_checkpoint(vault, tmp_path / "kept.note", dock)
    shutil.rmtree(root)
    shutil.copytree(old, root)
    with Vault.open(root, create=False) as vault:
        cut = notes.parse(kept.read_bytes()).size - vault.log_size()
        [problem] = vault.verify(checkpoints=[kept])
    assert cut > 0
    assert problem.code == "log_truncated"
    assert f"the newest {cut} were cut" in problem.detail


def test_a_checkpoint_file_larger_than_a_note_can_be_is_refused_as_too_large(
        tmp_path: Path) -> None:
    chain = RecordChain(DEVICE, seed=b"vault rules")
    big = tmp_path / "big.note"
    big.write_bytes(b"x" * (notes.MAX_NOTE_BYTES + 1))
    with Vault.open(tmp_path / "vault") as vault:
        vault.enroll(DEVICE, chain.public_key, by="test")
        problems = vault.verify(checkpoints=[big])
    assert [p.path for p in problems] == [str(big)]
    assert f"at most {notes.MAX_NOTE_BYTES} bytes" in problems[0].detail


def test_a_stored_record_whose_signature_fails_is_reported_not_raised(tmp_path: Path) -> None:
    chain = RecordChain(DEVICE, seed=b"vault rules")
    with Vault.open(tmp_path / "vault") as vault:
        vault.enroll(DEVICE, chain.public_key, by="test")
        commit_n(vault, chain, 2)
        man = vault.manifest_path(DEVICE, 2)
        data = bytearray(man.read_bytes())
        data[-1] ^= 1  # inside the signature
        man.chmod(0o644)
        man.write_bytes(bytes(data))
        codes = {p.code for p in vault.verify()}
    assert "bad_signature" in codes


def test_a_dock_certificate_that_does_not_open_does_not_hide_one_that_does(
        tmp_path: Path) -> None:
    from tests.unit.test_checkpoint import Unit

    chain = RecordChain(DEVICE, seed=b"vault rules")
    old_unit, unit = Unit(b"the unit before"), Unit(b"the unit now")
    dock = Dock("dock-1", seed=b"dock-1", unit=old_unit)  # the vault holds this certificate
    with Vault.open(tmp_path / "vault") as vault:
        vault.enroll(DEVICE, chain.public_key, by="test")
        commit_n(vault, chain, 1)
        kept = keep_checkpoint(vault, tmp_path / "kept.note", dock)
        assert vault.verify(checkpoints=[kept], unit_key=unit.public_key,
                            dock_certs=[unit.certify(dock)]) == []
