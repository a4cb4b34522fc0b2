"""Every request is safe to repeat: a request that changes state, sent again with the same rid
(as a dock does when the answer was lost on the line), gets the first answer again and is
applied once. The real firmware in MicroPython, spoken to through pyserial."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from host_agent.dock.session import DockSession, dock
from host_agent.vault import timeline
from protocol import authority, messages, policy
from protocol.manifest import record_hash
from tests.hil.conftest import device_records, docked, lab

pytestmark = pytest.mark.simulator
LIVE = dict(segments=1, segment_ms=200, bitrate=1_000_000, skew_us=0, drift_ppm=0)


def twice(session: DockSession, mtype: str, rid: int | None = None,
          **fields: Any) -> tuple[bytes, bytes]:
    """Send a request, then the very same request again (same rid); both raw answers."""
    answers = []
    rid = session.exchange.send(mtype, rid=rid, **fields)
    for again in (False, True):
        if again:
            session.exchange.send(mtype, rid=rid, **fields)
        while True:
            payload = session.transport.receive(5)
            assert payload is not None, f"no answer to {mtype}"
            kind, body = messages.parse_payload(payload)
            if kind == "msg" and body["rid"] == rid:
                answers.append(bytes(payload))
                break
    return answers[0], answers[1]


def chain_events(session: DockSession, device_id: str, name: str) -> list[dict[str, Any]]:
    return [r for r in timeline.load_records(session.vault, device_id)
            if r["kind"] == "event" and r["event"] == name]


def test_a_repeated_clock_step_steps_the_clock_once(tmp_path: Path) -> None:
    with docked(tmp_path, **LIVE) as (rec, session):
        ident = session.identify()
        first, again = twice(session, "clock_adjust", delta_us=3_000_000, uncertainty_us=7)
        assert again == first  # the same answer, the same event seq
        offset = session._measure(8)  # device − host, the sim clock runs on host time
        assert abs(offset.offset_us - 3_000_000) <= offset.bound_us + 2000
        dock(session)
        steps = [e for e in chain_events(session, ident.device_id, "clock_stepped")
                 if e["detail"]["delta_us"] == 3_000_000]
    assert len(steps) == 1


def test_a_repeated_release_frees_once_and_answers_the_same(tmp_path: Path) -> None:
    unit, identity = lab(tmp_path)
    with docked(tmp_path, **LIVE) as (rec, session):
        ident = session.identify()
        record = (rec.storage / "rec" / "00000001.cose").read_bytes()
        receipt = authority.sign_statement(
            authority.receipt(ident.device_id, 1, record_hash(record), "stored", 0,
                              identity.dock_id),
            authority.key_id(identity.public_key), identity.sign)
        first, again = twice(session, "release", seq=1, manifest_sha256=record_hash(record),
                             receipt=receipt)
        assert again == first and messages.parse_payload(first)[1]["t"] == "released"
        assert "00000001.cose" not in device_records(rec)
        kept = b"".join(p.read_bytes() for p in sorted(rec.storage.glob("receipts.*")))
    # The receipt was kept once: the repeat was answered from memory, not freed again.
    assert kept.count(receipt) == 1 and kept.count(b"RS") >= 1


def unit_policy(tmp_path: Path, version: int) -> bytes:
    """The annex as the lab's unit signs it, at `version`."""
    unit, _ = lab(tmp_path)
    doc = policy.annex()
    doc["version"] = version
    return policy.sign(doc, unit.kid, unit.sign)


def test_a_repeated_policy_is_adopted_once(tmp_path: Path) -> None:
    signed = unit_policy(tmp_path, version=2)
    with docked(tmp_path, **LIVE) as (rec, session):
        ident = session.identify()
        first, again = twice(session, "policy_set", policy=signed)
        assert again == first and messages.parse_payload(first)[1]["policy"] == "gx-water-2019/2"
        dock(session)
        adopted = chain_events(session, ident.device_id, "policy_adopted")
        rejected = chain_events(session, ident.device_id, "policy_rejected")
    assert len(adopted) == 1 and rejected == []  # not "not newer" on the repeat


