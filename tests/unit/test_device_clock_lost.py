"""A recorder's clock that reads earlier than its last sync (an RTC whose backup cell went
flat, restarting at 2000-01-01; any clock set back without a dock's step) signs its records
"unset", not "synced", until a dock syncs it again; the unix board's RTC keeps its setting
across restarts unless its cell is lost: device/clock.py and device/boards/unix_sim/hal.py
inside MicroPython (tests/mpy/check_clock_lost.py).

Before: ClockService.state() looked only at how long ago the sync was, so a clock at
2000-01-01 (26 years before its sync) said "synced", and the recorder signed a bookmark at
2000-01-01 as "synced"; and the unix board's clock started at --skew-us at every boot, as if
its RTC had lost the dock's correction at every restart.
"""

from pathlib import Path

from tests.micropython_runner import run_micropython

CHECKS = [
    # ClockService
    "never synced: unset", "a dock's step: synced", "25 h after the sync: holdover",
    "RTC garbage 30 years ahead: holdover (the window)",
    "a dock's step back of an hour: synced (a step is a sync)",
    "clock at 2000-01-01 without a step: unset, synced_at the sync it lost",
    "the clock past synced_at again: still unset",
    "after a reboot: still unset (the loss is on the card)", "the next dock step: synced",
    "1 us earlier than the sync: unset", "a card refusing the note: unset all the same",
    "a clock file without the note: synced as before",
    # the unix board's RTC
    "sim rtc: a step kept across a restart", "sim rtc: lost: skew_us again",
    "sim rtc: drift runs on through a power-off",
    # the recorder, its signed records
    "good cell: synced after a power-off, true time",
    "lost cell: unset, its 2000 time, synced_at the lost sync",
    "lost cell: still unset after a reboot", "lost cell: synced again at the next docking",
    "small slip: still unset past the sync time", "small slip: still unset after a reboot",
    "small slip: synced at the next docking",
]


def test_a_clock_earlier_than_its_sync_signs_unset_until_the_next_sync(tmp_path: Path) -> None:
    result = run_micropython("tests/mpy/check_clock_lost.py", str(tmp_path / "card"),
                             heapsize="2m", timeout=120)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "ALL OK" in out and "FAIL" not in out
    for name in CHECKS:
        assert f"ok   {name}\n" in out, name
