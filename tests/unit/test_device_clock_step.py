"""A dock stepping the recorder's clock by hours mid-recording changes no length: the unix
board's simulated parts and the recorder inside MicroPython (tests/mpy/check_clock_step.py).

Pre-event pieces stay 1 s of camera chunks and segments 2 s, whether the clock is stepped back
or forward 4 h (or back 2 h) in the middle of one; a segment's size is its pre-event bytes and
its own chunks, its `pre_event_ms` the buffer's length on the monotonic tick; the "still
alive" note keeps its 1 s cadence after a step back; the signed times stay what the clock
said (a segment spans the 4 h step forward). Firmware that timed lengths on the clock made a
piece run on until the script cut it at 40 chunks (4 h otherwise) after a step back, cut a
piece at 4 chunks and a segment at 7 after a step forward, and signed a pre_event_ms of
-14 394 998 ms.
"""

import re
from pathlib import Path

from tests.micropython_runner import run_micropython


def test_lengths_run_on_ticks_when_the_clock_is_stepped_by_hours(tmp_path: Path) -> None:
    result = run_micropython("tests/mpy/check_clock_step.py", str(tmp_path / "card"),
                             heapsize="8m", timeout=120)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "ALL OK" in out and "FAIL" not in out
    runs = [int(n) for n in re.search(r"FIGURES runs=\[([\d, ]+)\]", out)[1].split(",")]
    assert all(8 <= n <= 11 for n in runs[:3]), runs  # pieces: 1 s of 100 ms chunks
    assert all(18 <= n <= 21 for n in runs[4:7]), runs  # segments: 2 s
