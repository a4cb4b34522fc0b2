"""A dock's authority, proved (protocol/authority.py), against the hostile peers on both ends.

The recorder is the real firmware in MicroPython on a pty, commissioned to the test's unit.
The hostile host speaks the wire protocol through pyserial like any dock, but holds no unit
certificate, or a forged proof, or a revoked one; the hostile device is a clone written here
in CPython that shows an enrolled recorder's public key without holding its private key.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from host_agent.dock.session import DeviceError, DockSession, SessionError, dock
from host_agent.keys import DockIdentity, UnitKey
from host_agent.lab.unit import lab_unit
from host_agent.transport.serial import SerialTransport
from host_agent.vault import Vault
from protocol import authority, messages, policy
from protocol.manifest import record_hash
from tests.factories import RecordChain
from tests.hil.conftest import device_records, docked, lab
from tests.hil.hostile import HostileRecorder

pytestmark = pytest.mark.simulator
LIVE = dict(segments=2, segment_ms=200, bitrate=1_000_000)


def hello(session: DockSession) -> dict:
    return session.request("hello", proto=1, dock="stranger")


def forged_receipt(signer: DockIdentity | UnitKey, device_id: str, seq: int, record: bytes,
                   dock_id: str = "test-dock") -> bytes:
    doc = authority.receipt(device_id, seq, record_hash(record), "stored", 1, dock_id)
    public = signer.public_key if isinstance(signer, DockIdentity) else signer.public
    return authority.sign_statement(doc, authority.key_id(public), signer.sign)


def test_a_host_without_a_certified_dock_can_neither_read_nor_free_nor_step_the_clock(
        tmp_path: Path) -> None:
    with docked(tmp_path, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        before = {p.name: p.read_bytes() for p in (rec.storage / "rec").iterdir()}
        ident = hello(session)
        status0 = session.request("get_status")  # status is for anyone: it frees nothing
        record = (rec.storage / "rec" / "00000001.cose").read_bytes()
        stranger = lab_unit(tmp_path / "stranger", "stranger-dock")[1]
        attempts = {
            "list": dict(from_seq=1, limit=64),
            "read": dict(seq=1, offset=0, length=1 << 20, chunk=32768),
            "release": dict(seq=1, manifest_sha256=record_hash(record),
                            receipt=forged_receipt(stranger, ident["device_id"], 1, record)),
            "ping": dict(t1=0),
            "clock_adjust": dict(delta_us=365 * 86_400_000_000, uncertainty_us=0),
            "head": dict(nonce=bytes(16)),
            "policy_set": dict(policy=b"\xd2\x84" + bytes(100)),
        }
        for mtype, fields in attempts.items():
            with pytest.raises(DeviceError) as info:
                session.request(mtype, **fields)
            assert info.value.code == messages.E_UNAUTHORIZED, mtype
        status1 = session.request("get_status")
        after = {p.name: p.read_bytes() for p in (rec.storage / "rec").iterdir()}
    assert after == before  # nothing freed, nothing changed
    assert status1["clock"] == status0["clock"] and status1["pending"] == status0["pending"]


def _auth(session: DockSession, ident: dict, identity: DockIdentity, cert: bytes | None = None,
          signer: DockIdentity | None = None) -> dict:
    nonce = os.urandom(16)
    cert = identity.cert if cert is None else cert
    proof = authority.dock_proof(ident["device_id"], ident["nonce"], nonce, cert)
    return session.request("auth", cert=cert, nonce=nonce, sig=(signer or identity).sign(proof))


def test_the_recorder_refuses_certificates_and_proofs_its_unit_did_not_make(
        tmp_path: Path) -> None:
    _, ours = lab(tmp_path)
    _, theirs = lab_unit(tmp_path / "other-unit", "test-dock")  # same name, another unit
    with docked(tmp_path, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        cases = {
            "not signed by this recorder's unit": dict(identity=theirs),
            "proof does not verify": dict(identity=ours, signer=theirs),  # our cert, their key
            "not a dock certificate": dict(identity=ours, cert=b"\xd2\x84\x40\xa0\x40\x40"),
        }
        for reason, kw in cases.items():
            ident = hello(session)
            with pytest.raises(DeviceError, match=reason) as info:
                _auth(session, ident, **kw)
            assert info.value.code == messages.E_UNAUTHORIZED
            with pytest.raises(DeviceError, match="unauthorized"):
                session.request("list", from_seq=1, limit=1)
            time.sleep(0.3)  # the recorder takes one handshake per 250 ms
        # A proof is bound to its nonce: replaying a good auth in a new session fails.
        ident = hello(session)
        nonce = os.urandom(16)
        proof = authority.dock_proof(ident["device_id"], ident["nonce"], nonce, ours.cert)
        sig = ours.sign(proof)
        assert session.request("auth", cert=ours.cert, nonce=nonce, sig=sig)["dock"] == "test-dock"
        hello(session)  # a new hello ends that session and makes a new nonce
        time.sleep(0.3)
        with pytest.raises(DeviceError, match="proof does not verify"):
            session.request("auth", cert=ours.cert, nonce=nonce, sig=sig)


def test_a_revoked_dock_is_refused(tmp_path: Path) -> None:
    unit, ours = lab(tmp_path)
    other = lab_unit(tmp_path / "pki", "dock-2")[1]  # a second dock of the same unit
    doc = policy.annex()
    doc["version"] = 2
    doc["revoked_docks"] = [authority.key_id(other.public_key).hex()]
    signed = policy.sign(doc, unit.kid, unit.sign)
    with docked(tmp_path, **LIVE) as (rec, session):
        assert dock(session, policy_file=signed).policy == {"adopted": "gx-water-2019/2"}
        transport = SerialTransport(rec.port)
        transport.open()
        try:
            with Vault.open(tmp_path / "vault") as vault:
                with pytest.raises(SessionError, match="revoked"):
                    DockSession(transport, vault, other).identify()
        finally:
            transport.close()


def test_a_release_frees_only_with_a_receipt_the_dock_signed_for_that_record(
        tmp_path: Path) -> None:
    unit, ours = lab(tmp_path)
    with docked(tmp_path, **LIVE) as (rec, session):
        ident = session.identify()  # waits until the recorder serves the dock
        record = (rec.storage / "rec" / "00000001.cose").read_bytes()
        h = record_hash(record)
        bad = {
            "signed by another key": forged_receipt(unit, ident.device_id, 1, record),
            "for another record": forged_receipt(ours, ident.device_id, 2, record),
            "for another recorder": forged_receipt(ours, "SIM-OTHER", 1, record),
            "by another dock name": forged_receipt(ours, ident.device_id, 1, record, "dock-x"),
        }
        for why, receipt in bad.items():
            with pytest.raises(DeviceError) as info:
                session.request("release", seq=1, manifest_sha256=h, receipt=receipt)
            assert info.value.code == messages.E_MISMATCH, why
            assert "00000001.cose" in device_records(rec), why
        good = forged_receipt(ours, ident.device_id, 1, record)
        assert session.request("release", seq=1, manifest_sha256=h, receipt=good)["seq"] == 1
        assert "00000001.cose" not in device_records(rec)


def test_each_clock_step_is_a_signed_event_naming_the_dock(tmp_path: Path) -> None:
    with docked(tmp_path, skew_us=3_000_000, **LIVE) as (rec, session):
        report = dock(session)
        events = session.vault.events(device_id=report.device_id)
    [step] = [e for e in events if e["name"] == "clock_stepped"]
    assert step["seq"] == report.clock["event"]
    detail = step["detail"]
    assert detail["dock"] == "test-dock"
    assert detail["delta_us"] == report.clock["stepped_us"]
    assert detail["uncertainty_us"] == report.clock["bound_before_us"]
    assert abs(detail["after_us"] - detail["before_us"] - detail["delta_us"]) < 50_000


# -- the hostile device: a clone -------------------------------------------------------------
def test_a_clone_showing_an_enrolled_recorders_key_is_refused(tmp_path: Path) -> None:
    unit, ours = lab(tmp_path)
    with docked(tmp_path, **LIVE) as (rec, session):
        real = session.identify()  # the real recorder is enrolled with its key
    # A recorder written in CPython that shows the enrolled recorder's id and public key but
    # holds only a key of its own, with which it signs its side of the handshake.
    clone = HostileRecorder(RecordChain(real.device_id), unit.public)
    clone.shown_key = real.public_key
    clone.start()
    transport = SerialTransport(clone.port)
    transport.open()
    try:
        with Vault.open(tmp_path / "vault") as vault:
            with pytest.raises(SessionError, match="did not prove it holds its key"):
                DockSession(transport, vault, ours).identify(wait=5)
            assert vault.records(real.device_id) == []
    finally:
        transport.close()
        clone.close()
