"""Checkpoints (host_agent/vault/checkpoint.py and Vault.checkpoint): the C2SP signed-note
format, checked by hand and against Go's sumdb/note, and who may sign a vault's checkpoint.

Real Ed25519 keys (`cryptography`), real vaults; a dock is a key with a name and, when the
unit certified it, a real unit-signed certificate (protocol/authority.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from host_agent.vault import Vault, VaultError, log, schema
from host_agent.vault import checkpoint as notes
from protocol import authority
from tests.factories import RecordChain, enrolled_vault
from tests.micropython_runner import REPO

DEVICE = "SIM-CP"
T0_US = 1_700_000_000_000_000
YEAR_US = 365 * 24 * 3600 * 1_000_000


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class Unit:
    """The unit's signing key: it certifies docks (protocol.authority.issue_cert)."""

    def __init__(self, seed: bytes = b"unit") -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
        self.public_key = raw_public(self.key)

    def certify(self, dock: Dock) -> bytes:
        return authority.issue_cert(dock.name, dock.public_key, T0_US, T0_US + YEAR_US,
                                    ["offload"], "test unit", authority.key_id(self.public_key),
                                    self.key.sign)


class Dock:
    """A dock's identity as `Vault.checkpoint` takes it: name, public_key, sign, maybe cert."""

    def __init__(self, name: str = "dock-1", seed: bytes | None = None,
                 unit: Unit | None = None) -> None:
        self.name = name
        self._key = (Ed25519PrivateKey.generate() if seed is None else
                     Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest()))
        self.public_key = raw_public(self._key)
        if unit is not None:
            self.cert = unit.certify(self)

    def sign(self, msg: bytes) -> bytes:
        return self._key.sign(msg)


@pytest.fixture
def chain() -> RecordChain:
    return RecordChain(DEVICE, seed=b"checkpoint")


@pytest.fixture
def vault(tmp_path: Path, chain: RecordChain):
    with enrolled_vault(tmp_path, chain) as v:
        yield v


def store(vault: Vault, chain: RecordChain, n: int) -> None:
    for _ in range(n):
        data = f"segment {chain.seq + 1}".encode()
        record, fields = chain.next_segment(data)
        assert vault.intake(DEVICE).offer(fields["seq"], record, data).status == "stored"


def codes(problems: list) -> set[str]:
    return {p.code for p in problems}


# ---------------------------------------------------------------------------------------------
# The note format


def test_key_hash_is_the_spec_computation() -> None:
    dock = Dock("bodycam.dock/d1", seed=b"d1")
    want = hashlib.sha256(b"bodycam.dock/d1" + b"\x0a" + b"\x01" + dock.public_key).digest()[:4]
    assert notes.key_hash("bodycam.dock/d1", dock.public_key) == want


def test_go_sumdb_note_vector_is_reproduced_byte_for_byte() -> None:
    """golang.org/x/mod/sumdb/note's example key and note: another implementation's output."""
    seed = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")  # 0x01 || seed
    vkey = base64.b64decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")  # 0x01 || key
    text = (b"If you think cryptography is the answer to your problem,\n"
            b"then you don't know what your problem is.\n")
    want = text + ("\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1"
                   "FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n").encode()

    class Peter:
        name = "PeterNeumann"
        key = Ed25519PrivateKey.from_private_bytes(seed[1:])
        public_key = vkey[1:]

        def sign(self, msg: bytes) -> bytes:
            return self.key.sign(msg)

    assert notes.key_hash("PeterNeumann", vkey[1:]).hex() == "c74f20a3"
    assert notes.sign_text(text, Peter()) == want
    got_text, signatures = notes.parse_note(want)
    assert got_text == text
    assert notes.verify(got_text, signatures, "PeterNeumann", vkey[1:]) is True


