"""The unix-port board: simulated hardware for the MicroPython unix port (tests, demo, rig).

Each class implements one part of device/hal.py: a clock with skew and drift (and the
monotonic tick a step does not move), kept across restarts as an RTC with a backup cell
keeps it (or lost, as when that cell is flat), draining
batteries, a directory standing in for the card with a simulated capacity (or a card image:
littlefs or FAT on a file-backed block device, `mount_card`), a paced camera, an indicator
that logs, a pty as the serial line, a watchdog fed through a pipe to the simulator (the
board's watchdog is outside its CPU; host_agent/lab/simulator.py resets the firmware when the
feeding stops), and the buttons and menu as lines on stdin.

Simulated time (`SimTime`) is the host's wall clock, or that clock running `rate` times fast
(a shift of hours in minutes: tools/shift.py). The clock, the camera's pacing and the
batteries' drain all run on it, so the firmware sees an hour pass, records an hour's segments
and drains an hour's charge; nothing in the firmware knows. At rate 1 it is the wall clock.
"""

import asyncio
import gc
import os
import sys
import termios
import time

from device import fs
from protocol import cbor
from protocol.compat import const

_VTIME = const(5)  # termios cc indices (the module has no names for them)
_VMIN = const(6)
_PATTERN_SIZE = const(1024)  # repeated through each chunk


def _wall_us() -> int:
    return time.time_ns() // 1000


class SimTime:
    """The simulation's true time in µs: the wall clock, run `rate` times fast since the rate
    was last set (`set_rate`; time never jumps when it changes); and its monotonic tick."""

    def __init__(self, rate: int = 1) -> None:
        self._real0 = self._sim0 = _wall_us()
        self.rate = rate
        self._tick = time.ticks_ms()
        self._tick_at = self._sim0 // 1000  # simulated ms at self._tick

    def now_us(self) -> int:
        return self._sim0 + (_wall_us() - self._real0) * self.rate

    def ticks_ms(self):
        """A tick in the port's ticks_ms range that runs with simulated time and never goes
        back (a host clock stepped back holds it; the port's ticks_ms cannot follow `rate`)."""
        ms = self.now_us() // 1000
        if ms > self._tick_at:
            self._tick = time.ticks_add(self._tick, ms - self._tick_at)
            self._tick_at = ms
        return self._tick

    def set_rate(self, rate: int) -> None:
        now = _wall_us()
        self._sim0 += (now - self._real0) * self.rate
        self._real0 = now
        self.rate = max(1, rate)


_WALL = SimTime()  # the parts' time when none is given: the wall clock


class SimClock:
    """True (simulated) time, offset by `skew_us` and running `drift_ppm` fast or slow.

    With a `path`, an RTC with a backup cell: its setting (the offset and the time its drift
    counts from) is kept in that file, written at each step, so a restart finds the clock
    where it would have run on to, as an RTC domain powered through resets and power-offs
    does; `skew_us` is then only its first setting. `lost`: the cell went flat while the board
    was off, so the RTC kept nothing and starts again at `skew_us` from true time (the sim
    before it kept its setting, or a real RTC restarting at its reset value when `skew_us` is
    far back). Without a `path`, every start is a first start."""

    def __init__(self, skew_us: int = 0, drift_ppm: int = 0, sim=_WALL, path: str = "",
                 lost: bool = False) -> None:
        self._sim = sim
        self._origin = sim.now_us()
        self._skew = skew_us
        self._drift_ppm = drift_ppm
        self._path = path
        if not path:
            return
        if not lost:
            try:
                kept = cbor.decode(fs.read(path))
                self._skew, self._origin = kept["skew_us"], kept["origin_us"]
                return
            except (OSError, ValueError, KeyError, TypeError):
                pass  # never set (or a cut while it was): a first start
        self._save()

    def _save(self) -> None:
        if self._path:
            fs.write_atomic(self._path, cbor.encode({"skew_us": self._skew,
                                                     "origin_us": self._origin}))

    def now_us(self) -> int:
        real = self._sim.now_us()
        return real + self._skew + (real - self._origin) * self._drift_ppm // 1000000

    def ticks_ms(self):
        """Simulated time's monotonic tick: a step moves `now_us`, never this."""
        return self._sim.ticks_ms()

    def step(self, delta_us: int) -> None:
        self._skew += delta_us
        self._save()

    def truth_error_us(self) -> int:
        """How far this clock is from true time (the simulation's ground truth, for benchmarks)."""
        return self.now_us() - self._sim.now_us()


