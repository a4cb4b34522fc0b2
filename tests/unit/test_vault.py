"""Tests for host_agent.vault's storage and verification: real files, real SQLite, real Ed25519.

What the ingest step decides for each record is tested in test_ingest.py; here records go in
through it (`Intake.offer`) and the tests look at what the vault then holds and proves.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from host_agent.vault import Problem, Vault, VaultError, schema
from host_agent.vault import store as vault_mod
from protocol import manifest
from tests.factories import RecordChain

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
