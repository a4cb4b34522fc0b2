"""The recorder's card as an unlucky operator meets it, docked end to end: a card that fills
in a continuous phase (a real ENOSPC from littlefs or FAT on a card image), files on the card
that are not the recorder's, and a firmware that hangs (the board's watchdog)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from host_agent.dock.session import dock
from host_agent.vault import Vault, timeline
from tests.hil.conftest import docked

pytestmark = pytest.mark.simulator

LIVE = dict(segments=0, segment_ms=400, bitrate=1_000_000)


def records(vault: Vault, device_id: str) -> list[dict]:
    return timeline.load_records(vault, device_id)


def end_phase(rec, end: str) -> None:
    assert rec.press(f"end_request {end}") == "end_request -> confirm_end"
    assert rec.press("end_confirm") == "end_confirm -> recording"
    assert rec.press("stop") == "stop -> idle"
    rec.wait_for("indicator: idle\n")


@pytest.mark.parametrize("kind", ["lfs2", "fat"])
def test_a_card_that_fills_mid_phase_is_a_signed_gap_and_recording_resumes_after_docking(
        tmp_path: Path, kind: str) -> None:
    # A 768 KiB card at 2 Mbit/s: full in about three seconds of the phase.
    card = dict(card_image=str(tmp_path / "card.img"), card_fs=kind, card_kb=768)
    with docked(tmp_path, **{**LIVE, "bitrate": 2_000_000}, **card) as (rec, session):
        rec.wait_for("ready for the dock")
        assert rec.press("phase_start 4 CASE-FULL 4501-0009") == "phase_start -> phase"
        assert rec.press("notice recorded in full") == "notice -> ok"
        rec.wait_for("gap recorded (storage_full)", timeout=30)
        assert "indicator: storage_full" in rec.log_text()
        full = session.request("get_status")
        first = dock(session)  # on the full card: clock step, offload, receipts, releases
        rec.wait_for("room on the card again: recording resumes", timeout=15)
        time.sleep(0.6)
        end_phase(rec, "investigation ends")
        second = dock(session)
        device_id = first.device_id
        recs = records(session.vault, device_id)
        assert session.vault.verify() == []
        assert session.vault.quarantined(device_id) == []
    assert full["recording"] and full["storage"]["free"] < full["storage"]["total"] // 4, full
    assert first.offload["quarantined"] == [] == second.offload["quarantined"]
    seqs = [r["seq"] for r in recs]
    assert seqs == list(range(1, len(seqs) + 1))  # one chain, nothing missing
    (gap,) = [r for r in recs if r["kind"] == "gap"]
    assert gap["cause"] == "storage_full" and gap["phase"]["row"] == 4
    (resumed,) = [r for r in recs if r["kind"] == "event" and r["event"] == "phase_resumed"]
    assert resumed["detail"] == {"after_gap": gap["seq"]} and resumed["seq"] > gap["seq"]
    after = [r for r in recs if r["kind"] == "segment" and r["seq"] > resumed["seq"]
             and r["phase"]]
    assert after and all(s["phase"]["row"] == 4 for s in after)  # the phase recorded on
    assert sum(r["kind"] == "segment" and r["truncated"] for r in recs) <= 1
    (phase,) = second.phases or first.phases
    assert phase["row"] == 4 and phase["ended_us"] and phase["notice_given"]
    assert f"recording broke: storage_full (gap record {gap['seq']})" in phase["findings"]


def test_files_on_the_card_that_are_not_the_recorder_s_are_left_alone_and_reported(
        tmp_path: Path) -> None:
    storage = tmp_path / "rec"
    (storage / "rec").mkdir(parents=True)
    foreign = {
        "rec/._00000001.cose": b"\x00\x05\x16\x07" + bytes(4092),  # macOS AppleDouble
        "rec/foo.cose": b"foo",
        "rec/00000001.cose.bak": b"an old copy",
        "rec/00000002.bin.tmp": b"x" * 100,
        "notes.txt": b"ask IT about the card",
    }
    for name, data in foreign.items():
        (storage / name).write_bytes(data)
    (storage / "rec" / "00000009.cose").mkdir()  # a directory with a record's name
    with docked(tmp_path, segments=2, segment_ms=200) as (rec, session):
        status = session.request("get_status")
        report = dock(session)
        left = sorted(p.name for p in (storage / "rec").iterdir())
    assert report.offload["quarantined"] == []
    assert report.offload["stored"] and report.offload["stored"] == report.offload["released"]
    assert left == sorted(["._00000001.cose", "foo.cose", "00000001.cose.bak",
                           "00000002.bin.tmp", "00000009.cose"])
    for name, data in foreign.items():
        assert (storage / name).read_bytes() == data  # untouched
    assert sorted(status["health"]["foreign"]) == sorted(
        [n for n in foreign] + ["rec/00000009.cose"])


def test_a_hung_recorder_is_reset_by_the_watchdog_which_the_gap_record_names(
        tmp_path: Path) -> None:
    with docked(tmp_path, watchdog_s=2.0, **LIVE) as (rec, session):
        rec.wait_for("ready for the dock")
        assert rec.press("phase_start 8 CASE-WD 4501-0003") == "phase_start -> phase"
        rec.press("notice")
        time.sleep(1.0)
        hung_at = time.monotonic()
        rec.hang()
        rec.wait_for("board: watchdog reset", timeout=15)
        reset_after = time.monotonic() - hung_at
        rec.wait_for("phase_resumed", timeout=20)
        time.sleep(0.5)
        end_phase(rec, "signature completed")
        report = dock(session)
        recs = records(session.vault, report.device_id)
        assert session.vault.verify() == []
    assert rec.resets == 1 and reset_after < 6, (rec.resets, reset_after)
    assert report.offload["quarantined"] == []
    (gap,) = [r for r in recs if r["kind"] == "gap"]
    assert gap["cause"] == "watchdog" and gap["phase"]["row"] == 8
    (resumed,) = [r for r in recs if r["kind"] == "event" and r["event"] == "phase_resumed"]
    assert resumed["detail"] == {"after_gap": gap["seq"]}
    assert sum(r["kind"] == "segment" and r["truncated"] for r in recs) <= 1
    (phase,) = report.phases
    assert phase["findings"] == [f"recording broke: watchdog (gap record {gap['seq']})"]