def test_a_three_leaf_checkpoint_by_hand() -> None:
    """The test vector: three entries, the tree and the note worked out with hashlib/base64."""
    entries = [b"entry zero", b"entry one", b"entry two"]
    leaf = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
    root = hashlib.sha256(
        b"\x01" + hashlib.sha256(b"\x01" + leaf[0] + leaf[1]).digest() + leaf[2]).digest()
    assert log.root([log.leaf_hash(e) for e in entries]) == root

    dock = Dock("bodycam.dock/d1", seed=b"vector")
    origin = "bodycam.vault/0123456789abcdef0123456789abcdef"
    text = f"{origin}\n3\n{base64.b64encode(root).decode()}\n".encode()
    key_hash = hashlib.sha256(b"bodycam.dock/d1\n\x01" + dock.public_key).digest()[:4]
    signature = dock.sign(text)  # Ed25519 is deterministic: the same bytes every time
    want = text + b"\n" + "\u2014 bodycam.dock/d1 ".encode() + base64.b64encode(
        key_hash + signature) + b"\n"

    note = notes.sign(origin, 3, root, dock)
    assert note == want
    assert note.decode().splitlines()[:3] == [origin, "3", base64.b64encode(root).decode()]
    cp = notes.parse(note)
    assert (cp.origin, cp.size, cp.root, cp.extensions) == (origin, 3, root, ())
    assert cp.text == text
    assert [(s.name, s.key_hash, s.signature) for s in cp.signatures] == [
        ("bodycam.dock/d1", key_hash, signature)]
    assert notes.verify(cp.text, cp.signatures, dock.name, dock.public_key) is True
    assert notes.verify(cp.text, cp.signatures, dock.name, Dock().public_key) is None
    altered = notes.parse(note.replace(b"\n3\n", b"\n4\n"))
    assert notes.verify(altered.text, altered.signatures, dock.name, dock.public_key) is False


def test_extension_lines_and_more_signatures_round_trip() -> None:
    a, b = Dock("a.example/one", seed=b"a"), Dock("b.example/two", seed=b"b")
    text = b"origin.example/log\n0\n" + base64.b64encode(log.EMPTY_ROOT) + b"\nextension\n"
    first = notes.sign_text(text, a)
    second = notes.sign_text(text, b)
    both = first + second[len(text) + 1:]  # one text, two signature lines
    cp = notes.parse(both)
    assert (cp.size, cp.root, cp.extensions) == (0, log.EMPTY_ROOT, ("extension",))
    assert notes.verify(cp.text, cp.signatures, a.name, a.public_key) is True
    assert notes.verify(cp.text, cp.signatures, b.name, b.public_key) is True


@pytest.mark.parametrize(("note", "why"), [
    (b"o\n1\n" + base64.b64encode(b"r" * 32) + b"\n", "blank line"),
    (b"o\n01\n" + base64.b64encode(b"r" * 32) + b"\n\n\xe2\x80\x94 k AAAAAAA=\n",
     "leading zeros"),
    (b"o\n1\nnot base64!\n\n\xe2\x80\x94 k AAAAAAA=\n", "base64"),
    (b"o\n1\n" + base64.b64encode(b"r" * 31) + b"\n\n\xe2\x80\x94 k AAAAAAA=\n", "32 bytes"),
    (b"o\n1\n\n\xe2\x80\x94 k AAAAAAA=\n", "origin, size and root"),
    (b"o\n1\n" + base64.b64encode(b"r" * 32) + b"\n\n", "no signature"),
    (b"o\n1\n" + base64.b64encode(b"r" * 32) + b"\n\n- k AAAAAAA=\n", "em dash"),
    (b"o\n1\n" + base64.b64encode(b"r" * 32) + b"\n\n\xe2\x80\x94 k+x AAAAAAA=\n", "a '\\+'"),
    (b"o\n1\n" + base64.b64encode(b"r" * 32) + b"\n\n\xe2\x80\x94 k AAA=\n", "too short"),
    (b"o\x01\n1\n" + base64.b64encode(b"r" * 32) + b"\n\n\xe2\x80\x94 k AAAAAAA=\n", "control"),
    (b"\xff\n1\n", "UTF-8"),
    (b"o\n1\n" + base64.b64encode(b"r" * 32) + b"\n\n\xe2\x80\x94 k AAAAAAA=", "newline"),
])
def test_malformed_notes_are_refused_saying_why(note: bytes, why: str) -> None:
    with pytest.raises(notes.CheckpointError, match=why):
        notes.parse(note)


def test_a_signer_must_be_a_valid_ed25519_signer() -> None:
    with pytest.raises(notes.CheckpointError, match="space"):
        notes.sign("o", 0, log.EMPTY_ROOT, Dock("two words"))

    class Broken(Dock):
        def sign(self, msg: bytes) -> bytes:
            return bytes(64)

    with pytest.raises(notes.CheckpointError, match="does not verify"):
        notes.sign("o", 0, log.EMPTY_ROOT, Broken())


# ---------------------------------------------------------------------------------------------
# The vault's checkpoints


