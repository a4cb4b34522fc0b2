"""Mandated continuous phases (annex rows 3–15) enforced inside the MicroPython recorder,
proved afterwards from the signed chain the dock offloads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from host_agent.dock.session import DeviceError, SessionError, dock
from host_agent.keys import UnitKey
from host_agent.lab.simulator import SimConfig, SimulatedRecorder
from host_agent.vault import Vault, timeline
from protocol import policy
from tests.hil.conftest import docked, lab

LIVE = dict(segments=0, segment_ms=400, bitrate=1_000_000)
RECORDER_ROWS = [r for r in policy.annex()["rows"] if r["recorder"] == "recorder"]


def records(vault: Vault, device_id: str) -> list[dict]:
    return timeline.load_records(vault, device_id)


def events(recs: list[dict], name: str | None = None) -> list[dict]:
    return [r for r in recs if r["kind"] == "event" and (name is None or r["event"] == name)]


def test_every_annex_row_refuses_interruption_until_its_end_trigger(tmp_path: Path) -> None:
    assert [r["no"] for r in RECORDER_ROWS] == list(range(3, 16))
    with docked(tmp_path, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        for row in RECORDER_ROWS:
            no = row["no"]
            assert rec.press(f"phase_start {no} CASE-{no} OFFICER-7") == "phase_start -> phase"
            rec.press("notice whole process recorded")
            for action in ("pause", "stop", "mute"):
                answer = rec.press(action)
                assert answer.startswith(f"{action} refused: row {no} "), answer
            assert "refused" in rec.press("end_request not the trigger")
            assert rec.press(f"end_request {row['end']}") == "end_request -> confirm_end"
            assert rec.press("end_confirm") == "end_confirm -> recording"
        assert rec.press("stop") == "stop -> idle"  # outside any phase, stop works
        rec.wait_for("indicator: idle\n")
        report = dock(session)
    assert report.offload["quarantined"] == []
    phases = {p["row"]: p for p in report.phases}
    assert sorted(phases) == list(range(3, 16))
    for row in RECORDER_ROWS:
        p = phases[row["no"]]
        assert p["case"] == f"CASE-{row['no']}" and p["notice_given"], p
        assert p["ended_us"] and p["end_trigger"] == row["end"]
        refused = [e["detail"]["action"] for e in p["refusals"]]
        assert refused == ["pause", "stop", "mute", "end"], (row["no"], refused)
        assert p["segments"], "each phase is covered by its own segments"
        assert p["findings"] == []
    with Vault.open(tmp_path / "vault", create=False) as vault:
        by_case = vault.events(case_no="CASE-8")  # the index a report queries
    assert [e["name"] for e in by_case] == [
        "phase_started", "notice_given", "refused", "refused", "refused", "refused",
        "phase_ended"]
    assert by_case[0]["phase_row"] == 8 and by_case[0]["officer"] == "OFFICER-7"


def test_outside_a_phase_pause_stop_and_mute_work(tmp_path: Path) -> None:
    with docked(tmp_path, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        assert rec.press("record") == "record -> recording"
        time.sleep(0.3)
        assert rec.press("mute") == "mute -> recording"
        time.sleep(0.3)
        assert rec.press("pause") == "pause -> idle"
        assert rec.press("record") == "record -> recording"
        time.sleep(0.2)
        assert rec.press("stop") == "stop -> idle"
        rec.wait_for("indicator: idle\n")
        dock(session)
        recs = records(session.vault, session.identity.device_id)  # type: ignore[union-attr]
    assert events(recs, "refused") == []
    assert [e["detail"]["action"] for e in events(recs, "recording_stopped")] == ["pause", "stop"]
    segs = [r for r in recs if r["kind"] == "segment"]
    assert ["video"] in [s["tracks"] for s in segs]  # muted audio is on the record
    assert all(s["phase"] == {} for s in segs)


def test_power_loss_mid_phase_leaves_a_signed_gap_and_loses_nothing(tmp_path: Path) -> None:
    storage = tmp_path / "rec"
    cfg = SimConfig(**{**LIVE, "segment_ms": 5000})  # type: ignore[arg-type]
    rec = SimulatedRecorder(storage, cfg, tmp_path / "rec.log").start()
    try:
        rec.wait_for("ready for the dock")
        rec.press("phase_start 8 GXSL-SEIZ-9 4501-0001")
        rec.press("notice")
        time.sleep(1.5)  # well inside a 5 s segment
        rec.kill()  # kill -9: the battery falls out
    finally:
        rec.stop()
    part = storage / "rec" / "current.part"
    assert part.stat().st_size > 0
    with docked(tmp_path, name="rec", **LIVE) as (rec2, session):  # reboot on the same card
        rec2.wait_for("ready for the dock")  # boot recovery signs before the dock is served
        assert rec2.press("end_request signature completed") == "end_request -> confirm_end"
        rec2.press("end_confirm")
        rec2.press("stop")
        rec2.wait_for("indicator: idle\n")
        report = dock(session)
        recs = records(session.vault, report.device_id)
        assert session.vault.verify() == []
    seqs = [r["seq"] for r in recs]
    assert seqs == list(range(1, len(seqs) + 1))  # the chain is unbroken
    salvaged = [r for r in recs if r["kind"] == "segment" and r["truncated"]]
    assert len(salvaged) == 1 and salvaged[0]["size"] >= part_size_floor(1.0)
    (gap,) = [r for r in recs if r["kind"] == "gap"]
    assert gap["cause"] == "power_loss" and gap["phase"]["row"] == 8
    assert gap["last_seq"] == salvaged[0]["seq"]
    assert events(recs, "phase_resumed")[0]["detail"]["after_gap"] == gap["seq"]
    (phase,) = report.phases
    assert phase["row"] == 8 and phase["ended_us"]
    assert phase["findings"] == [f"recording broke: power_loss (gap record {gap['seq']})"]
    assert not list((storage / "rec").glob("*.cose"))  # all offloaded and released


def part_size_floor(seconds: float) -> int:
    return int(LIVE["bitrate"] / 8 * seconds * 0.5)


def sign_policy(unit: UnitKey, doc: dict) -> bytes:
    return policy.sign(doc, unit.kid, unit.sign)


def refined(version: int = 2, **thresholds: int) -> dict:
    doc = policy.annex()
    doc["version"] = version
    doc["unit"] = "Nanning water enforcement detachment"
    doc["thresholds"].update(thresholds)
    doc["rows"].append({"no": 101, "matter": "inspection", "stage": "river patrol",
                        "records": "patrol", "start": "patrol starts", "end": "patrol ends",
                        "recorder": "recorder", "continuous": True})
    return doc


def test_unit_signed_policy_is_adopted_and_named_in_later_records(tmp_path: Path) -> None:
    unit, _ = lab(tmp_path)
    with docked(tmp_path, **LIVE) as (rec, session):
        report = dock(session, policy_file=sign_policy(unit, refined(main_floor_pct=35)))
        assert report.policy == {"adopted": "gx-water-2019/2"}
        assert rec.press("phase_start 101 PATROL-1 4501-0002") == "phase_start -> phase"
        assert "refused" in rec.press("stop")
        rec.press("end_request patrol ends")
        rec.press("end_confirm")
        rec.press("stop")
        rec.wait_for("indicator: idle\n")
        again = dock(session)
        recs = records(session.vault, report.device_id)
    assert events(recs, "policy_adopted")[0]["detail"] == {"policy": "gx-water-2019/2"}
    assert again.phases[0]["row"] == 101
    later = [r for r in recs if r["seq"] > events(recs, "policy_adopted")[0]["seq"]]
    assert later and all(r["policy"] == "gx-water-2019/2" for r in later)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda unit, other: sign_policy(other, refined()), "does not verify with the unit key"),
        (lambda unit, other: b"\x00" * 40, "not a signed policy"),
        (lambda unit, other: sign_policy(unit, refined(version=1)), "not newer"),
        (lambda unit, other: _loosened(unit), "row 4 must stay a continuous"),
    ],
)
def test_bad_policies_are_rejected_and_the_old_one_stays(tmp_path, make, reason) -> None:
    unit, _ = lab(tmp_path)
    other = UnitKey.create(tmp_path / "another-unit")
    with docked(tmp_path, **LIVE) as (rec, session):
        session.identify()
        with pytest.raises(DeviceError, match=reason):
            session.push_policy(make(unit, other))
        status = session.request("get_status")
        assert status["policy"] == "gx-water-2019/1"
        assert "refused" in (rec.press("phase_start 4 C-1 O-1") and rec.press("stop"))
        rec.press("end_request investigation ends")
        rec.press("end_confirm")
        rec.press("stop")
        rec.wait_for("indicator: idle\n")
        dock(session)
        recs = records(session.vault, session.identity.device_id)  # type: ignore[union-attr]
    assert reason in events(recs, "policy_rejected")[0]["detail"]["reason"]


def _loosened(unit: UnitKey) -> bytes:
    # Signed by the right unit, but it would let officers stop during investigations.
    doc = refined()
    next(r for r in doc["rows"] if r["no"] == 4)["continuous"] = False
    from protocol import cbor, cose

    return cose.sign1(cbor.encode(doc), unit.kid, unit.sign)


def test_the_dock_releases_for_duty_by_the_unit_policy_s_thresholds(tmp_path: Path) -> None:
    """The unit raises the backup floor (Art. 4, 12): the same document the recorder adopts
    sets the dock's duty threshold, so an 88 % backup cell that the annex passes is held back."""
    unit, _ = lab(tmp_path)
    with docked(tmp_path, backup_pct=88, **LIVE) as (rec, session):
        plain = dock(session)
        assert plain.readiness["ready"], plain.readiness["reasons"]
        raised = dock(session, policy_file=sign_policy(unit, refined(backup_floor_pct=95)))
        status = session.request("get_status")
    assert raised.policy == {"adopted": "gx-water-2019/2"} == {"adopted": status["policy"]}
    assert not raised.readiness["ready"]
    assert raised.readiness["reasons"] == ["backup battery 88% < 95%"]


