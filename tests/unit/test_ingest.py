"""The one ingest step (host_agent/vault/ingest.py): what it decides for each record offered.

Every quarantine reason is fed to it; each rule of its docstring has a test. Records are real
COSE_Sign1 signed with real Ed25519 keys (tests/factories.py); the vault is real files and
SQLite, and is verified after each case.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from host_agent.vault import Vault, VaultError, evidence, ingest
from protocol import authority, cbor, cose, manifest
from tests.factories import RecordChain, enrolled_vault

DEVICE = "SIM-INGEST"


@pytest.fixture
def chain() -> RecordChain:
    return RecordChain(DEVICE, seed=b"ingest")


@pytest.fixture
def vault(tmp_path: Path, chain: RecordChain):
    with enrolled_vault(tmp_path, chain) as v:
        yield v


def event(chain: RecordChain, name: str = "bookmark", **detail: Any) -> tuple[bytes, dict]:
    """The next record of the chain: an event."""
    fields = {"v": manifest.FORMAT_VERSION, "kind": manifest.KIND_EVENT, "device_id": DEVICE,
              "seq": chain.seq + 1, "prev": chain.prev, "policy": manifest.DEFAULT_POLICY,
              "fw": "0.1.0", "t": chain.t_us, "clock": {"state": "synced"}, "event": name,
              "detail": detail, "phase": {}}
    record = chain.sign(fields)
    chain.seq, chain.prev = fields["seq"], manifest.record_hash(record)
    return record, fields


def with_unprotected(record: bytes, extra: dict) -> bytes:
    """The same signed record with entries added to its (unsigned) unprotected header."""
    tag = cbor.decode(record)
    protected, unprotected, payload, sig = tag.value
    return cbor.encode(cbor.Tag(cose.TAG_SIGN1, [protected, {**unprotected, **extra}, payload,
                                                 sig]))


def flip_last(record: bytes) -> bytes:
    return record[:-1] + bytes([record[-1] ^ 1])


# Each case: (name, make(chain, vault) -> (seq, record, data)); the record goes to quarantine
# (or, for data problems, its data does) with that reason.
def _malformed(chain: RecordChain, vault: Vault) -> tuple[int, bytes, bytes | None]:
    return 1, b"\xd2\x84junk", None


def _unknown_key(chain: RecordChain, vault: Vault) -> tuple[int, bytes, bytes | None]:
    record, _ = RecordChain(DEVICE).next_segment(b"x")
    return 1, record, b"x"


def _bad_signature(chain: RecordChain, vault: Vault) -> tuple[int, bytes, bytes | None]:
    record, _ = chain.next_segment(b"x")
    return 1, flip_last(record), b"x"


def _wrong_device(chain: RecordChain, vault: Vault) -> tuple[int, bytes, bytes | None]:
    record, _ = chain.next_segment(b"x", device_id="SIM-OTHER")
    return 1, record, b"x"


def _chain_broken(chain: RecordChain, vault: Vault) -> tuple[int, bytes, bytes | None]:
    intake = vault.intake(DEVICE)
    intake.offer(1, *chain.next_segment(b"1")[:1], b"1")
    late, _ = chain.next_segment(b"2")  # record 2 is held back ...
    for n in (3, 4):
        record, _ = chain.next_segment(b"%d" % n)
        assert intake.offer(n, record, b"%d" % n).status == "stored"  # ... 3, 4 get in first
    return 2, late, b"2"


def _conflict(chain: RecordChain, vault: Vault) -> tuple[int, bytes, bytes | None]:
    record, _ = chain.next_segment(b"first")
    vault.intake(DEVICE).offer(1, record, b"first")
    fork = RecordChain(DEVICE, seed=b"ingest")  # the same key re-signs record 1
    record2, _ = fork.next_segment(b"other")
    return 1, record2, b"other"


def _size_mismatch(chain: RecordChain, vault: Vault) -> tuple[int, bytes, bytes | None]:
    record, _ = chain.next_segment(b"exact bytes")
    return 1, record, b"exact byte"  # the card lost the last byte


def _hash_mismatch(chain: RecordChain, vault: Vault) -> tuple[int, bytes, bytes | None]:
    record, _ = chain.next_segment(b"exact bytes")
    return 1, record, b"exact bytez"


def _unexpected_data(chain: RecordChain, vault: Vault) -> tuple[int, bytes, bytes | None]:
    record, _ = event(chain)
    return 1, record, b"a .bin that no event has"


REASONS: dict[str, Callable[[RecordChain, Vault], tuple[int, bytes, bytes | None]]] = {
    evidence.MALFORMED: _malformed,
    evidence.UNKNOWN_KEY: _unknown_key,
    evidence.BAD_SIGNATURE: _bad_signature,
    evidence.WRONG_DEVICE: _wrong_device,
    evidence.CHAIN_BROKEN: _chain_broken,
    evidence.CONFLICT: _conflict,
    evidence.SIZE_MISMATCH: _size_mismatch,
    evidence.HASH_MISMATCH: _hash_mismatch,
    evidence.UNEXPECTED_DATA: _unexpected_data,
}
DATA_REASONS = (evidence.SIZE_MISMATCH, evidence.HASH_MISMATCH, evidence.UNEXPECTED_DATA)


def test_every_reason_has_a_case() -> None:
    assert set(REASONS) == set(evidence.REASONS)


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_every_quarantine_reason(vault: Vault, chain: RecordChain, reason: str) -> None:
    seq, record, data = REASONS[reason](chain, vault)
    before = vault.records(DEVICE)
    outcome = vault.intake(DEVICE).offer(seq, record, data)
    assert outcome.code == reason
    assert outcome.release  # the vault holds all the recorder offered: it may free it
    [row] = [q for q in vault.quarantined(DEVICE) if q["code"] == reason]
    qdir = vault.root / str(row["path"])
    assert (qdir / "record.cose").read_bytes() == record
    if data:
        assert (qdir / "segment.bin").read_bytes() == data
    if reason in DATA_REASONS:
        # The record is authentic and continues the chain: it is evidence; only the bytes
        # that came with it are kept aside.
        assert outcome.status == "stored"
        assert vault.stored_record_hash(DEVICE, seq) == manifest.record_hash(record)
    else:
        assert outcome.status == "quarantined"
        assert vault.records(DEVICE) == before
    assert vault.verify() == []


def test_an_unsigned_header_entry_is_refused_not_stored(vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"x")
    padded = with_unprotected(record, {99: b"rides along"})
    outcome = vault.intake(DEVICE).offer(1, padded, b"x")
    assert (outcome.status, outcome.code) == ("quarantined", evidence.MALFORMED)
    assert "unsigned" in outcome.detail
    assert vault.records(DEVICE) == []
    # the clean record, as signed, is then taken
    assert vault.intake(DEVICE).offer(1, record, b"x").status == "stored"
    assert vault.manifest_path(DEVICE, 1).read_bytes() == record


def test_a_listing_that_lies_about_the_seq_is_malformed(vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"x")
    outcome = vault.intake(DEVICE).offer(7, record, b"x")
    assert (outcome.status, outcome.code) == ("quarantined", evidence.MALFORMED)


def test_the_records_after_a_bad_segment_are_not_poisoned(vault: Vault, chain: RecordChain) -> None:
    intake = vault.intake(DEVICE)
    rec1, _ = chain.next_segment(b"one")
    rec2, _ = chain.next_segment(b"two")
    assert intake.offer(1, rec1, b"on3").code == evidence.HASH_MISMATCH
    second = intake.offer(2, rec2, b"two")
    assert (second.status, second.code, second.chain_break) == ("stored", "", None)
    assert [r["data_state"] for r in vault.records(DEVICE)] == ["quarantined", "stored"]
    assert vault.verify() == []


def test_a_missing_record_is_a_recorded_chain_break(vault: Vault, chain: RecordChain) -> None:
    intake = vault.intake(DEVICE)
    intake.offer(1, chain.next_segment(b"1")[0], b"1")
    chain.next_segment(b"2")  # lost on the card
    outcome = intake.offer(3, chain.next_segment(b"3")[0], b"3")
    assert outcome.status == "stored" and outcome.release
    assert outcome.chain_break == "records 2..2 are not in this vault"
    assert [r["chain_break"] for r in vault.records(DEVICE)] == [None, outcome.chain_break]
    assert vault.verify() == []


def test_a_replaced_predecessor_is_a_recorded_chain_break(
        vault: Vault, chain: RecordChain) -> None:
    intake = vault.intake(DEVICE)
    intake.offer(1, chain.next_segment(b"1")[0], b"1")
    chain.prev = hashlib.sha256(b"a record 1 this vault never saw").digest()
    outcome = intake.offer(2, chain.next_segment(b"2")[0], b"2")
    assert outcome.chain_break == "does not link to record 1, the last the vault holds"
    assert vault.verify() == []


def test_a_record_held_already_is_released_again_not_stored_twice(
        vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"x")
    intake = vault.intake(DEVICE)
    first = intake.offer(1, record, b"x")
    plan = intake.examine(1, record, 1)
    assert (plan.action, plan.fetch) == (ingest.HAVE, 0)  # nothing is fetched again
    again = intake.conclude(plan, None)
    assert (again.status, again.release, again.receipt) == ("had", True, first.receipt)
    assert len(vault.records(DEVICE)) == 1


def test_a_record_quarantines_once(vault: Vault, chain: RecordChain) -> None:
    record, _ = RecordChain(DEVICE).next_segment(b"x")
    intake = vault.intake(DEVICE)
    assert intake.offer(1, record, b"x").status == "quarantined"
    plan = intake.examine(1, record, 1)
    assert (plan.action, plan.fetch) == (ingest.HAVE, 0)
    assert intake.conclude(plan, None).release
    assert len(vault.quarantined(DEVICE)) == 1


def test_a_download_never_exceeds_the_signed_size(vault: Vault, chain: RecordChain) -> None:
    record, fields = chain.next_segment(b"x" * 1000)
    plan = vault.intake(DEVICE).examine(1, record, 10**12)  # the recorder claims a terabyte
    assert plan.fetch == fields["size"] == 1000


def test_a_suspect_record_gets_a_bounded_fetch_and_stays_held(
        tmp_path: Path, chain: RecordChain) -> None:
    with Vault.open(tmp_path / "v") as vault:
        vault.enroll(DEVICE, chain.public_key, by="t")
        intake = ingest.Intake(vault, DEVICE, chain.public_key, suspect_data_max=4)
        record, _ = RecordChain(DEVICE).next_segment(b"whatever")
        plan = intake.examine(1, record, 10**12)
        assert plan.fetch == 4
        with vault.incoming() as inc:
            inc.write(b"1234")
            outcome = intake.conclude(plan, inc)
        assert (outcome.status, outcome.release) == ("quarantined", False)
        plan = intake.examine(1, record, 10**12)  # the next docking
        assert (plan.action, plan.fetch) == (ingest.HELD, 0)
        assert intake.conclude(plan, None).status == "held"
        assert len(vault.quarantined(DEVICE)) == 1
        assert vault.verify() == []


def two_bad_reads(vault: Vault, chain: RecordChain) -> list:
    """A 4-byte segment read twice, both times with bytes other than the signed ones."""
    record, _ = chain.next_segment(b"good")
    intake = vault.intake(DEVICE)
    plan = intake.examine(1, record, 4)
    outcomes = []
    for got in (b"bad1", b"bad2"):
        with vault.incoming() as inc:
            inc.write(got)
            outcomes.append(intake.conclude(plan, inc))
    return outcomes


def test_two_reads_that_differ_keep_nothing(vault: Vault, chain: RecordChain) -> None:
    outcomes = two_bad_reads(vault, chain)
    assert [o.status for o in outcomes] == ["reread", "held"]
    assert not outcomes[-1].release
    assert vault.records(DEVICE) == [] and vault.quarantined() == []


def test_a_segment_without_data_is_stored_as_missing(vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"the bytes the card lost")
    outcome = vault.intake(DEVICE).offer(1, record, None)
    assert (outcome.status, outcome.code, outcome.release) == (
        "stored", evidence.SIZE_MISMATCH, True)
    assert vault.records(DEVICE)[0]["data_state"] == "missing"
    assert vault.verify() == []


def test_events_and_gaps_go_into_the_events_index(vault: Vault, chain: RecordChain) -> None:
    intake = vault.intake(DEVICE)
    record, _ = event(chain, "notice_given", note="whole process recorded")
    assert intake.offer(1, record).status == "stored"
    [row] = vault.events(device_id=DEVICE)
    assert (row["name"], row["detail"]) == ("notice_given", {"note": "whole process recorded"})
    assert vault.verify() == []


def test_a_chain_that_moved_meanwhile_is_not_stored_on_the_old_judgement(
        tmp_path: Path, chain: RecordChain) -> None:
    with Vault.open(tmp_path / "v") as a, Vault.open(tmp_path / "v") as b:
        a.enroll(DEVICE, chain.public_key, by="t")
        rec1, _ = chain.next_segment(b"1")
        plan = a.intake(DEVICE).examine(1, rec1, 1)
        b.intake(DEVICE).offer(1, rec1, b"1")  # another docking stored it meanwhile
        with a.incoming() as inc, pytest.raises(VaultError, match="dock again"):
            inc.write(b"1")
            a.intake(DEVICE).conclude(plan, inc)
        assert len(a.records(DEVICE)) == 1


# ---------------------------------------------------------------------------------------------
# The log entry of each outcome, and the facts the dock hands in (head statements, receipts)


def logged(vault: Vault, outcome: ingest.Outcome) -> dict:
    entry = vault.log_entry(outcome.log_index)
    assert entry is not None
    return entry


def test_each_outcome_names_the_log_entry_that_holds_it(vault: Vault, chain: RecordChain) -> None:
    intake = vault.intake(DEVICE)
    record, _ = chain.next_segment(b"one")
    stored = intake.offer(1, record, b"one")
    entry = logged(vault, stored)
    assert (entry["kind"], entry["device_id"], entry["seq"], entry["record_sha256"]) == (
        "record", DEVICE, 1, stored.receipt)
    assert stored.to_dict()["log_index"] == stored.log_index

    again = intake.offer(1, record, b"one")  # the release was lost: "had", the same entry
    assert (again.status, again.log_index) == ("had", stored.log_index)

    record2, _ = chain.next_segment(b"two")
    bad_bytes = intake.offer(2, record2, b"tw0")  # stored, its bytes quarantined beside it
    assert bad_bytes.status == "stored" and bad_bytes.code == evidence.HASH_MISMATCH
    assert logged(vault, bad_bytes)["kind"] == "record"
    assert vault.log_entry(bad_bytes.log_index - 1)["kind"] == "quarantine"  # type: ignore[index]
    resent = intake.offer(2, record2, b"tw0")  # "had": the record's entry, not its data's
    assert (resent.status, resent.log_index) == ("had", bad_bytes.log_index)

    stranger, _ = RecordChain(DEVICE).next_segment(b"x")
    quarantined = intake.offer(3, stranger, b"x")
    assert quarantined.status == "quarantined"
    entry = logged(vault, quarantined)
    assert (entry["kind"], entry["code"], entry["record_sha256"]) == (
        "quarantine", evidence.UNKNOWN_KEY, quarantined.receipt)
    assert intake.offer(3, stranger, b"x").log_index == quarantined.log_index  # once


def test_a_record_the_vault_holds_nothing_of_has_no_log_entry(
        vault: Vault, chain: RecordChain) -> None:
    outcomes = two_bad_reads(vault, chain)
    assert [(o.status, o.log_index) for o in outcomes] == [("reread", -1), ("held", -1)]
    assert "log_index" not in outcomes[-1].to_dict()


class DockKey:
    """A dock's signing key, as protocol.authority signs receipts with it."""

    def __init__(self, name: str = "dock-1") -> None:
        self.name = name
        self.key = Ed25519PrivateKey.generate()
        self.public_key = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, msg: bytes) -> bytes:
        return self.key.sign(msg)

    def receipt(self, outcome: ingest.Outcome, status: str = "stored",
                log_index: int | None = None) -> bytes:
        doc = authority.receipt(DEVICE, outcome.seq, outcome.receipt, status,
                                outcome.log_index if log_index is None else log_index,
                                self.name)
        return authority.sign_statement(doc, authority.key_id(self.public_key), self.sign)