def test_vault_checkpoint_by_hand(vault: Vault) -> None:
    """A fresh vault with one enrolment: its log is the vault's identity, the enrolment, and
    the dock key recorded by `checkpoint` itself; the note's root is their tree."""
    dock = Dock()
    note = vault.checkpoint(dock)
    entries = [bytes(e) for (e,) in vault.db.execute("SELECT entry FROM log ORDER BY idx")]
    assert len(entries) == 3
    leaf = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
    root = hashlib.sha256(
        b"\x01" + hashlib.sha256(b"\x01" + leaf[0] + leaf[1]).digest() + leaf[2]).digest()
    cp = notes.parse(note)
    assert cp.origin == f"bodycam.vault/{vault.vault_id}" == vault.origin
    assert (cp.size, cp.root) == (3, root)
    assert (vault.root / "checkpoint").read_bytes() == note
    [row] = vault.checkpoints()
    assert (row["size"], row["root"], row["note"]) == (3, root, note.decode())
    [recorded] = vault.docks()
    assert (recorded["name"], recorded["public_key"], recorded["cert"]) == (
        dock.name, dock.public_key, None)
    again = vault.checkpoint(dock)  # same key: not recorded twice; nothing new to cover
    assert notes.parse(again).size == 3 and len(vault.docks()) == 1
    assert vault.verify() == []


def test_different_vaults_have_different_origins(tmp_path: Path) -> None:
    with Vault.open(tmp_path / "a") as a, Vault.open(tmp_path / "b") as b:
        assert a.vault_id != b.vault_id and len(a.vault_id) == 32


def test_checkpoints_are_refused_inside_a_transaction(vault: Vault) -> None:
    with pytest.raises(VaultError, match="outside any transaction"), vault.transaction():
        vault.checkpoint(Dock())


def test_a_certificate_for_another_key_is_refused(vault: Vault) -> None:
    dock = Dock(unit=Unit())
    dock.cert = Unit().certify(Dock())
    with pytest.raises(VaultError, match="another key"):
        vault.checkpoint(dock)


def test_uncertified_key_is_reported_against_the_unit_key(vault: Vault, chain: RecordChain,
                                                          tmp_path: Path) -> None:
    unit = Unit()
    good = Dock("dock-good", unit=unit)
    store(vault, chain, 2)
    (tmp_path / "good.note").write_bytes(vault.checkpoint(good))
    rogue = Dock("dock-rogue")  # never certified: signs a checkpoint of the same vault
    (tmp_path / "rogue.note").write_bytes(vault.checkpoint(rogue))
    other_unit = Dock("dock-other", unit=Unit(b"another unit"))
    (tmp_path / "other.note").write_bytes(vault.checkpoint(other_unit))

    report = vault.verify_report(checkpoints=[tmp_path / "good.note", tmp_path / "rogue.note",
                                              tmp_path / "other.note"],
                                 unit_key=unit.public_key)
    by_source = {c.source: c for c in report.checkpoints}
    assert by_source[str(tmp_path / "good.note")].status == "consistent"
    assert by_source[str(tmp_path / "good.note")].trust == "unit"
    for name in ("rogue", "other"):
        result = by_source[str(tmp_path / f"{name}.note")]
        assert result.status == "checkpoint_untrusted"
        assert "never certified" in result.detail and f"dock-{name}" in result.detail
    assert {(p.code, p.path) for p in report.problems} >= {
        ("checkpoint_untrusted", str(tmp_path / "rogue.note")),
        ("checkpoint_untrusted", str(tmp_path / "other.note"))}
    assert "certified by the unit key" in report.trust

    # without the unit key, every dock the vault recorded counts (and the report says so)
    weak = vault.verify_report(checkpoints=[tmp_path / "rogue.note"])
    assert weak.problems == []
    assert "weaker" in weak.trust


def test_a_dock_certificate_may_come_from_outside_the_vault(vault: Vault, tmp_path: Path) -> None:
    unit = Unit()
    dock = Dock("dock-1", unit=unit)
    cert = dock.cert
    del dock.cert  # the vault records no certificate for it
    note = tmp_path / "cp"
    note.write_bytes(vault.checkpoint(dock))
    assert codes(vault.verify(checkpoints=[note], unit_key=unit.public_key)) == {
        "checkpoint_untrusted"}
    assert vault.verify(checkpoints=[note], unit_key=unit.public_key, dock_certs=[cert]) == []


