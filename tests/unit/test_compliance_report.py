"""The compliance report (Art. 11) finds what a supervisor must look at, and nothing else.

A world of recorders that did good and bad things, signed as recorders sign them, stored
through the vault's ingest step; the report must flag each seeded fault on the right
recorder, officer and case, and must not flag the clean phase."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host_agent.custody import report, times
from host_agent.custody.recorders import Recorders
from tests.custody_world import CASE, OFFICER, UNSET, World

HOUR_US = 3_600_000_000


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def codes(r: dict[str, Any], device: str | None = None) -> list[str]:
    return [f["code"] for f in r["findings"] if device in (None, f["device"])]


def test_every_seeded_fault_is_flagged_and_the_clean_phase_is_not(world: World) -> None:
    now = times.now_us()
    clean = world.recorder("REC-CLEAN")
    clean.t_us = now - HOUR_US
    world.phase("REC-CLEAN", case="CLEAN-1")
    world.docking("REC-CLEAN", offset_before_us=900)

    bad = world.recorder("REC-BAD")
    bad.t_us = now - 48 * HOUR_US  # offloaded two days after it recorded
    world.phase("REC-BAD", gap="power_loss", refuse="pause")
    world.phase("REC-BAD", case="NO-SEG", segments=0)
    world.phase("REC-BAD", case="NO-NOTICE", notice=False, override=True)
    world.docking("REC-BAD", offset_before_us=2_500_000)  # drifted 2.5 s
    world.docking("REC-BAD", ready=False, reasons=["backup battery 12% < 50%"])

    unset = world.recorder("REC-UNSET", clock=UNSET)
    unset.t_us = now - HOUR_US
    world.phase("REC-UNSET", case="UNSET-1")
    world.docking("REC-UNSET")

    r = report.build(world.vault, report.Scope())
    assert codes(r, "REC-CLEAN") == []
    bad_codes = codes(r, "REC-BAD")
    for code in ("gap_in_phase", "no_segment", "refused", "no_notice", "late_offload",
                 "clock_drift", "battery_override", "readiness_failed"):
        assert code in bad_codes, code
    assert codes(r, "REC-UNSET") == ["clock_never_set"]

    by_code = {f["code"]: f for f in r["findings"]}
    assert by_code["gap_in_phase"]["case"] == CASE
    assert by_code["gap_in_phase"]["officer"] == OFFICER
    assert "power_loss" in by_code["gap_in_phase"]["detail"]
    assert by_code["refused"]["detail"].startswith("pause refused")
    assert by_code["no_segment"]["case"] == "NO-SEG"
    assert by_code["no_notice"]["case"] == "NO-NOTICE"
    assert by_code["battery_override"]["case"] == "NO-NOTICE"  # the phase it let start
    assert "12%" in by_code["readiness_failed"]["detail"]
    assert "clock off by 2.5 s" in by_code["clock_drift"]["detail"]
    assert r["counts"]["by_device"]["REC-BAD"] == len(bad_codes)
    # coverage and drift are there for the charts
    phase = next(p for p in r["phases"] if p["device"] == "REC-BAD" and p["case"] == CASE)
    assert phase["gaps"] and len(phase["segments"]) == 2 and 0 < phase["coverage"] < 1
    assert [d["offset_us"] for d in r["drift"]["REC-BAD"]] == [2_500_000, 1500]


def test_filters_by_case_officer_device_and_period(world: World) -> None:
    now = times.now_us()
    chain = world.recorder("REC-1")
    chain.t_us = now - HOUR_US
    world.phase("REC-1", case="A-1", officer="O-1", notice=False)
    world.phase("REC-1", case="B-2", officer="O-2", notice=False)
    world.docking("REC-1")
    everything = report.build(world.vault, report.Scope())
    assert sorted(f["case"] for f in everything["findings"]) == ["A-1", "B-2"]
    assert [f["case"] for f in report.build(world.vault, report.Scope(case="A-1"))[
        "findings"]] == ["A-1"]
    assert [f["officer"] for f in report.build(world.vault, report.Scope(officer="O-2"))[
        "findings"]] == ["O-2"]
    assert report.build(world.vault, report.Scope(device="REC-2"))["findings"] == []
    later = report.build(world.vault, report.Scope(start_us=now))
    assert later["findings"] == [] and later["phases"] == []


def test_not_docked_for_days_and_never_docked(world: World) -> None:
    world.recorder("REC-OLD")
    world.docking("REC-OLD")
    world.recorder("REC-NEVER")
    soon = report.build(world.vault, report.Scope())
    assert "not_docked" not in codes(soon, "REC-OLD")
    assert "not_docked" in codes(soon, "REC-NEVER")
    later = report.build(world.vault, report.Scope(as_of_us=times.now_us() + 8 * 24 * HOUR_US))
    assert "not_docked" in codes(later, "REC-OLD")


def test_foreign_files_and_full_card_at_docking(world: World) -> None:
    world.recorder("REC-1")
    world.docking("REC-1", status={"health": {"faults": [], "foreign": ["/sd/x.exe"],
                                              "storage_full": True}})
    got = codes(report.build(world.vault, report.Scope()), "REC-1")
    assert "foreign_files" in got and "storage_full" in got


def test_a_phase_recorded_by_someone_the_recorder_was_not_issued_to(world: World) -> None:
    chain = world.recorder("REC-1")
    world.docking("REC-1")
    Recorders(world.vault).issue("REC-1", "4501-0001", by="desk")
    chain.t_us = times.now_us() + 1_000_000  # recorded after the issue
    world.phase("REC-1", officer="4501-0999")
    world.phase("REC-1", officer="4501-0001", case="OK-1")
    flagged = [f for f in report.build(world.vault, report.Scope())["findings"]
               if f["code"] == "other_officer"]
    assert len(flagged) == 1
    assert flagged[0]["officer"] == "4501-0999" and "issued to 4501-0001" in flagged[0]["detail"]