def head_statement(chain: RecordChain, signer: RecordChain | None = None) -> bytes:
    doc = authority.head(DEVICE, chain.seq, chain.prev, "dock-1", b"n" * 16)
    signer = signer or chain
    return authority.sign_statement(doc, signer.kid, signer.private_key.sign)


def test_heads_and_receipts_are_logged_facts(vault: Vault, chain: RecordChain) -> None:
    dock = DockKey()
    record, _ = chain.next_segment(b"one")
    head_at = vault.record_fact("head", {"statement": head_statement(chain), "device": DEVICE})
    outcome = vault.intake(DEVICE).offer(1, record, b"one")
    receipt_at = vault.record_fact("receipt", {"receipt": dock.receipt(outcome),  # or that
                                               "device_id": DEVICE, "seq": 1})
    assert head_at < outcome.log_index < receipt_at == vault.log_size() - 1
    assert [logged(vault, o)["kind"] for o in (outcome,)] == ["record"]
    assert vault.log_entry(head_at)["kind"] == "head"  # type: ignore[index]
    assert vault.log_entry(receipt_at)["kind"] == "receipt"  # type: ignore[index]
    facts = vault.facts()
    assert [(f["kind"], f["device_id"]) for f in facts] == [("head", DEVICE), ("receipt", DEVICE)]
    assert facts[1]["fields"] == {"receipt": dock.receipt(outcome), "device_id": DEVICE,
                                  "seq": 1}
    vault.checkpoint(dock)  # the dock key is now one the vault recorded
    assert vault.verify() == []


