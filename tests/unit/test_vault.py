"""Tests for host_agent.vault's storage and verification: real files, real SQLite, real Ed25519.

What the ingest step decides for each record is tested in test_ingest.py; here records go in
through it (`Intake.offer`) and the tests look at what the vault then holds and proves.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_agent.vault import Problem, Vault, VaultError, ledger, log, schema
from host_agent.vault import checkpoint as notes
from host_agent.vault import store as vault_mod
from protocol import manifest
from tests.factories import RecordChain
from tests.unit.test_checkpoint import Dock, Unit

DEVICE = "SIM-1234"


@pytest.fixture
def chain() -> RecordChain:
    return RecordChain(DEVICE, seed=b"test-device")


@pytest.fixture
def vault(tmp_path: Path, chain: RecordChain):
    v = Vault.open(tmp_path / "vault")
    assert v.enroll(DEVICE, chain.public_key, by="test officer")
    yield v
    v.close()


def ingest(vault: Vault, record: bytes, fields: dict, data: bytes) -> bytes:
    """What the dock does: the ingest step with the data received; returns the receipt."""
    outcome = vault.intake(fields["device_id"]).offer(fields["seq"], record, data)
    assert outcome.status == "stored" and not outcome.code, outcome
    return outcome.receipt


def commit_n(vault: Vault, chain: RecordChain, n: int) -> list[tuple[bytes, dict, bytes]]:
    out = []
    for i in range(n):
        data = f"segment {chain.seq + 1} ".encode() * (100 + i)
        record, fields = chain.next_segment(data)
        assert ingest(vault, record, fields, data) == manifest.record_hash(record)
        out.append((record, fields, data))
    return out


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def flip_byte(path: Path, offset: int = 0) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def codes(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(p.code, p.path) for p in problems}


# ---------------------------------------------------------------------------------------------
# Opening


def test_open_create_false_refuses_non_vault(tmp_path: Path) -> None:
    with pytest.raises(VaultError):
        Vault.open(tmp_path / "nothing", create=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(VaultError, match="not empty"):
        Vault.open(tmp_path / "busy")
    with pytest.raises(VaultError, match="is a file"):
        Vault.open(tmp_path / "busy" / "file.txt")


def test_a_read_only_vault_is_refused_with_a_reason(tmp_path: Path) -> None:
    """A vault on a read-only mount (root: a tmpfs remounted ro; others: no write bits)."""
    root = tmp_path / "v"
    root.mkdir()
    mounted = False
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounted = True
    try:
        Vault.open(root).close()
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        else:
            (root / "vault.sqlite").chmod(0o444)
            root.chmod(0o555)
        with pytest.raises(VaultError, match="read-only"):
            Vault.open(root)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(root)], capture_output=True)
        else:
            root.chmod(0o755)


def test_remove_empty_takes_only_a_fresh_vault(tmp_path: Path, chain: RecordChain) -> None:
    Vault.open(tmp_path / "fresh").close()
    Vault.remove_empty(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    with Vault.open(tmp_path / "used") as v:
        v.enroll(DEVICE, chain.public_key, by="t")
    Vault.remove_empty(tmp_path / "used")
    assert (tmp_path / "used" / "vault.sqlite").exists()


def test_reopen_keeps_everything(tmp_path: Path, chain: RecordChain) -> None:
    with Vault.open(tmp_path / "v") as v:
        v.enroll(DEVICE, chain.public_key, by="a")
        commit_n(v, chain, 2)
    with Vault.open(tmp_path / "v", create=False) as v:
        assert v.head(DEVICE)[0] == 2
        assert v.verify() == []
        mode = v.db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        assert v.db.execute("SELECT value FROM meta WHERE key='layout'").fetchone()[0] == (
            schema.LAYOUT
        )


# ---------------------------------------------------------------------------------------------
# Storing


def test_three_segments_stored_byte_exact(vault: Vault, chain: RecordChain) -> None:
    assert vault.head(DEVICE) == (0, manifest.GENESIS)
    committed = commit_n(vault, chain, 3)
    last_record = committed[-1][0]
    assert vault.head(DEVICE) == (3, manifest.record_hash(last_record))

    for record, fields, data in committed:
        seq = fields["seq"]
        assert vault.stored_record_hash(DEVICE, seq) == manifest.record_hash(record)
        man = vault.root / "manifests" / DEVICE / f"{seq:08d}.cose"
        obj = vault.root / "objects" / fields["sha256"].hex()[:2] / fields["sha256"].hex()
        assert man.read_bytes() == record  # byte-exact
        assert obj.read_bytes() == data
        for p in (man, obj):
            assert stat.S_IMODE(p.stat().st_mode) == 0o444
    assert vault.stored_record_hash(DEVICE, 4) is None

    rows = vault.records(DEVICE)
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["prev"] == manifest.GENESIS
    assert rows[1]["prev"] == manifest.record_hash(committed[0][0])
    assert rows[2]["segment_sha256"] == committed[2][1]["sha256"]
    assert rows[2]["size"] == len(committed[2][2])
    assert rows[0]["tracks"] == ["audio", "video"]
    assert rows[0]["truncated"] is False
    assert rows[0]["clock_state"] == "synced"
    assert rows[0]["policy"] == manifest.DEFAULT_POLICY
    assert rows[0]["data_state"] == "stored" and rows[0]["chain_break"] is None
    assert list(vault.root.joinpath("tmp").iterdir()) == []

    progress: list[tuple[int, int]] = []
    assert vault.verify(progress=lambda done, total: progress.append((done, total))) == []
    assert progress == [(1, 3), (2, 3), (3, 3)]


def test_identical_segment_data_stored_once(vault: Vault, chain: RecordChain) -> None:
    data = b"same bytes"
    for _ in range(2):
        record, fields = chain.next_segment(data)
        ingest(vault, record, fields, data)
    assert len(files_under(vault.root / "objects")) == 1
    assert vault.verify() == []


def test_an_unenrolled_device_has_no_intake(vault: Vault) -> None:
    with pytest.raises(VaultError, match="not enrolled"):
        vault.intake("SIM-9999")


def test_interrupted_store_is_retried_cleanly(
    vault: Vault, chain: RecordChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files placed, then the process dies before the index row: a retry completes it."""
    record, fields = chain.next_segment(b"data")

    def die(*args: object) -> None:
        raise OSError("power lost")

    monkeypatch.setattr(Vault, "_insert_record", die)
    with pytest.raises(OSError):
        vault.intake(DEVICE).offer(1, record, b"data")
    assert vault.head(DEVICE)[0] == 0
    assert {p.code for p in vault.verify()} == {"unindexed"}  # leftover files are reported

    monkeypatch.undo()
    assert ingest(vault, record, fields, b"data") == manifest.record_hash(record)
    assert vault.verify() == []


