"""Vault verification (host_agent/vault/verify.py), one rule per test: what it says of a
rolled-back log, a checkpoint note too large to be one, a stored record whose signature no
longer verifies, and, word for word, of log entries, checkpoints rows, quarantine entries and
facts edited behind the vault's back. Real files, real SQLite, real Ed25519."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from host_agent.vault import Vault, VaultError, log
from host_agent.vault import checkpoint as notes
from protocol import authority, cbor, manifest
from tests.factories import RecordChain, enrolled_vault
from tests.unit.test_checkpoint import Dock
from tests.unit.test_vault import commit_n, flip_byte, hostile, keep_checkpoint, triggers_dropped

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


# -- what verify says, word for word, of rows and log entries edited by hand -------------------


@pytest.fixture
def chain() -> RecordChain:
    return RecordChain(DEVICE, seed=b"vault rules")


@pytest.fixture
def vault(tmp_path: Path, chain: RecordChain):
    with enrolled_vault(tmp_path, chain) as v:
        yield v


def log_rows(vault: Vault) -> list[tuple[int, str, str, bytes, bytes]]:
    return vault.db.execute("SELECT idx, kind, ref, entry, leaf FROM log ORDER BY idx").fetchall()


def rewrite_log(vault: Vault, rows: list[tuple[int, str, str, bytes, bytes]]) -> None:
    """Replace the whole log with `rows`, behind the vault's back (triggers put back after)."""
    with triggers_dropped(vault, "log") as db:
        db.execute("DELETE FROM log")
        db.executemany("INSERT INTO log(idx, kind, ref, entry, leaf) VALUES (?, ?, ?, ?, ?)",
                       rows)


def details(problems: list, code: str) -> list[str]:
    return [p.detail for p in problems if p.code == code]


def test_a_log_entry_removed_from_the_middle_is_named_by_its_index(
        vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 2)
    vault.log_docking({"device_id": DEVICE})
    rows = log_rows(vault)
    assert [r[1] for r in rows] == ["vault", "enrolment", "record", "record", "docking"]
    rewrite_log(vault, rows[:3] + rows[4:])  # record 2's entry, at index 3, is gone
    assert details(vault.verify(), "log_gap") == [
        "log entries 3..3 are missing: removed from the log"]


def test_a_log_entry_missing_a_field_names_that_field(vault: Vault) -> None:
    vault.log_docking({"device_id": DEVICE})
    rows = log_rows(vault)
    idx, kind, ref, entry, _ = rows[-1]
    assert ref == "dockings/1"
    fields = cbor.decode(bytes(entry))
    del fields["report"]
    shorter = bytes(cbor.encode(fields))
    rewrite_log(vault, rows[:-1] + [(idx, kind, ref, shorter, log.leaf_hash(shorter))])
    assert [(p.code, p.detail) for p in vault.verify()] == [
        ("log_mismatch", "docking report 1 differs from log entry 2 in report: altered after it"
         " was logged")]


def test_a_receipt_naming_the_index_just_past_the_log_is_an_invalid_fact(
        vault: Vault, chain: RecordChain) -> None:
    record, _, _ = commit_n(vault, chain, 1)[0]
    dock = Dock()
    past = vault.log_size()  # no entry there yet
    statement = authority.sign_statement(
        authority.receipt(DEVICE, 1, manifest.record_hash(record), "stored", past, dock.name),
        authority.key_id(dock.public_key), dock.sign)
    db = hostile(vault)  # no trigger to drop: inserting a fact is what the vault does too
    db.execute("INSERT INTO facts(kind, device_id, at, fields) VALUES ('receipt', ?, 'now', ?)",
               (DEVICE, cbor.encode({"statement": statement})))
    db.commit()
    db.close()
    assert details(vault.verify(), "fact_invalid") == [
        f"fact 1 (receipt): the receipt names log entry {past}, which the log does not hold"]


def test_the_report_warns_when_no_checkpoint_kept_outside_was_given(
        vault: Vault, tmp_path: Path) -> None:
    kept = keep_checkpoint(vault, tmp_path / "kept.note")
    warning = "no checkpoint kept outside the vault was given"
    assert warning in vault.verify_report().trust
    assert warning not in vault.verify_report(checkpoints=[kept]).trust