def test_record_fact_joins_the_callers_transaction(vault: Vault, chain: RecordChain) -> None:
    before = vault.log_size()
    with pytest.raises(RuntimeError), vault.transaction():
        vault.record_fact("head", {"statement": head_statement(chain)})
        raise RuntimeError("the docking failed")
    assert vault.log_size() == before and vault.facts() == []
    with vault.transaction():
        index = vault.record_fact("head", {"statement": head_statement(chain)})
        vault.log_docking({"device_id": DEVICE})
    assert index == before and vault.log_size() == before + 2


def test_a_fact_that_does_not_fit_is_refused(vault: Vault, chain: RecordChain) -> None:
    dock = DockKey()
    record, _ = chain.next_segment(b"one")
    outcome = vault.intake(DEVICE).offer(1, record, b"one")
    vault.checkpoint(dock)
    forged = bytearray(dock.receipt(outcome))
    forged[-1] ^= 1
    cases: list[tuple[str, dict, str]] = [
        ("rumour", {"statement": head_statement(chain)}, "not one of"),
        ("head", {"said": "no statement"}, "'statement'"),
        ("head", {"statement": b"junk"}, "not a signed statement"),
        ("head", {"statement": head_statement(chain), "when": 1.5}, "CBOR-encodable"),
        ("head", {"statement": head_statement(chain, RecordChain(DEVICE))}, "signature"),
        ("head", {"statement": head_statement(chain), "device": "SIM-OTHER"}, "says device"),
        ("head", {"statement": head_statement(chain), "seq": 7}, "says seq 7"),
        ("head", {"statement": dock.receipt(outcome)}, "not a head"),
        ("receipt", {"statement": dock.receipt(outcome, log_index=0)}, "not that record"),
        ("receipt", {"statement": dock.receipt(outcome, log_index=999)}, "does not hold"),
        ("receipt", {"statement": bytes(forged)}, "not signed by the dock key"),
    ]
    before = vault.log_size()
    for kind, fields, why in cases:
        with pytest.raises(VaultError, match=why):
            vault.record_fact(kind, fields)
    assert vault.log_size() == before and vault.facts() == []


def test_an_edited_fact_is_reported(vault: Vault, chain: RecordChain) -> None:
    import sqlite3

    vault.record_fact("head", {"statement": head_statement(chain), "device": DEVICE})
    db = sqlite3.connect(vault.root / "vault.sqlite")
    db.execute("DROP TRIGGER facts_no_update")
    db.execute("UPDATE facts SET fields = ?",
               (cbor.encode({"statement": head_statement(chain, RecordChain(DEVICE))}),))
    db.commit()
    db.close()
    found = {(p.code, p.detail.split(":")[0]) for p in vault.verify()}
    assert found == {("log_mismatch", "fact 1 differs from log entry 2 in fields"),
                     ("fact_invalid", "fact 1 (head)"),
                     ("schema_altered", "trigger facts_no_update is missing")}


def test_an_empty_segment_is_evidence_with_empty_data(vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"")
    outcome = vault.intake(DEVICE).offer(1, record, None)
    assert (outcome.status, outcome.code, outcome.release) == ("stored", "", True)
    assert vault.records(DEVICE)[0]["data_state"] == "stored"
    assert vault.verify() == []