# ---------------------------------------------------------------------------------------------
# Enrollment


def test_enroll_idempotent_and_never_replaces(vault: Vault, chain: RecordChain) -> None:
    assert vault.enroll(DEVICE, chain.public_key, by="someone else") is False
    assert vault.public_key(DEVICE) == chain.public_key
    with pytest.raises(VaultError, match="refusing"):
        vault.enroll(DEVICE, RecordChain(DEVICE).public_key, by="attacker")
    assert vault.public_key(DEVICE) == chain.public_key
    assert vault.public_key("SIM-0000") is None
    [dev] = vault.devices()
    assert dev["device_id"] == DEVICE
    assert dev["enrolled_by"] == "test officer"
    assert isinstance(dev["enrolled_at"], str) and dev["enrolled_at"].endswith("Z")


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "x" * 65])
def test_enroll_refuses_unsafe_device_id(vault: Vault, chain: RecordChain, bad: str) -> None:
    with pytest.raises(VaultError):
        vault.enroll(bad, chain.public_key, by="x")


# ---------------------------------------------------------------------------------------------
# Append-only in the database


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE records SET size = 0",
        "DELETE FROM records",
        "UPDATE devices SET public_key = x'00'",
        "DELETE FROM devices",
        "DELETE FROM quarantine",
        "UPDATE dockings SET report = '{}'",
        "DELETE FROM dockings",
    ],
)
def test_append_only_enforced_by_database(vault: Vault, chain: RecordChain, sql: str) -> None:
    commit_n(vault, chain, 1)
    assert vault.intake(DEVICE).offer(2, b"junk").status == "quarantined"
    vault.log_docking({"device_id": DEVICE, "ok": True})
    # a separate, plain connection, as anyone with the file would use
    db = sqlite3.connect(vault.root / "vault.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute(sql)
    db.close()


def test_insert_or_replace_cannot_overwrite(vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 1)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        vault.db.execute(
            "INSERT OR REPLACE INTO records(device_id, seq, kind, record_sha256, prev, policy,"
            " stored_at) VALUES (?, 1, 'segment', x'00', x'00', 'p', 't')",
            (DEVICE,),
        )


def test_dropped_trigger_is_reported(vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 1)
    vault.db.execute("DROP TRIGGER records_no_delete")
    assert codes(vault.verify()) == {("schema_altered", "vault.sqlite")}


# ---------------------------------------------------------------------------------------------
# Tamper evidence


def test_flipped_object_byte_is_found(vault: Vault, chain: RecordChain) -> None:
    committed = commit_n(vault, chain, 3)
    sha = committed[1][1]["sha256"].hex()
    obj = vault.root / "objects" / sha[:2] / sha
    flip_byte(obj, 5)
    problems = vault.verify()
    assert len(problems) == 1
    [p] = problems
    assert p.code == "hash_mismatch"
    assert p.path == f"objects/{sha[:2]}/{sha}"
    assert "segment 2 of SIM-1234" in p.detail


def test_flipped_manifest_byte_is_found(vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 3)
    man = vault.root / "manifests" / DEVICE / "00000002.cose"
    flip_byte(man, len(man.read_bytes()) - 1)  # inside the signature
    problems = vault.verify()
    assert problems
    assert {p.path for p in problems} == {f"manifests/{DEVICE}/00000002.cose"}
    assert "record_mismatch" in {p.code for p in problems}


def test_deleted_manifest_is_found(vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 3)
    man = vault.root / "manifests" / DEVICE / "00000001.cose"
    man.unlink()
    assert codes(vault.verify()) == {("manifest_missing", f"manifests/{DEVICE}/00000001.cose")}


def test_deleted_object_is_found(vault: Vault, chain: RecordChain) -> None:
    committed = commit_n(vault, chain, 2)
    sha = committed[0][1]["sha256"].hex()
    (vault.root / "objects" / sha[:2] / sha).unlink()
    assert codes(vault.verify()) == {("object_missing", f"objects/{sha[:2]}/{sha}")}


def test_stray_files_are_found(vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 1)
    (vault.root / "manifests" / DEVICE / "00000002.cose").write_bytes(b"stray")
    stray_obj = vault.root / "objects" / "ff" / ("ff" * 32)
    stray_obj.parent.mkdir(exist_ok=True)
    stray_obj.write_bytes(b"stray")
    assert codes(vault.verify()) == {
        ("unindexed", f"manifests/{DEVICE}/00000002.cose"),
        ("unindexed", f"objects/ff/{'ff' * 32}"),
    }


def test_replaced_record_signed_by_other_key_is_found(vault: Vault, chain: RecordChain) -> None:
    """Swap in a record with the same chain position but a foreign key: caught as unknown_key."""
    commit_n(vault, chain, 1)
    impostor = RecordChain(DEVICE)
    record, _ = impostor.next_segment(b"fake")
    man = vault.root / "manifests" / DEVICE / "00000001.cose"
    man.chmod(0o644)
    man.write_bytes(record)
    found = {p.code for p in vault.verify()}
    assert {"record_mismatch", "unknown_key"} <= found


# ---------------------------------------------------------------------------------------------
# Quarantine and docking log


def test_quarantine_keeps_bytes_and_is_listed(vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 2)
    stranger = RecordChain(DEVICE)  # another key claims to be this recorder
    record, _ = stranger.next_segment(b"good data")
    outcome = vault.intake(DEVICE).offer(3, record, b"bad data!")
    assert outcome.status == "quarantined" and outcome.code == "unknown_key"
    qdir = vault.root / outcome.path
    assert qdir.parent == vault.root / "quarantine"
    assert (qdir / "record.cose").read_bytes() == record
    assert (qdir / "segment.bin").read_bytes() == b"bad data!"
    reason = json.loads((qdir / "reason.json").read_text())
    assert reason["code"] == "unknown_key"
    assert reason["seq"] == 3
    assert reason["record_sha256"] == manifest.record_hash(record).hex()
    [row] = vault.quarantined(DEVICE)
    assert row["code"] == "unknown_key" and row["complete"] == 1
    assert row["path"] == qdir.relative_to(vault.root).as_posix()
    # not evidence: head unchanged, vault still verifies clean
    assert vault.head(DEVICE)[0] == 2
    assert vault.verify() == []
    assert list((vault.root / "tmp").iterdir()) == []


def test_altered_quarantine_is_found(vault: Vault, chain: RecordChain) -> None:
    record, _ = RecordChain(DEVICE).next_segment(b"x")
    outcome = vault.intake(DEVICE).offer(1, record, b"some bytes")
    seg = vault.root / outcome.path / "segment.bin"
    flip_byte(seg)
    assert codes(vault.verify()) == {("quarantine_altered", outcome.path)}


def test_docking_log(vault: Vault) -> None:
    a = vault.log_docking({"device_id": DEVICE, "offloaded": 3, "receipt": b"\x01\x02"})
    b = vault.log_docking({"device_id": "SIM-2", "offloaded": 0})
    assert b > a
    rows = vault.dockings(DEVICE)
    assert len(rows) == 1
    assert rows[0]["report"] == {"device_id": DEVICE, "offloaded": 3, "receipt": "0102"}
    assert len(vault.dockings()) == 2


# ---------------------------------------------------------------------------------------------
# Crash safety


def test_incoming_without_commit_leaves_nothing(vault: Vault, chain: RecordChain) -> None:
    record, fields = chain.next_segment(b"abc")
    with pytest.raises(RuntimeError), vault.incoming() as inc:
        inc.write(b"ab")
        assert inc.path.exists()
        raise RuntimeError("link dropped")
    assert not inc.path.exists()
    assert list((vault.root / "tmp").iterdir()) == []
    assert files_under(vault.root / "objects") == []
    assert vault.records(DEVICE) == []
    assert vault.verify() == []
    with pytest.raises(VaultError):
        inc.write(b"c")


def test_stale_tmp_removed_at_open(tmp_path: Path) -> None:
    with Vault.open(tmp_path / "v") as v:
        stale = v.root / "tmp" / "dead.part"
        fresh = v.root / "tmp" / "live.part"
        stale.write_bytes(b"x")
        fresh.write_bytes(b"y")
        old = stale.stat().st_mtime - vault_mod.STALE_TMP_S - 10
        os.utime(stale, (old, old))
    with Vault.open(tmp_path / "v") as v:
        assert not stale.exists()
        assert fresh.exists()


def test_closed_vault_refuses(tmp_path: Path) -> None:
    v = Vault.open(tmp_path / "v")
    v.close()
    with pytest.raises(VaultError):
        v.head(DEVICE)


# ---------------------------------------------------------------------------------------------
# The log and checkpoints: the hostile operator, with sqlite3 and the shell, against a
# checkpoint taken before the tampering and kept outside the vault


def hostile(vault: Vault) -> sqlite3.Connection:
    """A plain connection, default pragmas (foreign keys and recursive_triggers off)."""
    return sqlite3.connect(vault.root / "vault.sqlite")


@contextlib.contextmanager
def triggers_dropped(vault: Vault, *tables: str) -> Iterator[sqlite3.Connection]:
    """Drop the tables' triggers, let the caller do its work, then recreate every trigger
    with its original SQL (as sqlite_master held it): the schema looks untouched."""
    db = hostile(vault)
    marks = ",".join("?" * len(tables))
    saved = db.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND"
                       f" tbl_name IN ({marks})", tables).fetchall()
    assert saved
    for name, _ in saved:
        db.execute(f"DROP TRIGGER {name}")
    yield db
    for _, sql in saved:
        db.execute(sql)
    db.commit()
    db.close()