class SimBattery:
    """A cell at `percent`, losing `drain_pct_per_h` (of simulated time) while not charging
    and gaining `charge_pct_per_h` while charging (up to 100)."""

    def __init__(self, full_mv: int, empty_mv: int, percent: int, charging: bool = False,
                 drain_pct_per_h: int = 0, sim=_WALL, charge_pct_per_h: int = 0) -> None:
        self._full = full_mv
        self._empty = empty_mv
        self._pct0 = percent
        self._sim = sim
        self._t0 = sim.now_us()
        self.charging = charging
        self._drain = drain_pct_per_h
        self._charge = charge_pct_per_h

    def percent(self) -> int:
        hours_x1000 = (self._sim.now_us() - self._t0) // 3600000
        if self.charging:
            return min(100, self._pct0 + self._charge * hours_x1000 // 1000)
        if not self._drain:
            return self._pct0
        return max(0, self._pct0 - self._drain * hours_x1000 // 1000)

    def read(self):
        pct = self.percent()
        return self._empty + (self._full - self._empty) * pct // 100, pct, self.charging


class SimStorage:
    """A directory on the host standing in for the card, with a simulated capacity; or, with
    `total_bytes` 0, a mounted card image whose file system says how full it is."""

    def __init__(self, root: str, total_bytes: int) -> None:
        self.root = root
        self.total = total_bytes
        fs.makedirs(root)

    def usage(self):
        if not self.total:
            st = os.statvfs(self.root)
            return st[4] * st[1], st[2] * st[1]  # f_bavail, f_blocks in f_frsize units
        used = _tree_size(self.root)
        return max(0, self.total - used), self.total


class FileBlockDevice:
    """A card image in a host file as a block device (readblocks/writeblocks/ioctl) for
    vfs.VfsLfs2 and vfs.VfsFat. Writes go straight to the file: a killed process leaves the
    image as a power cut leaves a card."""

    def __init__(self, path: str, block_size: int) -> None:
        self._f = open(path, "r+b")
        self._f.seek(0, 2)
        self.block_size = block_size
        self.blocks = self._f.tell() // block_size

    def readblocks(self, n: int, buf, off: int = 0) -> None:
        self._f.seek(n * self.block_size + off)
        self._f.readinto(buf)

    def writeblocks(self, n: int, buf, off=None) -> None:
        self._f.seek(n * self.block_size + (off or 0))
        self._f.write(buf)

    def ioctl(self, op: int, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return self.block_size
        if op == 3:  # sync
            self._f.flush()
        return 0  # init, deinit, erase (6): nothing to do


def mount_card(image: str, kind: str, mount_at: str, size_kb: int, block_size: int) -> None:
    """Mount a card image (made and formatted if it does not exist yet) at `mount_at`."""
    import vfs

    if kind not in ("lfs2", "fat"):
        raise SystemExit("device: --card-fs must be lfs2 or fat, not %r" % kind)
    fresh = not fs.exists(image) or fs.size(image) == 0
    if fresh:
        if size_kb <= 0:
            raise SystemExit("device: no card image %s (give --card-kb to make one)" % image)
        with open(image, "wb") as f:
            zeros = bytes(4096)
            for _ in range(size_kb // 4):
                f.write(zeros)
    # (The stubs want a subclass of their AbstractBlockDev, which the port does not have: any
    # object with these three methods is a block device.)
    bdev = FileBlockDevice(image, block_size)
    if kind == "fat":
        if fresh:
            vfs.VfsFat.mkfs(bdev)  # type: ignore[arg-type]
        vfs.mount(vfs.VfsFat(bdev), mount_at)  # type: ignore[abstract, arg-type]
    else:
        if fresh:
            vfs.VfsLfs2.mkfs(bdev)  # type: ignore[arg-type]
        vfs.mount(vfs.VfsLfs2(bdev), mount_at)  # type: ignore[abstract, arg-type]


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
    """Produces A/V-like bytes at `bitrate_bps`, paced in (simulated) real time.

    Content is a random pattern with a running counter stamped in, so no two chunks match.
    """

    tracks = ["audio", "video"]

    def __init__(self, bitrate_bps: int, sim=_WALL) -> None:
        self.bitrate = bitrate_bps
        self._pattern = memoryview(os.urandom(_PATTERN_SIZE))  # sliced without copies
        self._counter = 0
        self._sim = sim
        self._t0 = 0
        self._produced = 0

    def start(self) -> None:
        self._t0 = self._sim.now_us()
        self._produced = 0

    def stop(self) -> None:
        pass

    async def read_into(self, buf) -> int:
        n = len(buf)
        # Wait until the encoder would have produced these bytes (again if the rate fell
        # meanwhile: a chunk is never early in simulated time).
        due_us = (self._produced + n) * 8000000 // self.bitrate
        while True:
            wait = (due_us - (self._sim.now_us() - self._t0)) // self._sim.rate
            if wait <= 0:
                break
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


class SimWatchdog:
    """The board's watchdog, fed by writing a byte to a pipe the simulator reads (at most one
    byte per 100 ms). A hung firmware stops writing; the simulator resets it."""

    def __init__(self, fd: int) -> None:
        self._f = open("/dev/fd/%d" % fd, "wb")
        self._at = time.ticks_ms()
        self._byte = b"."

    def feed(self) -> None:
        now = time.ticks_ms()
        if time.ticks_diff(now, self._at) < 100:
            return
        self._at = now
        try:
            self._f.write(self._byte)
        except OSError:
            pass  # the simulator is gone: nobody left to reset us


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


class HeapProbe:
    """The firmware's heap as the simulator measures it (`--heap-probe 1`): each call collects
    and notes the heap in use, keeping the peak; `report` logs the figures. The board calls it
    at every log line and before every answer to the dock (device/boards/unix_sim/main.py), so
    the peak is sampled where the firmware holds the most: a record being signed, a listing
    being sent. A board leaves it off (a collection per call)."""

    def __init__(self, log) -> None:
        self._log = log
        self.peak = 0
        self.samples = 0
        self.where = ""  # what the firmware was doing at the peak (a log line, an answer)

    def __call__(self, where="") -> int:
        """Sample; `where` is a log line, or the payload of an answer about to be sent."""
        gc.collect()
        used = gc.mem_alloc()
        self.samples += 1
        if used > self.peak:
            self.peak = used
            self.where = where if isinstance(where, str) else "answer %r" % bytes(where[:24])
        return used

    def report(self) -> None:
        """Log the figures, and the heap's map summary (micropython.mem_info on stdout: its
        "max free sz" is the longest free run, in blocks)."""
        used = self()
        import micropython

        micropython.mem_info()
        total = micropython.mem_total() if hasattr(micropython, "mem_total") else 0
        self._log("heap: used %d free %d peak %d samples %d allocated %d modules %s at %s" % (
            used, gc.mem_free(), self.peak, self.samples, total, ",".join(sorted(sys.modules)),
            self.where.replace(" ", "_")[:80]))


class SimUI:
    """The officer's buttons and menu, simulated: one action per line on stdin.

    e.g. "record", "stop", "phase_start 4 GXSL-2026-017 4501-0233", "notice",
    "end_request investigation ends", "end_confirm". End of input leaves the recorder running.
    "hang" hangs the firmware in a busy loop (a stuck driver), for the watchdog to catch.
    The simulator's own lines: "sim-rate N" runs simulated time N times fast (`sim`),
    "sim-heap" logs the heap figures (`probe`).
    """

    def __init__(self, sim=None, probe=None) -> None:
        self._reader = asyncio.StreamReader(sys.stdin.buffer)
        self._eof = False
        self._sim = sim
        self._probe = probe

    async def next_action(self):
        if self._eof:
            await asyncio.sleep_ms(1000000)
            return "", []
        line = await self._reader.readline()
        if not line:
            self._eof = True
            return "", []
        words = line.decode().split()
        if words == ["hang"]:
            sys.stderr.write("device: hanging (busy loop)\n")
            while True:
                pass
        if len(words) == 2 and words[0] == "sim-rate" and self._sim is not None:
            self._sim.set_rate(int(words[1]))
            sys.stderr.write("device: sim: rate %d\n" % self._sim.rate)
            return "", []
        if words == ["sim-heap"] and self._probe is not None:
            self._probe.report()
            return "", []
        return (words[0], words[1:]) if words else ("", [])
