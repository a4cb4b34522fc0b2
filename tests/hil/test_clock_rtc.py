"""The recorder's clock across restarts, end to end: the simulated board's RTC keeps the dock's
setting through a power-off as an RTC with a good backup cell does (SimConfig.rtc_lost False),
and when that cell went flat (rtc_lost True) it restarts at 2000-01-01, as a real RTC restarts
at its reset value. Records signed then say "unset" (device/clock.py: a clock reading earlier
than its last sync lost it), until the next docking's step; then "synced" again.

Before: the simulated clock started at --skew-us at every boot (the dock's correction lost at
every restart), and a record signed on a clock at 2000-01-01 said "synced".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from host_agent.dock.session import dock
from host_agent.vault import Vault
from tests.hil.conftest import docked

pytestmark = pytest.mark.simulator

S = 1_000_000
Y2K_US = 946_684_800 * S
READY = "ready for the dock"
BOOT = dict(segments=1, segment_ms=200, bitrate=1_000_000, drift_ppm=20)


def boot_and_dock(tmp_path: Path, vault: Vault, **config: Any) -> tuple[dict[str, Any], list]:
    """Boot the recorder on its card (a restart after the first), let it record a segment,
    dock it; returns the docking's clock figures and the records it stored."""
    log = tmp_path / "rec.log"  # one log for every boot of the card: count this boot's line
    ready = log.read_text(errors="replace").count(READY) if log.exists() else 0
    with docked(tmp_path, vault=vault, **{**BOOT, **config}) as (rec, session):
        deadline = time.monotonic() + 30
        while rec.log_text().count(READY) <= ready:
            assert time.monotonic() < deadline, rec.log_text()[-2000:]
            time.sleep(0.01)
        report = dock(session)
    stored = [r for r in vault.records(report.device_id) if r["seq"] in report.offload["stored"]]
    return report.clock, stored


def test_the_rtc_keeps_its_setting_and_a_lost_one_signs_unset_until_docked(
        tmp_path: Path) -> None:
    with Vault.open(tmp_path / "vault") as vault:
        # First boot: never synced, 3 s behind. The segment says so; the dock's step is a sync.
        clock, recs = boot_and_dock(tmp_path, vault, skew_us=-3 * S)
        assert [(r["kind"], r["clock_state"]) for r in recs] == [
            ("segment", "unset"), ("event", "synced")]
        assert abs(clock["offset_before_us"] + 3 * S) < 200_000

        # Restart, good cell: the RTC kept the dock's setting (not 3 s behind again).
        clock, recs = boot_and_dock(tmp_path, vault, skew_us=-3 * S)
        assert recs[0]["kind"] == "segment" and recs[0]["clock_state"] == "synced"
        assert abs(clock["offset_before_us"]) < 100_000, clock

        # Restart, the cell went flat while off: the RTC restarts at 2000-01-01. The segment
        # signed before the docking says unset, at its 2000 time; the dock's step syncs it.
        y2k_skew = Y2K_US - time.time_ns() // 1000
        clock, recs = boot_and_dock(tmp_path, vault, skew_us=y2k_skew, rtc_lost=True)
        assert [(r["kind"], r["clock_state"]) for r in recs] == [
            ("segment", "unset"), ("event", "synced")]
        assert abs(recs[0]["t_start"] - Y2K_US) < 60 * S  # the time it was signed with
        assert abs(clock["offset_before_us"] - y2k_skew) < 60 * S

        # Restart, the cell good again: synced, the RTC still on the last docking's setting.
        clock, recs = boot_and_dock(tmp_path, vault, skew_us=y2k_skew)
        assert recs[0]["kind"] == "segment" and recs[0]["clock_state"] == "synced"
        assert abs(clock["offset_before_us"]) < 100_000, clock
        assert vault.verify() == []