def test_a_repeated_handshake_gets_the_same_proof(tmp_path: Path) -> None:
    _, identity = lab(tmp_path)
    with docked(tmp_path, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        hello = session.request("hello", once=True, proto=1, dock=identity.dock_id)
        nonce = os.urandom(16)
        proof = authority.dock_proof(hello["device_id"], hello["nonce"], nonce, identity.cert)
        first, again = twice(session, "auth", cert=identity.cert, nonce=nonce,
                             sig=identity.sign(proof))
        assert again == first and messages.parse_payload(first)[1]["t"] == "auth_ok"
        assert session.request("list", from_seq=1, limit=8)["items"]  # the session stands


def answer(session: DockSession, mtype: str, **fields: Any) -> dict[str, Any]:
    """One plain try of a request; its answer, an error included."""
    rid = session.exchange.send(mtype, **fields)
    while True:
        payload = session.transport.receive(5)
        assert payload is not None, f"no answer to {mtype}"
        kind, body = messages.parse_payload(payload)
        if kind == "msg" and body["rid"] == rid:
            return body


def test_a_staged_policy_run_twice_is_adopted_once(tmp_path: Path) -> None:
    """A request too large for the line goes in parts and is run by a small `run`: repeated,
    the run answers the same and the policy is adopted once."""
    signed = unit_policy(tmp_path, version=3)
    with docked(tmp_path, **LIVE) as (rec, session):
        ident = session.identify()
        rid = session.exchange.next_rid()
        payload = messages.encode_message(messages.make("policy_set", rid=rid, policy=signed))
        run = session.exchange._stage(rid, payload, give_up_at=float("inf"))
        assert len(payload) > 2 * 64  # went in several parts
        _, fields = messages.parse_payload(run)
        first, again = twice(session, "run", rid=rid, sha256=fields["sha256"])
        assert again == first and messages.parse_payload(first)[1]["policy"] == "gx-water-2019/3"
        dock(session)
        adopted = chain_events(session, ident.device_id, "policy_adopted")
    assert [e["detail"]["policy"] for e in adopted] == ["gx-water-2019/3"]


def test_a_run_runs_exactly_what_was_staged_under_its_rid(tmp_path: Path) -> None:
    """`run` names the staged request by its rid and hash: nothing staged, the right hash under
    another rid, or the right rid with another hash runs nothing; a second request staged
    under another rid (of the very same size) replaces the first."""
    with docked(tmp_path, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        ex = session.exchange
        session.request("hello", once=True, proto=1, dock="a stranger")
        nothing = answer(session, "run", rid=ex.next_rid(), sha256=os.urandom(32))
        assert (nothing["t"], nothing["code"]) == ("error", messages.E_NOT_STAGED)
        first, second = ex.next_rid(), ex.next_rid()
        requests = {rid: messages.encode_message(messages.make("get_status", rid=rid))
                 for rid in (first, second)}
        assert len(requests[first]) == len(requests[second])
        ex._stage(first, requests[first], give_up_at=float("inf"))
        for rid, digest in ((second, hashlib.sha256(requests[first]).digest()),
                            (first, hashlib.sha256(requests[second]).digest())):
            refused = answer(session, "run", rid=rid, sha256=digest)
            assert (refused["t"], refused["code"]) == ("error", messages.E_NOT_STAGED)
        ex._stage(second, requests[second], give_up_at=float("inf"))
        status = answer(session, "run", rid=second,
                        sha256=hashlib.sha256(requests[second]).digest())
        assert status["t"] == "status", status


def test_staging_takes_only_what_it_may(tmp_path: Path) -> None:
    """What a hostile host might stage: a part past the size it declared, a staged hello
    (which must be fresh), a request whose rid is not the run's, a data chunk, and before a
    dock proved its authority, a staged request that needs it."""
    with docked(tmp_path, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        ex = session.exchange
        session.request("hello", once=True, proto=1, dock="a stranger")
        rid = ex.next_rid()
        gated = messages.encode_message(messages.make("list", rid=rid, from_seq=1, limit=8))
        part = answer(session, "stage", sid=rid, total=len(gated), offset=len(gated) - 1,
                      data=b"xx")
        assert (part["t"], part["code"]) == ("error", messages.E_BAD_REQUEST)
        run = ex._stage(rid, gated, give_up_at=float("inf"))  # no authority yet: refused
        refused = answer(session, "run", rid=rid, sha256=messages.parse_payload(run)[1]["sha256"])
        assert (refused["t"], refused["code"]) == ("error", messages.E_UNAUTHORIZED)
        for what in ("hello", "another rid", "a data chunk"):
            rid = ex.next_rid()
            body = {"hello": messages.encode_message(
                        messages.make("hello", rid=rid, proto=1, dock="x")),
                    "another rid": messages.encode_message(
                        messages.make("get_status", rid=rid + 1)),
                    "a data chunk": messages.encode_data(1, 0, b"x" * 40)}[what]
            ex._stage(rid, body, give_up_at=float("inf"))
            bad = answer(session, "run", rid=rid, sha256=hashlib.sha256(body).digest())
            assert (bad["t"], bad["code"]) == ("error", messages.E_BAD_REQUEST), what
        assert session.identify().device_id  # and the recorder serves a true dock after all
