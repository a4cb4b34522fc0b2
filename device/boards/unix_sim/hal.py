"""The unix-port board: simulated hardware for the MicroPython unix port (tests, demo, rig).

Each class implements one part of device/hal.py: a clock with skew and drift, draining
batteries, a directory standing in for the card with a simulated capacity, a paced camera, an
indicator that logs, a pty as the serial line, and the buttons and menu as lines on stdin.
"""

import asyncio
import os
import termios
import time

from device import fs
from protocol.compat import const

_VTIME = const(5)  # termios cc indices (the module has no names for them)
_VMIN = const(6)
_PATTERN_SIZE = const(4096)


def _wall_us() -> int:
    return time.time_ns() // 1000


class SimClock:
    """The host's wall clock, offset by `skew_us` and running `drift_ppm` fast or slow."""

    def __init__(self, skew_us: int = 0, drift_ppm: int = 0) -> None:
        self._origin = _wall_us()
        self._skew = skew_us
        self._drift_ppm = drift_ppm

    def now_us(self) -> int:
        real = _wall_us()
        return real + self._skew + (real - self._origin) * self._drift_ppm // 1000000

    def step(self, delta_us: int) -> None:
        self._skew += delta_us

    def truth_error_us(self) -> int:
        """How far this clock is from true time (the simulation's ground truth, for benchmarks)."""
        return self.now_us() - _wall_us()


class SimBattery:
    """A cell at `percent`, losing `drain_pct_per_h` while not charging."""

    def __init__(self, full_mv: int, empty_mv: int, percent: int, charging: bool = False,
                 drain_pct_per_h: int = 0) -> None:
        self._full = full_mv
        self._empty = empty_mv
        self._pct0 = percent
        self._t0 = time.ticks_ms()
        self.charging = charging
        self._drain = drain_pct_per_h

    def percent(self) -> int:
        if self.charging or not self._drain:
            return self._pct0
        hours_x1000 = time.ticks_diff(time.ticks_ms(), self._t0) // 3600
        return max(0, self._pct0 - self._drain * hours_x1000 // 1000)

    def read(self):
        pct = self.percent()
        return self._empty + (self._full - self._empty) * pct // 100, pct, self.charging


class SimStorage:
    """A directory on the host standing in for the card, with a simulated capacity."""

    def __init__(self, root: str, total_bytes: int) -> None:
        self.root = root
        self.total = total_bytes
        fs.makedirs(root)

    def usage(self):
        used = _tree_size(self.root)
        return max(0, self.total - used), self.total


def _tree_size(path: str) -> int:
    total = 0
    for entry in os.ilistdir(path):
        name, kind = entry[0], entry[1]
        full = path + "/" + name
        if kind == 0x4000:
            total += _tree_size(full)
        else:
            total += os.stat(full)[6]
    return total


class SimCamera:
    """Produces A/V-like bytes at `bitrate_bps`, paced in real time.

    Content is a random pattern with a running counter stamped in, so no two chunks match.
    """

    tracks = ["audio", "video"]

    def __init__(self, bitrate_bps: int) -> None:
        self.bitrate = bitrate_bps
        self._pattern = memoryview(os.urandom(_PATTERN_SIZE))  # sliced without copies
        self._counter = 0
        self._t0 = 0
        self._produced = 0

    def start(self) -> None:
        self._t0 = time.ticks_us()  # type: ignore[assignment]  # opaque _TicksUs in the stubs
        self._produced = 0

    def stop(self) -> None:
        pass

    async def read_into(self, buf) -> int:
        n = len(buf)
        # Wait until the encoder would have produced these bytes.
        due_us = (self._produced + n) * 8000000 // self.bitrate
        wait = due_us - time.ticks_diff(time.ticks_us(), self._t0)
        if wait > 0:
            await asyncio.sleep_ms((wait + 999) // 1000)
        mv = memoryview(buf)
        for at in range(0, n, _PATTERN_SIZE):
            end = min(n, at + _PATTERN_SIZE)
            mv[at:end] = self._pattern[: end - at]
        self._counter += 1
        c = self._counter
        for i in range(8):
            buf[i] = (c >> (8 * i)) & 0xFF
        self._produced += n
        return n


class SimIndicator:
    def __init__(self, log) -> None:
        self._log = log
        self.state = "idle"

    def show(self, state: str) -> None:
        self.state = state
        self._log("indicator: " + state)


def open_tty(path: str):
    """A serial line on a tty (a pty in simulation), raw, with UART-like non-blocking reads."""
    f = open(path, "r+b")
    fd = f.fileno()
    try:
        termios.setraw(fd)
    except OSError:
        f.close()
        raise OSError("%s is not a serial line (tty)" % path)
    attrs = termios.tcgetattr(fd)
    # VMIN=0, VTIME=0: a read returns what is there at once; asyncio polls for readiness.
    attrs[6][_VMIN] = 0
    attrs[6][_VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return f


class SimUI:
    """The officer's buttons and menu, simulated: one action per line on stdin.

    e.g. "record", "stop", "phase_start 4 GXSL-2026-017 4501-0233", "notice",
    "end_request investigation ends", "end_confirm". End of input leaves the recorder running.
    """

    def __init__(self) -> None:
        import sys

        self._reader = asyncio.StreamReader(sys.stdin.buffer)
        self._eof = False

    async def next_action(self):
        if self._eof:
            await asyncio.sleep_ms(1000000)
            return "", []
        line = await self._reader.readline()
        if not line:
            self._eof = True
            return "", []
        words = line.decode().split()
        return (words[0], words[1:]) if words else ("", [])
