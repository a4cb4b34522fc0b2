"""Boot recovery on a big card feeds the watchdog per unit of progress, inside MicroPython
(tests/mpy/check_boot_watchdog.py).

A FAT card of 3000 records awaiting offload and a 16 MiB segment whose seal a power cut
interrupted (its data still `current.part`), on a block device whose operations cost an SD
card's time (0.2 ms a command, 20 MB/s). The recovery takes ~3.5 s of that time; a watchdog
with a 1 s timeout must never be starved beyond it (nor for more than 4000 block operations),
and must not be fed more often than there are units of work (directory entries, chunks,
records). The firmware that fed it only before and after recovery starved it for ~2.9 s
(~9600 block operations: the listings and the hash of the part).
"""

import re

from tests.micropython_runner import run_micropython


def test_boot_recovery_feeds_the_watchdog_within_its_timeout() -> None:
    result = run_micropython("tests/mpy/check_boot_watchdog.py", "fat", "3000",
                             heapsize="96m", timeout=300)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "ALL OK" in out and "FAIL" not in out
    figures = dict(kv.split("=") for kv in re.search(r"FIGURES (.*)", out)[1].split())
    assert int(figures["worst_gap_ms"]) < int(figures["timeout_ms"]) < int(figures["boot_ms"])