def test_the_vaults_own_checkpoints_are_marked_its_own_and_a_given_one_is_not(
        vault: Vault, chain: RecordChain, tmp_path: Path) -> None:
    commit_n(vault, chain, 1)
    kept = keep_checkpoint(vault, tmp_path / "kept.note")
    report = vault.verify_report(checkpoints=[kept])
    assert report.problems == []
    assert sorted((c.source, c.own) for c in report.checkpoints) == sorted([
        ("checkpoints table #1", True), ("the vault's checkpoint file", True),
        (str(kept), False)])


def test_hidden_files_in_a_witness_directory_are_not_read_as_checkpoints(
        vault: Vault, chain: RecordChain, tmp_path: Path) -> None:
    commit_n(vault, chain, 1)
    witness = tmp_path / "witness"
    witness.mkdir()
    keep_checkpoint(vault, witness / "latest")
    (witness / ".DS_Store").write_bytes(b"not a note\n")
    report = vault.verify_report(witness=[witness])
    assert report.problems == []
    assert [Path(c.source).name for c in report.checkpoints
            if c.source.startswith(str(witness))] == ["latest"]


def test_a_log_entry_for_a_table_verify_does_not_know_is_named_by_its_ref(
        vault: Vault) -> None:
    rows = log_rows(vault)
    entry = bytes(cbor.encode({"kind": "checkpoint", "id": 1}))
    rewrite_log(vault, rows + [(len(rows), "checkpoint", "checkpoints/1", entry,
                                log.leaf_hash(entry))])
    assert [(p.code, p.detail) for p in vault.verify()] == [
        ("log_orphan", f"log entry {len(rows)} stands for checkpoints/1, which the vault no"
         " longer holds: the row was removed")]


def test_a_unit_key_of_the_wrong_length_is_refused(vault: Vault) -> None:
    with pytest.raises(VaultError, match="32-byte Ed25519 public key"):
        vault.verify(unit_key=b"\x01" * 31)


def test_a_checkpoints_row_naming_another_key_than_its_note_is_a_mismatch(
        vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 1)
    vault.checkpoint(Dock("dock-1"))
    with triggers_dropped(vault, "checkpoints") as db:
        db.execute("UPDATE checkpoints SET key_name = 'dock-2'")  # size and root unchanged
    assert [(p.code, p.path, p.detail) for p in vault.verify()] == [
        ("checkpoint_mismatch", "vault.sqlite",
         "checkpoints table #1: its size, root or key name is not its note's")]


def test_a_checkpoints_row_whose_note_is_no_note_is_reported_malformed(
        vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 1)
    vault.checkpoint(Dock())
    with triggers_dropped(vault, "checkpoints") as db:
        db.execute("UPDATE checkpoints SET note = 'not a note'")
    [problem] = vault.verify()
    assert (problem.code, problem.path) == ("checkpoint_malformed", "vault.sqlite")
    assert problem.detail.startswith("checkpoints table #1: not a checkpoint note")


def test_a_malformed_checkpoints_row_does_not_stop_the_rows_after_it_being_checked(
        vault: Vault, chain: RecordChain) -> None:
    dock = Dock("dock-1")
    commit_n(vault, chain, 1)
    vault.checkpoint(dock)
    commit_n(vault, chain, 1)
    vault.checkpoint(dock)
    with triggers_dropped(vault, "checkpoints") as db:
        db.execute("UPDATE checkpoints SET note = 'not a note' WHERE id = 1")
        db.execute("UPDATE checkpoints SET key_name = 'dock-2' WHERE id = 2")
    assert sorted((p.code, p.detail[:22]) for p in vault.verify()) == [
        ("checkpoint_malformed", "checkpoints table #1: "),
        ("checkpoint_mismatch", "checkpoints table #2: ")]


