"""Docking over a bad cable: throttled, noisy, lossy and slow lines between device and dock.

The null modem's relay damages the line (host_agent.lab.nullmodem.Impairment); the dock must
still store every segment exactly once and free nothing it does not hold. Rates are not
asserted here (CI machines are noisy): tools/bench.py measures them.
"""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

import pytest

from host_agent.dock.session import dock
from host_agent.lab.nullmodem import Impairment, NullModem
from host_agent.vault import Vault
from tests.hil.conftest import device_records, docked

pytestmark = pytest.mark.simulator

SMALL = dict(segments=2, segment_ms=100, bitrate=8_000_000)  # 2 × 100 KB


def _pipe_through(modem: NullModem, data: bytes, timeout: float = 10.0) -> bytes:
    """Write `data` into the device end, return what comes out of the host end."""
    dev = os.open(modem.device_path, os.O_RDWR | os.O_NOCTTY)
    host = os.open(modem.host_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    writer = threading.Thread(target=os.write, args=(dev, data))  # a tty takes it in pieces
    writer.start()
    try:
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([host], [], [], 0.3)[0]:
                out += os.read(host, 1 << 16)
            elif len(out) + modem.up.dropped >= len(data):
                break
        return bytes(out)
    finally:
        writer.join()
        os.close(dev)
        os.close(host)


def test_clean_line_carries_bytes_unchanged() -> None:
    data = os.urandom(200_000)
    with NullModem() as modem:
        assert _pipe_through(modem, data) == data
        assert modem.bytes_up == len(data)


def test_damage_is_reproducible_from_the_seed() -> None:
    data = bytes(range(256)) * 400
    imp = Impairment(flip_rate=1e-3, drop_rate=1e-3, seed=42)
    outs = []
    for _ in range(2):
        with NullModem(up=imp) as modem:
            outs.append(_pipe_through(modem, data))
            flipped, dropped = modem.up.flipped, modem.up.dropped
        assert 40 < flipped < 180 and 40 < dropped < 180  # ~102 each expected
        assert len(outs[-1]) == len(data) - dropped
    assert outs[0] == outs[1] != data


def test_throttled_line_paces_to_its_rate() -> None:
    data = os.urandom(46_080)  # half a second at 921600 baud, 8N1
    with NullModem(up=Impairment.uart(921600)) as modem:
        t0 = time.monotonic()
        out = _pipe_through(modem, data)
        seconds = time.monotonic() - t0
    assert out == data
    assert seconds >= 0.45  # never faster than the line (a lower bound is not a benchmark)


def test_offload_over_a_921600_baud_uart(tmp_path: Path) -> None:
    with docked(tmp_path, up=Impairment.uart(921600), down=Impairment.uart(921600),
                segments=1, segment_ms=100, bitrate=4_000_000) as (rec, session):
        report = dock(session)
        assert device_records(rec) == []
    assert report.offload["stored"] == [1, 2] and report.offload["quarantined"] == []
    # (the segment, then the signed clock step)


@pytest.mark.parametrize("imp", [
    # ~8e-6 per byte loses about one 32 KB chunk in four; the seeds put the first hit within
    # the first 100 KB (the positions depend only on the seed and the byte count).
    Impairment(flip_rate=8e-6, seed=7),
    Impairment(drop_rate=8e-6, seed=10),
    Impairment(flip_rate=8e-6, drop_rate=8e-6, latency_s=0.002, seed=6),
], ids=["flips", "drops", "flips+drops+latency"])
def test_damaged_device_to_host_line_loses_nothing(tmp_path: Path, imp: Impairment) -> None:
    with docked(tmp_path, up=imp, **SMALL) as (rec, session):
        session.timeout = 0.5
        report = dock(session)
        damaged = rec.modem.up.flipped + rec.modem.up.dropped
        assert device_records(rec) == []
    off = report.offload
    # the segments, then the signed clock step
    assert off["stored"] == [1, 2, 3] and off["released"] == [1, 2, 3]
    assert off["quarantined"] == []
    # the damage happened, and what it cost was asked for again
    assert damaged > 0 and off["repeats"] + off["resumed_reads"] > 0
    with Vault.open(tmp_path / "vault", create=False) as vault:
        assert vault.verify() == []


def per_bit(ber: float, seed: int) -> Impairment:
    """A line that flips bits at this rate: one flipped bit in a byte with probability ~8·BER."""
    return Impairment(flip_rate=1.0 - (1.0 - ber) ** 8, seed=seed)


@pytest.mark.parametrize("ber, seed", [(1e-5, 1), (1e-5, 2), (1e-4, 3), (1e-4, 4)])
def test_one_docking_through_a_line_damaged_both_ways_stores_everything(
        tmp_path: Path, ber: float, seed: int) -> None:
    """Bits flipped in both directions (requests and answers, clock pings and handshake
    included), and no second try: one `dock()` call stores and frees every record."""
    with docked(tmp_path, up=per_bit(ber, seed), down=per_bit(ber, seed + 100),
                segments=2, segment_ms=200, bitrate=4_000_000) as (rec, session):
        session.timeout = 0.5
        report = dock(session)
        left = device_records(rec)
        damaged = rec.modem.up.flipped + rec.modem.down.flipped
    off = report.offload
    assert damaged > 0
    assert off["stored"] == off["released"] and off["quarantined"] == [] and off["held"] == []
    assert off["stored"] == list(range(1, len(off["stored"]) + 1)) and off["segments"] == 2
    assert left == []
    if ber >= 1e-4:  # the chunk followed the line down from its 32 KiB
        assert off["line_ber"] > 1e-5 and off["repeats"] > 0
    with Vault.open(tmp_path / "vault", create=False) as vault:
        assert vault.verify() == []


def test_clock_sync_bound_holds_on_a_slow_asymmetric_line(tmp_path: Path) -> None:
    # 3 ms one way, none the other: the stated bound must still cover the true error.
    skew = 2_000_000
    with docked(tmp_path, up=Impairment(latency_s=0.003), segments=0, skew_us=skew,
                drift_ppm=0) as (rec, session):
        session.identify()
        sync = session.sync_clock()
    truth_after = skew + sync.stepped_us  # the sim clock is host time + skew (no drift)
    assert sync.bound_before_us >= 1500
    assert abs(truth_after) <= sync.bound_before_us
    assert abs(sync.offset_after_us - truth_after) <= sync.bound_after_us