def test_an_uncommissioned_recorder_serves_no_dock(tmp_path: Path) -> None:
    """No unit key on the recorder: no dock can prove authority over it, so nothing is listed,
    freed, stepped or adopted; it waits to be commissioned."""
    unit, _ = lab(tmp_path)
    with docked(tmp_path, unit_key="", **LIVE) as (rec, session):
        with pytest.raises(SessionError, match="not commissioned"):
            session.identify()
        session.request("hello", proto=1, dock="any")
        with pytest.raises(DeviceError, match="unauthorized"):
            session.push_policy(sign_policy(unit, refined()))


def test_storage_reserve_refuses_casual_recording_but_not_a_mandated_phase(tmp_path) -> None:
    # 1 GiB card: below the annex's 2 GiB reserve from the start.
    with docked(tmp_path, capacity_mb=1024, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        assert rec.press("record").startswith("record refused: storage below the reserve")
        assert rec.press("phase_start 5 Q-1 O-9") == "phase_start -> phase"
        rec.press("end_request questioning ends")
        rec.press("end_confirm")
        rec.press("stop")
        rec.wait_for("indicator: idle\n")
        report = dock(session)
    assert report.phases[0]["row"] == 5 and report.phases[0]["segments"]


def test_a_phase_started_below_the_battery_floor_records_with_a_signed_override(tmp_path) -> None:
    with docked(tmp_path, main_pct=10, main_charging=False, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        assert rec.press("phase_start 6 H-1 O-3") == "phase_start -> phase"
        rec.press("end_request hearing ends")
        rec.press("end_confirm")
        rec.press("stop")
        rec.wait_for("indicator: idle\n")
        report = dock(session)
    (phase,) = report.phases
    assert phase["row"] == 6 and phase["segments"]  # the phase was recorded all the same
    with Vault.open(tmp_path / "vault", create=False) as vault:
        recs = records(vault, report.device_id)
    (override,) = events(recs, "low_battery_override")
    assert override["detail"] == {"pct": 10, "floor": 20}
    assert not report.readiness["ready"]


def test_pre_event_buffer_joins_the_recording(tmp_path: Path) -> None:
    with docked(tmp_path, pre_event_s=2, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        time.sleep(2.6)  # standby long enough to fill the buffer
        rec.press("record")
        time.sleep(0.2)
        rec.press("stop")
        rec.wait_for("indicator: idle\n")
        dock(session)
        recs = records(session.vault, session.identity.device_id)  # type: ignore[union-attr]
    first = next(r for r in recs if r["kind"] == "segment")
    assert 1500 <= first["pre_event_ms"] <= 3500
    assert first["size"] >= LIVE["bitrate"] // 8 * 1.5