def keep_checkpoint(vault: Vault, where: Path, dock: Dock | None = None) -> Path:
    """A checkpoint signed now, kept outside the vault (a witness's copy)."""
    where.write_bytes(vault.checkpoint(dock or Dock()))
    return where


def event_record(chain: RecordChain, case: str) -> tuple[bytes, dict]:
    """The next record of the chain: a phase event naming a case."""
    fields = {"v": manifest.FORMAT_VERSION, "kind": manifest.KIND_EVENT, "device_id": DEVICE,
              "seq": chain.seq + 1, "prev": chain.prev, "policy": manifest.DEFAULT_POLICY,
              "fw": "0.1.0", "t": chain.t_us, "clock": {"state": "synced"},
              "event": "phase_started", "detail": {},
              "phase": {"row": 4, "case": case, "officer": "OFFICER-7"}}
    record = chain.sign(fields)
    chain.seq, chain.prev = fields["seq"], manifest.record_hash(record)
    return record, fields


def test_every_append_is_logged_in_its_own_transaction(vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 2)
    vault.intake(DEVICE).offer(3, b"junk")
    vault.log_docking({"device_id": DEVICE})
    kinds = [k for (k,) in vault.db.execute("SELECT kind FROM log ORDER BY idx")]
    assert kinds == ["vault", "enrolment", "record", "record", "quarantine", "docking"]
    assert vault.log_index(f"records/{DEVICE}/2") == 3
    assert vault.log_size() == 6
    entry = vault.log_entry(3)
    assert entry is not None
    assert (entry["kind"], entry["device_id"], entry["seq"], entry["data_state"]) == (
        "record", DEVICE, 2, "stored")
    assert entry["record_sha256"] == vault.stored_record_hash(DEVICE, 2)
    root = vault.log_root()
    for i in range(6):
        leaf = log.leaf_hash(bytes(vault.db.execute(
            "SELECT entry FROM log WHERE idx = ?", (i,)).fetchone()[0]))
        assert log.verify_inclusion(leaf, i, 6, vault.inclusion_proof(i), root)
    assert log.verify_consistency(4, 6, vault.log_root(4), root, vault.consistency_proof(4))