def test_an_altered_or_foreign_note_is_reported(vault: Vault, tmp_path: Path) -> None:
    dock = Dock()
    note = vault.checkpoint(dock)
    cp = notes.parse(note)
    forged = note.replace(base64.b64encode(cp.root), base64.b64encode(log.EMPTY_ROOT))
    (tmp_path / "forged").write_bytes(forged)
    (tmp_path / "junk").write_bytes(b"not a note\n")
    with Vault.open(tmp_path / "other") as other:
        (tmp_path / "foreign").write_bytes(other.checkpoint(dock))
    problems = vault.verify(checkpoints=[tmp_path / n for n in ("forged", "junk", "foreign")])
    assert {(p.code, p.path) for p in problems} == {
        ("checkpoint_bad_signature", str(tmp_path / "forged")),
        ("checkpoint_malformed", str(tmp_path / "junk")),
        ("checkpoint_origin", str(tmp_path / "foreign")),
    }
    with pytest.raises(VaultError, match="cannot read"):
        vault.verify(checkpoints=[tmp_path / "missing"])


def test_witness_directories(vault: Vault, chain: RecordChain, tmp_path: Path) -> None:
    """A witness keeps copies of many vaults' notes: this vault's are checked, others skipped."""
    dock = Dock()
    witness = tmp_path / "witness"
    witness.mkdir()
    store(vault, chain, 1)
    (witness / "1").write_bytes(vault.checkpoint(dock))
    store(vault, chain, 1)
    (witness / "2").write_bytes(vault.checkpoint(dock))
    with Vault.open(tmp_path / "other") as other:
        (witness / "other-vault").write_bytes(other.checkpoint(dock))
    report = vault.verify_report(witness=[witness])
    assert report.problems == []
    assert sorted((Path(c.source).name, c.status) for c in report.checkpoints
                  if c.source.startswith(str(witness))) == [
        ("1", "consistent"), ("2", "consistent"), ("other-vault", "skipped")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert {(p.code, p.path) for p in vault.verify(witness=[empty])} == {
        ("witness_empty", str(empty))}


def test_the_vault_refuses_to_sign_a_log_that_went_back(vault: Vault, chain: RecordChain) -> None:
    """A log must never sign a checkpoint inconsistent with one it signed before."""
    import sqlite3

    dock = Dock()
    store(vault, chain, 2)
    vault.checkpoint(dock)
    db = sqlite3.connect(vault.root / "vault.sqlite")
    db.execute("DROP TRIGGER log_no_update")
    db.execute("UPDATE log SET entry = x'00', leaf = ? WHERE idx = 2",
               (hashlib.sha256(b"\x00\x00").digest(),))
    db.commit()
    db.close()
    with pytest.raises(VaultError, match="no longer hash to the root"):
        vault.checkpoint(dock)


def test_cli_verify_json_shows_the_checkpoints(vault: Vault, chain: RecordChain,
                                               tmp_path: Path) -> None:
    unit = Unit()
    store(vault, chain, 1)
    note = tmp_path / "kept.note"
    note.write_bytes(vault.checkpoint(Dock(unit=unit)))
    out = subprocess.run(
        [sys.executable, "-m", "host_agent.cli", "vault", "verify", str(vault.root), "--json",
         "--checkpoint", str(note), "--unit-key", unit.public_key.hex()],
        capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] is True and doc["records"] == 1 and doc["problems"] == []
    assert doc["origin"] == vault.origin and doc["log_size"] == vault.log_size()
    assert base64.b64decode(doc["log_root"]) == vault.log_root()
    kept = [c for c in doc["checkpoints"] if c["source"] == str(note)]
    assert kept and kept[0]["status"] == "consistent" and kept[0]["trust"] == "unit"

    bad = subprocess.run([sys.executable, "-m", "host_agent.cli", "vault", "verify",
                          str(vault.root), "--unit-key", "abcd"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "64 hex digits" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_verify_names_a_cut_log_and_exits_1(vault: Vault, chain: RecordChain,
                                                tmp_path: Path) -> None:
    import sqlite3

    store(vault, chain, 2)
    witness = tmp_path / "witness"
    witness.mkdir()
    (witness / "latest").write_bytes(vault.checkpoint(Dock()))
    db = sqlite3.connect(vault.root / "vault.sqlite")
    db.execute("DROP TRIGGER log_no_delete")
    db.execute("DELETE FROM log WHERE idx = (SELECT max(idx) FROM log)")
    db.execute(schema.trigger_sql("log", "delete"))  # put back as it was
    db.commit()
    db.close()
    out = subprocess.run([sys.executable, "-m", "host_agent.cli", "vault", "verify",
                          str(vault.root), "--witness", str(witness)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{witness / 'latest'}: log_truncated:" in out.stdout
    assert "log_orphan" not in out.stdout and "schema_altered" not in out.stdout
    assert "problem(s) in 2 records" in out.stdout