def test_a_note_of_another_vault_does_not_stop_the_notes_after_it_being_checked(
        vault: Vault, tmp_path: Path) -> None:
    foreign, junk = tmp_path / "foreign.note", tmp_path / "junk.note"
    with Vault.open(tmp_path / "other") as other:
        foreign.write_bytes(other.checkpoint(Dock()))
    junk.write_bytes(b"not a note\n")
    assert [(p.code, p.path) for p in vault.verify(checkpoints=[foreign, junk])] == [
        ("checkpoint_origin", str(foreign)), ("checkpoint_malformed", str(junk))]


def quarantine_paths(vault: Vault) -> list[str]:
    """Each quarantine entry's directory, relative to the vault (as verify names it)."""
    return [p for (p,) in vault.db.execute("SELECT path FROM quarantine ORDER BY id")]


def test_a_quarantine_entry_without_its_reason_does_not_stop_the_next_being_checked(
        vault: Vault) -> None:
    intake = vault.intake(DEVICE)
    assert [intake.offer(1, b"junk").status, intake.offer(1, b"other junk").status] == [
        "quarantined", "quarantined"]
    first, second = quarantine_paths(vault)
    (vault.root / first / "reason.json").unlink()
    flip_byte(vault.root / second / "record.cose")
    assert [(p.code, p.path) for p in vault.verify()] == [
        ("quarantine_missing", first), ("quarantine_altered", second)]


def test_a_quarantined_record_file_that_is_gone_is_reported_missing(vault: Vault) -> None:
    assert vault.intake(DEVICE).offer(1, b"junk").status == "quarantined"
    [entry] = quarantine_paths(vault)
    (vault.root / entry / "record.cose").unlink()
    assert [(p.code, p.path, p.detail) for p in vault.verify()] == [
        ("quarantine_missing", entry, "record.cose is missing")]


def test_a_row_holding_a_value_no_log_entry_can_hold_is_reported(vault: Vault) -> None:
    assert vault.intake(DEVICE).offer(1, b"junk").status == "quarantined"
    with triggers_dropped(vault, "quarantine") as db:
        db.execute("UPDATE quarantine SET seq = 1.5")  # INTEGER affinity keeps a REAL
    assert [(p.code, p.detail.split(":")[0]) for p in vault.verify()] == [
        ("log_mismatch", "quarantine entry 1 holds a value no log entry can")]


def test_a_corrupt_database_is_reported_with_its_first_five_errors(vault: Vault) -> None:
    db = hostile(vault)
    db.execute("PRAGMA ignore_check_constraints = ON")
    for _ in range(6):
        db.execute("INSERT INTO dockings(device_id, at, report) VALUES (?, 'now', 'no json')",
                   (DEVICE,))
    db.commit()
    db.close()
    assert len(vault.db.execute("PRAGMA integrity_check").fetchall()) == 6
    assert details(vault.verify(), "db_corrupt") == [
        "; ".join(["CHECK constraint failed in dockings"] * 5)]


def logged_out_of_order(vault: Vault, chain: RecordChain) -> None:
    """Three records, their log entries swapped behind the vault's back: record 3's entry
    where record 1's was (index 2), record 1's where record 3's was (index 4)."""
    commit_n(vault, chain, 3)
    rows = log_rows(vault)
    assert [r[2] for r in rows[2:]] == [f"records/{DEVICE}/{n}" for n in (1, 2, 3)]
    one, three = rows[2], rows[4]
    rewrite_log(vault, rows[:2] + [(2, *three[1:]), rows[3], (4, *one[1:])])


def test_records_logged_out_of_order_are_named_with_their_entries(
        vault: Vault, chain: RecordChain) -> None:
    logged_out_of_order(vault, chain)
    assert details(vault.verify(), "log_order")[:2] == [
        f"record 2 of {DEVICE} is logged (entry 3) after record 3 (entry 2)",
        f"record 1 of {DEVICE} is logged (entry 4) after record 2 (entry 3)"]


def test_a_newest_record_not_logged_last_is_named_with_the_last_one_logged(
        vault: Vault, chain: RecordChain) -> None:
    logged_out_of_order(vault, chain)
    assert details(vault.verify(), "log_order")[2:] == [
        f"the newest record of {DEVICE} is 3, but the last one logged is 1"]
