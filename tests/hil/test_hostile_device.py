"""A dock no device can hang or flood: the hostile recorder (tests/hil/hostile.py) on a real pty
against the real dock session and vault.

Each misbehaviour must end in a bounded time with a clear SessionError (or a normal docking
that takes only what the signed records allow), with nothing released that the vault does not
hold and nothing piled up in the vault's tmp/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from host_agent.dock.session import DeviceError, DockSession, SessionError
from host_agent.transport.serial import SerialTransport
from host_agent.vault import Vault
from protocol import messages
from protocol.manifest import record_hash
from tests.factories import RecordChain
from tests.hil.conftest import lab
from tests.hil.hostile import HostileRecorder

pytestmark = pytest.mark.simulator


@contextmanager
def hostile(tmp_path: Path) -> Iterator[tuple[HostileRecorder, DockSession]]:
    unit, identity = lab(tmp_path)
    rec = HostileRecorder(RecordChain("SIM-HOSTILE"), unit.public)
    rec.start()
    transport = SerialTransport(rec.port)
    transport.open()
    try:
        with Vault.open(tmp_path / "vault") as vault:
            session = DockSession(transport, vault, identity, enroll_unknown=True, timeout=0.5)
            session.identify(wait=5)
            yield rec, session
    finally:
        transport.close()
        rec.close()


def tmp_files(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "vault" / "tmp").iterdir())


def test_the_same_chunk_forever_ends_in_a_clear_error(tmp_path: Path) -> None:
    """A device that answers every read with the chunk at offset 0, again and again."""
    with hostile(tmp_path) as (rec, session):
        rec.add_segment(b"x" * 100_000)

        def same_chunk(req: dict) -> list[bytes]:
            return [messages.encode_data(req["seq"], 0, b"x" * 32768)] * 200

        rec.on_read = same_chunk
        t0 = time.monotonic()
        with pytest.raises(SessionError, match="not asked for|giving up"):
            session.offload()
        assert time.monotonic() - t0 < 30
        assert session.vault.records("SIM-HOSTILE") == []
        assert not [r for r in rec.requests if r["t"] == "release"]
    assert tmp_files(tmp_path) == []


def test_a_terabyte_claim_fetches_only_the_signed_size(tmp_path: Path) -> None:
    with hostile(tmp_path) as (rec, session):
        rec.add_segment(b"y" * 5000, stored=10**12)
        asked = []

        def only_what_exists(req: dict) -> list[bytes]:
            asked.append((req["offset"], req["length"]))
            data = b"y" * 5000 + b"z" * (1 << 20)  # more bytes than signed sit on the card
            part = data[req["offset"]:req["offset"] + req["length"]]
            return [messages.encode_data(req["seq"], req["offset"], part),
                    rec.msg("read_done", rid=req["rid"], seq=req["seq"], offset=req["offset"],
                            length=len(part))]

        rec.on_read = only_what_exists
        off = session.offload()
    assert off.stored == [1] and off.released == [1]
    assert max(o + n for o, n in asked) <= 5000  # never asked beyond the signed size
    assert off.bytes == 5000
    assert tmp_files(tmp_path) == []


def test_a_listing_that_never_ends_or_lies_is_refused(tmp_path: Path) -> None:
    with hostile(tmp_path) as (rec, session):
        seq = rec.add_segment(b"z" * 10)
        record = rec.records[seq][0]
        good = {"seq": 1, "record_sha256": record_hash(record), "size": len(record),
                "stored": 10}
        rec.on_list = lambda req: [rec.msg("records", rid=req["rid"], more=True, items=[good])]
        with pytest.raises(SessionError, match="goes back"):
            session.offload()
        for item, why in (({**good, "seq": "1"}, "seq"),
                          ({**good, "stored": -5}, "stored"),
                          ({**good, "size": 10**9}, "size"),
                          ({**good, "record_sha256": b"short"}, "record_sha256"),
                          ({"seq": 1, "stored": 1}, "record_sha256"),
                          ("not a map", "item")):
            rec.on_list = lambda req, item=item: [rec.msg("records", rid=req["rid"],
                                                           items=[item], more=False)]
            with pytest.raises(SessionError, match=f"malformed: {why}"):
                session.offload()
        # a listing whose record, once read, is not the one it named
        rec.on_list = lambda req: [rec.msg("records", rid=req["rid"], more=False, items=[
            {**good, "record_sha256": bytes(32)}])]
        with pytest.raises(SessionError, match="not the one it listed"):
            session.offload()


def test_a_device_that_stalls_mid_download_is_given_up_in_bounded_time(tmp_path: Path) -> None:
    with hostile(tmp_path) as (rec, session):
        rec.add_segment(b"w" * 100_000)
        rec.on_read = lambda req: []  # silence
        t0 = time.monotonic()
        with pytest.raises(SessionError, match="stalled"):
            session.offload()
        assert time.monotonic() - t0 < 10  # 0.5 s per try, 7 tries
        assert not [r for r in rec.requests if r["t"] == "release"]


def test_a_device_that_never_runs_what_it_staged_is_given_up_in_bounded_time(
        tmp_path: Path) -> None:
    """It ignores a large request, acknowledges every staged part, then answers each `run`
    with not_staged: the dock stages it again once (a recorder may have lost its buffer),
    then gives up naming why, instead of staging for ever."""

    def liar(req: dict[str, Any]) -> list[bytes] | None:
        if req["t"] == "policy_set":
            return []  # silence: the dock will stage it
        if req["t"] == "stage":
            return [rec.msg("staged", rid=req["rid"], sid=req["sid"], offset=req["offset"],
                            length=len(req["data"]))]
        if req["t"] == "run":
            return [rec.msg("error", rid=req["rid"], code=messages.E_NOT_STAGED, detail="no")]
        return None

    with hostile(tmp_path) as (rec, session):
        rec.on_request = liar
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="not_staged"):
            session.request("policy_set", policy=b"p" * 1000)
        assert time.monotonic() - t0 < 10
        runs = [r for r in rec.requests if r["t"] == "run"]
        assert len(runs) == 2 and session.exchange.staged == 2