def test_a_failed_store_logs_nothing(vault: Vault, chain: RecordChain,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The row and its entry share one transaction: a store that fails leaves neither."""
    before = vault.log_size()
    record, _ = chain.next_segment(b"data")

    def die(*args: object) -> None:
        raise OSError("power lost")

    monkeypatch.setattr(ledger, "append_log", die)
    with pytest.raises(OSError):
        vault.intake(DEVICE).offer(1, record, b"data")
    assert vault.log_size() == before and vault.records(DEVICE) == []


@pytest.mark.parametrize("kind", ["segment", "event"])
def test_cutting_the_newest_record_is_reported(vault: Vault, chain: RecordChain,
                                               tmp_path: Path, kind: str) -> None:
    """The newest record cut off the end with everything that names it: its records and
    events rows, its log entries and every later one, the vault's own checkpoints and dock
    rows, its manifest and its object. Only a checkpoint kept elsewhere still tells."""
    unit = Unit()
    dock = Dock("dock-1", unit=unit)
    commit_n(vault, chain, 2)
    if kind == "segment":
        record, fields, data = commit_n(vault, chain, 1)[0]
    else:
        record, fields = event_record(chain, "CASE-1")
        assert vault.intake(DEVICE).offer(3, record).status == "stored"
    kept = keep_checkpoint(vault, tmp_path / "kept.note", dock)
    cut_from = vault.log_index(f"records/{DEVICE}/3")
    assert cut_from is not None
    with triggers_dropped(vault, "records", "events", "log", "checkpoints", "docks") as db:
        db.execute("DELETE FROM events WHERE seq = 3")
        db.execute("DELETE FROM records WHERE seq = 3")
        db.execute("DELETE FROM log WHERE idx >= ?", (cut_from,))
        db.execute("DELETE FROM checkpoints")
        db.execute("DELETE FROM docks")
    (vault.root / "checkpoint").unlink()
    vault.manifest_path(DEVICE, 3).unlink()
    if kind == "segment":
        vault.object_path(fields["sha256"]).unlink()

    assert vault.verify() == []  # the vault agrees with itself: nothing inside it tells
    # the dock's certificate went with the docks table: the unit key alone cannot vouch ...
    problems = vault.verify(checkpoints=[kept], unit_key=unit.public_key)
    assert [(p.code, p.path) for p in problems] == [("checkpoint_untrusted", str(kept))]
    # ... the certificate kept elsewhere (the dock has it) can
    problems = vault.verify(checkpoints=[kept], unit_key=unit.public_key,
                            dock_certs=[dock.cert])
    assert [(p.code, p.path) for p in problems] == [("log_truncated", str(kept))]
    assert "were cut, or the vault was rolled back" in problems[0].detail


def test_cutting_a_record_but_not_its_log_entry_is_reported(vault: Vault, chain: RecordChain,
                                                            tmp_path: Path) -> None:
    _, fields, _ = commit_n(vault, chain, 3)[-1]
    kept = keep_checkpoint(vault, tmp_path / "kept.note")
    with triggers_dropped(vault, "records") as db:
        db.execute("DELETE FROM records WHERE seq = 3")
    vault.manifest_path(DEVICE, 3).unlink()
    vault.object_path(fields["sha256"]).unlink()
    problems = vault.verify(checkpoints=[kept])
    assert codes(problems) == {("log_orphan", "vault.sqlite")}
    assert f"record 3 of {DEVICE}" in problems[0].detail and "removed" in problems[0].detail


def test_rolling_the_vault_back_to_an_older_copy_is_reported(tmp_path: Path,
                                                             chain: RecordChain) -> None:
    root, old = tmp_path / "vault", tmp_path / "copy-after-2"
    dock = Dock()
    with Vault.open(root) as vault:
        vault.enroll(DEVICE, chain.public_key, by="test officer")
        commit_n(vault, chain, 2)
        vault.checkpoint(dock)
    shutil.copytree(root, old)  # the operator's copy of the whole directory
    with Vault.open(root) as vault:
        commit_n(vault, chain, 2)
        kept = keep_checkpoint(vault, tmp_path / "kept.note", dock)
    shutil.rmtree(root)
    shutil.copytree(old, root)  # ... put back later
    with Vault.open(root, create=False) as vault:
        assert vault.verify() == []  # a good vault of 2 records, as far as it can tell
        problems = vault.verify(checkpoints=[kept])
        assert [(p.code, p.path) for p in problems] == [("log_truncated", str(kept))]
        # rolled back, then used again until longer than the checkpoint: another log
        for _ in range(4):
            vault.log_docking({"device_id": DEVICE, "note": "business as usual"})
        assert vault.log_size() > notes.parse(kept.read_bytes()).size
        problems = vault.verify(checkpoints=[kept])
        assert [(p.code, p.path) for p in problems] == [("checkpoint_inconsistent", str(kept))]


def test_editing_signed_columns_is_reported(vault: Vault, chain: RecordChain,
                                            tmp_path: Path) -> None:
    commit_n(vault, chain, 2)
    record, _ = event_record(chain, "CASE-2024-17")
    assert vault.intake(DEVICE).offer(3, record).status == "stored"
    kept = keep_checkpoint(vault, tmp_path / "kept.note")
    with triggers_dropped(vault, "records", "events") as db:
        db.execute("UPDATE records SET t_start = t_start + 60000000, truncated = 1,"
                   " policy = 'lenient/9', tracks = '[\"video\"]' WHERE seq = 1")
        db.execute("UPDATE events SET case_no = 'CASE-OTHER' WHERE seq = 3")
    problems = vault.verify(checkpoints=[kept])
    assert {p.code for p in problems} == {"index_mismatch"}  # schema looks untouched
    text = " | ".join(p.detail for p in problems)
    for column in ("t_start", "truncated", "policy", "tracks"):
        assert f"record 1 of {DEVICE}: column {column} differs from the signed record" in text
    assert f"record 3 of {DEVICE}: events column case_no differs" in text


@pytest.mark.parametrize(("table", "sql", "named"), [
    ("records", "UPDATE records SET stored_at = '2020-01-01T00:00:00.000000Z' WHERE seq = 2",
     f"record 2 of {DEVICE} differs from log entry 3 in stored_at"),
    ("records", "UPDATE records SET chain_break = 'records 1..1 are not in this vault'"
     " WHERE seq = 2", f"record 2 of {DEVICE} differs from log entry 3 in chain_break"),
    ("quarantine", "UPDATE quarantine SET detail = 'nothing to see'",
     "quarantine entry 1 differs from log entry 4 in detail"),
    ("devices", "UPDATE devices SET enrolled_by = 'somebody else'",
     f"the enrolment of {DEVICE} differs from log entry 1 in enrolled_by"),
])
def test_editing_unsigned_columns_is_reported(vault: Vault, chain: RecordChain, tmp_path: Path,
                                              table: str, sql: str, named: str) -> None:
    commit_n(vault, chain, 2)
    assert vault.intake(DEVICE).offer(3, b"junk").status == "quarantined"
    kept = keep_checkpoint(vault, tmp_path / "kept.note")
    with triggers_dropped(vault, table) as db:
        db.execute(sql)
    problems = vault.verify(checkpoints=[kept])
    assert [(p.code, p.detail) for p in problems] == [
        ("log_mismatch", named + ": altered after it was logged")]


def test_editing_a_row_and_rehashing_its_log_entry_is_reported(
        vault: Vault, chain: RecordChain, tmp_path: Path) -> None:
    """The thorough operator rewrites the log entry and its leaf to match the edited row: the
    vault agrees with itself again, but no longer with any checkpoint signed before."""
    commit_n(vault, chain, 2)
    kept = keep_checkpoint(vault, tmp_path / "kept.note")
    with triggers_dropped(vault, "records", "log") as db:
        db.execute("UPDATE records SET stored_at = '2020-01-01T00:00:00.000000Z' WHERE seq = 1")
        cur = db.execute("SELECT * FROM records WHERE seq = 1")
        row = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))
        entry = schema.log_entry("records", row)
        db.execute("UPDATE log SET entry = ?, leaf = ? WHERE ref = ?",
                   (entry, log.leaf_hash(entry), f"records/{DEVICE}/1"))
    problems = vault.verify(checkpoints=[kept])
    assert {(p.code, p.path) for p in problems} == {
        ("checkpoint_inconsistent", str(kept)),  # the copy kept elsewhere
        ("checkpoint_inconsistent", "vault.sqlite"),  # the vault's own, as it happens
        ("checkpoint_inconsistent", "checkpoint"),
    }


def test_a_row_added_outside_the_vault_is_reported(vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 1)
    db = hostile(vault)  # no trigger to drop: a plain INSERT is what the vault does too
    db.execute("INSERT INTO dockings(device_id, at, report) VALUES (?, 'now', '{}')", (DEVICE,))
    db.execute("INSERT INTO devices(device_id, public_key, key_id, enrolled_at, enrolled_by)"
               " VALUES ('SIM-EVIL', ?, ?, 'now', 'nobody')",
               (b"\x07" * 32, vault_mod.evidence.key_id(b"\x07" * 32)))
    db.commit()
    db.close()
    assert [(p.code, p.detail.split(" has")[0]) for p in vault.verify()] == [
        ("log_missing", "the enrolment of SIM-EVIL"), ("log_missing", "docking report 1")]


def test_another_vault_id_is_reported(vault: Vault) -> None:
    db = hostile(vault)
    db.execute("UPDATE meta SET value = 'f00d' WHERE key = 'vault_id'")
    db.commit()
    db.close()
    assert [(p.code, p.detail[:27]) for p in vault.verify()] == [
        ("log_mismatch", "the vault's identity (meta)")]


@pytest.mark.parametrize("sql", [
    "INSERT OR REPLACE INTO devices(device_id, public_key, key_id, enrolled_at, enrolled_by)"
    " VALUES (:device, :key, :kid, 'now', 'attacker')",  # same id, the attacker's key
    "INSERT OR REPLACE INTO devices(device_id, public_key, key_id, enrolled_at, enrolled_by)"
    " VALUES ('SIM-NEW', :enrolled, :enrolled_kid, 'now', 'attacker')",  # the key, another id
    "REPLACE INTO records(device_id, seq, kind, record_sha256, prev, policy, stored_at)"
    " VALUES (:device, 1, 'segment', x'00', x'00', 'p', 't')",
    "INSERT OR REPLACE INTO quarantine(id, complete, code, detail, path, at)"
    " VALUES (1, 1, 'x', 'x', 'x', 'x')",
    "INSERT OR REPLACE INTO log(idx, kind, ref, entry, leaf) VALUES (1, 'x', 'x', x'00', :leaf)",
])
def test_insert_or_replace_replaces_nothing_from_a_plain_connection(
        vault: Vault, chain: RecordChain, sql: str) -> None:
    commit_n(vault, chain, 1)
    vault.intake(DEVICE).offer(2, b"junk")
    attacker = RecordChain(DEVICE).public_key
    db = hostile(vault)
    assert db.execute("PRAGMA recursive_triggers").fetchone()[0] == 0
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute(sql, {"device": DEVICE, "key": attacker,
                         "kid": vault_mod.evidence.key_id(attacker),
                         "enrolled": chain.public_key,
                         "enrolled_kid": vault_mod.evidence.key_id(chain.public_key),
                         "leaf": b"\x00" * 32})
    db.close()
    assert vault.public_key(DEVICE) == chain.public_key
    assert vault.verify() == []


def test_the_log_tables_are_append_only(vault: Vault, chain: RecordChain) -> None:
    commit_n(vault, chain, 1)
    vault.checkpoint(Dock())
    db = hostile(vault)
    for sql in ("DELETE FROM log", "UPDATE log SET entry = x'00'", "DELETE FROM checkpoints",
                "UPDATE docks SET cert = x'00'",
                "INSERT INTO log(idx, kind, ref, entry, leaf)"
                " VALUES (99, 'x', 'y', x'00', zeroblob(32))"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    db.close()


def test_a_dropped_log_table_is_reported_not_a_traceback(vault: Vault, chain: RecordChain,
                                                         tmp_path: Path) -> None:
    commit_n(vault, chain, 1)
    kept = keep_checkpoint(vault, tmp_path / "kept.note")
    db = hostile(vault)
    db.execute("DROP TABLE log")
    db.commit()
    db.close()
    found = {(p.code, p.detail.split(":")[0]) for p in vault.verify(checkpoints=[kept])}
    assert ("schema_altered", "table log is missing") in found
    assert ("db_corrupt", "cannot check the log") in found
    assert ("log_truncated", str(kept)) in found
    with pytest.raises(VaultError, match="cannot sign a checkpoint"):
        vault.checkpoint(Dock())
