"""The evidence rules, one behaviour per test: what makes a record evidence
(host_agent/vault/evidence.py), where the ingest step files a validly signed record that does
not fit the chain (host_agent/vault/ingest.py), one key per recorder (the vault's enrolment),
the envelope (protocol/cose.py), and a phase's findings (host_agent/vault/timeline.py).

Each test fails on a mutant of the rule it names (see docs/mutation.md). Real Ed25519, real
COSE bytes, a real vault (files and SQLite).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host_agent.vault import Vault, VaultError, evidence, ingest, timeline
from host_agent.vault.evidence import EvidenceError
from protocol import cbor, cose, manifest
from tests.factories import RecordChain, enrolled_vault

DEVICE = "SIM-RULES"


@pytest.fixture
def chain() -> RecordChain:
    return RecordChain(DEVICE, seed=b"rules")


@pytest.fixture
def vault(tmp_path: Path, chain: RecordChain):
    with enrolled_vault(tmp_path, chain) as v:
        yield v


def code_of(fn: Any, *args: Any) -> str:
    with pytest.raises(EvidenceError) as exc:
        fn(*args)
    return exc.value.code


# -- who signed it ---------------------------------------------------------------------------
def test_a_record_validly_signed_by_the_enrolled_key_opens(chain: RecordChain) -> None:
    record, fields = chain.next_segment(b"data")
    assert evidence.open_record(record, chain.public_key, DEVICE) == fields


def test_a_record_naming_another_device_is_wrong_device(chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"data", device_id="SIM-ELSE")
    assert code_of(evidence.open_record, record, chain.public_key, DEVICE) == evidence.WRONG_DEVICE


def test_a_signature_by_another_key_under_the_enrolled_kid_is_bad_signature(
        chain: RecordChain) -> None:
    forger = Ed25519PrivateKey.generate()
    fields = chain.segment_fields(b"data")
    record = cose.sign1(manifest.encode(fields), chain.kid, forger.sign)  # claims our kid
    assert code_of(evidence.open_record, record, chain.public_key, DEVICE) == \
        evidence.BAD_SIGNATURE


def test_a_payload_changed_after_signing_is_bad_signature(chain: RecordChain) -> None:
    record, fields = chain.next_segment(b"data")
    env = cose.parse_sign1(record)
    changed = manifest.encode({**fields, "size": fields["size"] + 1})
    forged = cbor.encode(cbor.Tag(cose.TAG_SIGN1, [env.protected, {cose.HDR_KID: env.kid},
                                                   changed, env.signature]))
    assert code_of(evidence.open_record, forged, chain.public_key, DEVICE) == \
        evidence.BAD_SIGNATURE


def test_a_record_under_another_kid_is_unknown_key(chain: RecordChain) -> None:
    record, _ = RecordChain(DEVICE, seed=b"another recorder").next_segment(b"data")
    assert code_of(evidence.open_record, record, chain.public_key, DEVICE) == \
        evidence.UNKNOWN_KEY


def test_a_signed_payload_that_is_no_manifest_is_malformed(chain: RecordChain) -> None:
    record = cose.sign1(cbor.encode({"v": 1, "kind": "segment"}), chain.kid,
                        chain.private_key.sign)
    assert code_of(evidence.open_record, record, chain.public_key, DEVICE) == evidence.MALFORMED


# -- the envelope: nothing rides along --------------------------------------------------------
def test_a_protected_header_with_an_extra_parameter_is_refused(chain: RecordChain) -> None:
    fields = chain.segment_fields(b"data")
    payload = manifest.encode(fields)
    protected = cbor.encode({cose.HDR_ALG: cose.ALG_EDDSA, 3: "text/plain"})  # + content type
    sig = chain.private_key.sign(cose.to_be_signed(protected, payload))  # validly signed
    record = cbor.encode(cbor.Tag(cose.TAG_SIGN1, [protected, {cose.HDR_KID: chain.kid},
                                                   payload, sig]))
    assert code_of(evidence.open_record, record, chain.public_key, DEVICE) == evidence.MALFORMED


def test_a_protected_header_naming_another_algorithm_is_refused(chain: RecordChain) -> None:
    payload = manifest.encode(chain.segment_fields(b"data"))
    protected = cbor.encode({cose.HDR_ALG: -7})  # ES256
    sig = chain.private_key.sign(cose.to_be_signed(protected, payload))
    record = cbor.encode(cbor.Tag(cose.TAG_SIGN1, [protected, {cose.HDR_KID: chain.kid},
                                                   payload, sig]))
    with pytest.raises(cose.CoseError, match="alg EdDSA"):
        cose.parse_sign1(record)


# -- where it sits in the chain ----------------------------------------------------------------
def test_a_validly_signed_record_linking_to_another_predecessor_is_chain_broken(
        chain: RecordChain) -> None:
    chain.next_segment(b"1")
    record, _ = chain.next_segment(b"2", prev=hashlib.sha256(b"an old card backup").digest())
    fields = evidence.open_record(record, chain.public_key, DEVICE)  # authentic ...
    assert code_of(evidence.verify_record, record, chain.public_key, DEVICE, 2,
                   manifest.GENESIS) == evidence.CHAIN_BROKEN  # ... but not the next link
    assert code_of(evidence.check_link, fields, 2, manifest.GENESIS) == evidence.CHAIN_BROKEN


def test_a_validly_signed_record_at_another_seq_is_chain_broken(chain: RecordChain) -> None:
    record, fields = chain.next_segment(b"1")
    assert code_of(evidence.check_link, fields, 2, manifest.GENESIS) == evidence.CHAIN_BROKEN


def test_the_next_link_verifies(chain: RecordChain) -> None:
    first, _ = chain.next_segment(b"1")
    record, fields = chain.next_segment(b"2")
    assert evidence.verify_record(record, chain.public_key, DEVICE, 2,
                                  manifest.record_hash(first)) == fields


def test_after_the_head_a_wrong_prev_is_stored_with_its_chain_break(
        vault: Vault, chain: RecordChain) -> None:
    intake = vault.intake(DEVICE)
    assert intake.offer(1, chain.next_segment(b"1")[0], b"1").chain_break is None
    chain.prev = hashlib.sha256(b"a firmware rollback re-signed record 1").digest()
    outcome = intake.offer(2, chain.next_segment(b"2")[0], b"2")
    assert (outcome.status, outcome.code, outcome.chain_break) == (
        "stored", "", "does not link to record 1, the last the vault holds")


def test_a_re_signed_record_under_a_seq_the_vault_holds_is_a_conflict(
        vault: Vault, chain: RecordChain) -> None:
    intake = vault.intake(DEVICE)
    intake.offer(1, chain.next_segment(b"1")[0], b"1")
    intake.offer(2, chain.next_segment(b"2")[0], b"2")
    restored = RecordChain(DEVICE, seed=b"rules")  # the same key, from an old card backup
    restored.next_segment(b"1")
    outcome = intake.offer(2, restored.next_segment(b"2 again")[0], b"2 again")
    assert (outcome.status, outcome.code) == ("quarantined", evidence.CONFLICT)


def test_a_record_before_the_head_that_the_vault_lacks_is_chain_broken(
        vault: Vault, chain: RecordChain) -> None:
    intake = vault.intake(DEVICE)
    intake.offer(1, chain.next_segment(b"1")[0], b"1")
    late, _ = chain.next_segment(b"2")
    intake.offer(3, chain.next_segment(b"3")[0], b"3")
    outcome = intake.offer(2, late, b"2")
    assert (outcome.status, outcome.code) == ("quarantined", evidence.CHAIN_BROKEN)


# -- its data ------------------------------------------------------------------------------------
def test_data_of_the_signed_size_and_hash_verifies(chain: RecordChain) -> None:
    _, fields = chain.next_segment(b"exact")
    evidence.verify_data(fields, hashlib.sha256(b"exact").digest(), 5)


def test_data_of_another_size_is_size_mismatch(chain: RecordChain) -> None:
    _, fields = chain.next_segment(b"exact")
    assert code_of(evidence.verify_data, fields, hashlib.sha256(b"exact").digest(), 4) == \
        evidence.SIZE_MISMATCH


def test_data_of_another_hash_is_hash_mismatch(chain: RecordChain) -> None:
    _, fields = chain.next_segment(b"exact")
    assert code_of(evidence.verify_data, fields, hashlib.sha256(b"exacT").digest(), 5) == \
        evidence.HASH_MISMATCH


# -- one key, one recorder -----------------------------------------------------------------------
def test_a_key_enrolled_under_one_id_is_refused_for_another(
        vault: Vault, chain: RecordChain) -> None:
    with pytest.raises(VaultError, match="already enrolled as SIM-RULES"):
        vault.enroll("SIM-TWIN", chain.public_key, by="test")
    assert vault.public_key("SIM-TWIN") is None


def test_a_record_of_one_recorder_is_not_filed_as_another_s(tmp_path: Path) -> None:
    one, two = RecordChain("SIM-ONE", seed=b"one"), RecordChain("SIM-TWO", seed=b"two")
    with Vault.open(tmp_path / "v") as v:
        v.enroll("SIM-ONE", one.public_key, by="test")
        v.enroll("SIM-TWO", two.public_key, by="test")
        record, _ = one.next_segment(b"x")
        outcome = v.intake("SIM-TWO").offer(1, record, b"x")
    assert (outcome.status, outcome.code) == ("quarantined", evidence.UNKNOWN_KEY)


# -- a phase's findings --------------------------------------------------------------------------
def _event(chain: RecordChain, name: str, phase: dict[str, Any], **detail: Any) -> dict[str, Any]:
    chain.seq += 1
    chain.t_us += 1_000_000
    return {"v": 1, "kind": "event", "device_id": DEVICE, "seq": chain.seq, "prev": chain.prev,
            "policy": "p/1", "fw": "t", "t": chain.t_us, "clock": {}, "event": name,
            "detail": detail, "phase": phase}


def test_a_phase_without_a_notice_has_that_finding(chain: RecordChain) -> None:
    p = {"row": 4, "case": "C-1", "officer": "O-1"}
    phases = timeline.rebuild([_event(chain, "phase_started", p),
                               _event(chain, "phase_ended", p, end="investigation ends")])
    assert phases[0].findings == ["no notice to the party recorded (Art. 7)"]


def test_a_phase_with_its_notice_and_end_has_no_finding(chain: RecordChain) -> None:
    p = {"row": 4, "case": "C-1", "officer": "O-1"}
    phases = timeline.rebuild([_event(chain, "phase_started", p),
                               _event(chain, "notice_given", p),
                               _event(chain, "phase_ended", p, end="investigation ends")])
    assert phases[0].findings == [] and phases[0].notice_given


# -- the envelope's shape and the manifest's ranges (protocol/cose.py, protocol/manifest.py) -----
def _envelope(protected: Any, unprotected: Any, payload: Any, sig: Any = bytes(64)) -> bytes:
    return cbor.encode(cbor.Tag(cose.TAG_SIGN1, [protected, unprotected, payload, sig]))


T0 = 1_700_000_000_000_000
_PROTECTED = cbor.encode({cose.HDR_ALG: cose.ALG_EDDSA})
_KID = {cose.HDR_KID: bytes(16)}


@pytest.mark.parametrize("data, why", [
    (_envelope(_PROTECTED, _KID, "a text payload"), "must be byte strings"),
    (_envelope(7, _KID, b"payload"), "must be byte strings"),
    (_envelope(_PROTECTED, {}, b"payload"), "must carry a kid"),
    (_envelope(_PROTECTED, {cose.HDR_KID: "text kid"}, b"payload"), "must carry a kid"),
    (_envelope(_PROTECTED, [bytes(16)], b"payload"), "must carry a kid"),
])
def test_an_envelope_of_the_wrong_shape_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(cose.CoseError, match=why):
        cose.parse_sign1(data)


def test_a_signed_payload_that_is_not_cbor_is_a_cose_error(chain: RecordChain) -> None:
    record = cose.sign1(b"\xff not cbor", chain.kid, chain.private_key.sign)
    with pytest.raises(cose.CoseError, match="payload"):
        cose.open_sign1(record, chain.public_key,
                        lambda pub, msg, sig: chain.private_key.public_key().verify(sig, msg)
                        is None)


def test_the_key_id_is_the_first_16_bytes_of_the_key_s_sha256(chain: RecordChain) -> None:
    # What the recorder puts in `kid` (README: Signed records); a vault computing it otherwise
    # would take every record for a stranger's.
    from protocol import authority

    assert evidence.key_id(chain.public_key) == hashlib.sha256(chain.public_key).digest()[:16]
    assert evidence.key_id(chain.public_key) == authority.key_id(chain.public_key)


@pytest.mark.parametrize("change, ok", [
    ({"seq": 0}, False),
    ({"seq": 1}, True),
    ({"prev": bytes(31)}, False),
    ({"sha256": bytes(31)}, False),
    ({"size": -1}, False),
    ({"size": 0}, True),
    ({"t_end": T0, "t_start": T0}, True),
    ({"t_end": T0 - 1, "t_start": T0}, False),
])
def test_manifest_ranges(chain: RecordChain, change: dict[str, Any], ok: bool) -> None:
    fields = chain.segment_fields(b"", **change)
    if ok:
        assert manifest.check(fields) is fields
    else:
        with pytest.raises(manifest.ManifestError, match="out of range|ends before"):
            manifest.check(fields)


# -- the ingest step's bounds and answers (host_agent/vault/ingest.py) -----------------------
def test_a_segment_the_disk_cannot_hold_is_refused_naming_the_room_it_needs(
        vault: Vault, chain: RecordChain) -> None:
    import re
    import shutil

    size = 1 << 50  # a signed size no disk here holds
    record, _ = chain.next_segment(b"", sha256=bytes(32), size=size)
    with pytest.raises(VaultError, match="vault disk full") as exc:
        vault.intake(DEVICE).examine(1, record, size)
    free, seg, needs = map(int, re.findall(r"(\d+) MiB", str(exc.value)))
    assert abs(free - (shutil.disk_usage(vault.root).free >> 20)) <= 16
    assert (seg, needs) == (size >> 20, (size >> 20) + 8)  # 8 MiB kept free beyond it


def test_a_suspect_record_brings_at_most_256_mib_of_data(
        vault: Vault, chain: RecordChain) -> None:
    record, _ = RecordChain(DEVICE).next_segment(b"x")  # a stranger's record
    plan = vault.intake(DEVICE).examine(1, record, 1 << 40)
    assert (plan.problem is not None, plan.fetch) == (True, 256 << 20)


def test_the_plan_notes_a_recorder_holding_other_than_the_signed_size(
        vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"12345")
    intake = vault.intake(DEVICE)
    assert intake.examine(1, record, 5).note == ""
    assert intake.examine(1, record, 3).note == "recorder holds 3 bytes, signed size 5"


def test_a_segment_whose_bytes_differ_from_the_signed_ones_twice_is_stored_its_data_aside(
        vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"exact")
    intake = vault.intake(DEVICE)
    plan = intake.examine(1, record, 7)  # the card holds 7 bytes; 5 were signed
    assert plan.fetch == 5
    for expected in ("reread", "stored"):
        with vault.incoming() as inc:
            inc.write(b"exacT")
            outcome = intake.conclude(plan, inc)
        assert outcome.status == expected
    assert (outcome.code, outcome.data_quarantined) == (evidence.HASH_MISMATCH, True)
    assert outcome.release  # the vault holds all the data the recorder signed


def test_a_clean_segment_has_no_data_quarantined(vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"clean")
    outcome = vault.intake(DEVICE).offer(1, record, b"clean")
    assert (outcome.status, outcome.data_quarantined, outcome.release) == ("stored", False, True)


def test_a_record_quarantined_incomplete_before_is_held_not_released(
        tmp_path: Path, chain: RecordChain) -> None:
    with Vault.open(tmp_path / "v") as v:
        v.enroll(DEVICE, chain.public_key, by="t")
        intake = ingest.Intake(v, DEVICE, chain.public_key, suspect_data_max=4)
        record, _ = RecordChain(DEVICE).next_segment(b"whatever")
        plan = intake.examine(1, record, 100)
        with v.incoming() as inc:
            inc.write(b"1234")
            intake.conclude(plan, inc)
        again = intake.conclude(intake.examine(1, record, 100), None)
    assert (again.status, again.release) == ("held", False)


def test_a_reread_releases_nothing(vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"exact")
    intake = vault.intake(DEVICE)
    plan = intake.examine(1, record, 5)
    with vault.incoming() as inc:
        inc.write(b"exacT")
        outcome = intake.conclude(plan, inc)
    assert (outcome.status, outcome.release) == ("reread", False)


def test_a_suspect_record_whose_data_did_not_all_arrive_is_not_released(
        vault: Vault, chain: RecordChain) -> None:
    record, _ = RecordChain(DEVICE).next_segment(b"0123456789")  # a stranger's record
    intake = vault.intake(DEVICE)
    plan = intake.examine(1, record, 10)
    with vault.incoming() as inc:
        inc.write(b"01234")  # the link went down half way
        outcome = intake.conclude(plan, inc)
    assert (outcome.status, outcome.release) == ("quarantined", False)


def test_a_suspect_record_whose_one_byte_did_not_arrive_is_not_released(
        vault: Vault, chain: RecordChain) -> None:
    record, _ = RecordChain(DEVICE).next_segment(b"0")
    intake = vault.intake(DEVICE)
    outcome = intake.conclude(intake.examine(1, record, 1), None)
    assert (outcome.status, outcome.release) == ("quarantined", False)


def test_a_negative_size_in_a_listing_counts_as_nothing_held(
        vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"12345")
    plan = vault.intake(DEVICE).examine(1, record, -5)
    assert (plan.stored, plan.fetch) == (0, 0)


def test_an_outcome_names_its_chain_break_only_when_there_is_one(
        vault: Vault, chain: RecordChain) -> None:
    intake = vault.intake(DEVICE)
    clean = intake.offer(1, chain.next_segment(b"1")[0], b"1")
    chain.next_segment(b"2")  # lost
    broken = intake.offer(3, chain.next_segment(b"3")[0], b"3")
    assert "chain_break" not in clean.to_dict()
    assert broken.to_dict()["chain_break"] == "records 2..2 are not in this vault"


@pytest.mark.parametrize("device_id, key, why", [
    (1234, bytes(32), "is not 1-64 of"),
    ("SIM-NEW", bytes(31), "32 bytes"),
    ("SIM-NEW", "0" * 32, "32 bytes"),
])
def test_enrolment_takes_a_device_id_and_a_32_byte_key_only(
        vault: Vault, device_id: Any, key: Any, why: str) -> None:
    with pytest.raises(VaultError, match=why):
        vault.enroll(device_id, key, by="test")


def _segment(chain: RecordChain, phase: dict[str, Any], seconds: int) -> dict[str, Any]:
    chain.seq += 1
    start = chain.t_us
    chain.t_us += seconds * 1_000_000
    return {"kind": "segment", "seq": chain.seq, "t_start": start, "t_end": chain.t_us,
            "phase": phase}


def _gap(chain: RecordChain, phase: dict[str, Any]) -> dict[str, Any]:
    chain.seq += 1
    return {"kind": "gap", "seq": chain.seq, "cause": "power_loss", "t_last": chain.t_us,
            "t_boot": chain.t_us + 5, "last_seq": chain.seq - 1, "phase": phase}


def test_a_phase_collects_its_segments_time_and_gaps(chain: RecordChain) -> None:
    p = {"row": 4, "case": "C-1", "officer": "O-1"}
    other = {"row": 5, "case": "C-0", "officer": "O-1"}
    records = [_event(chain, "bookmark", {}),  # before any phase: belongs to none
               _segment(chain, {}, 7),
               _event(chain, "phase_started", p), _event(chain, "notice_given", p),
               _segment(chain, p, 10), _gap(chain, p), _segment(chain, p, 5),
               _segment(chain, other, 3), _gap(chain, other),  # a phase this chain never began
               _event(chain, "phase_ended", p, end="investigation ends")]
    [phase] = timeline.rebuild(records)
    assert phase.segments == [5, 7]
    assert phase.recorded_us == 15_000_000
    assert [g["seq"] for g in phase.gaps] == [6]
    assert phase.findings == ["recording broke: power_loss (gap record 6)"]
    assert [e["event"] for e in phase.events] == ["notice_given", "phase_ended"]


def test_a_protected_header_that_is_not_cbor_is_a_cose_error() -> None:
    with pytest.raises(cose.CoseError, match="protected header: truncated"):
        cose.parse_sign1(_envelope(b"", _KID, b"payload"))


def test_a_plan_to_take_a_record_the_vault_lacks_names_no_log_entry(
        vault: Vault, chain: RecordChain) -> None:
    record, _ = chain.next_segment(b"new")
    plan = vault.intake(DEVICE).examine(1, record, 3)
    assert (plan.action, plan.log_index) == ("take", -1)


def test_an_event_whose_stray_data_was_cut_at_the_suspect_limit_is_stored_not_released(
        tmp_path: Path, chain: RecordChain) -> None:
    with Vault.open(tmp_path / "v") as v:
        v.enroll(DEVICE, chain.public_key, by="t")
        intake = ingest.Intake(v, DEVICE, chain.public_key, suspect_data_max=4)
        record = chain.sign(_event(chain, "bookmark", {}))
        outcome = intake.offer(1, record, b"0123456789")  # only 4 of the 10 bytes are taken
    assert (outcome.status, outcome.data_quarantined, outcome.release) == ("stored", True, False)
