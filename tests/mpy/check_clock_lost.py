"""A clock that reads earlier than its last sync is not synced, until a dock syncs it again.

    micropython tests/mpy/check_clock_lost.py STORAGE_DIR

Simulated time is a number the script sets (`FakeSim`, what SimTime is to SimClock), so every
reading is exact.

ClockService (device/clock.py) over a bare settable clock:
  never synced: unset; a dock's step: synced; 25 h later: holdover; a clock 30 years ahead
  (RTC garbage forward): holdover, the window alone catching it; a dock's step back of an
  hour: synced (a step is a sync); the clock set back to 2000-01-01 without a step (an RTC
  whose cell went flat): unset, synced_at still the sync it lost; the clock back 1 µs past its
  sync: unset; such a clock running on past synced_at: still unset, and after a reboot too
  (the loss is on the card); the next dock step: synced, and after a reboot; a card refusing
  the note: unset all the same; a clock file from before the note: read as it was.

SimClock (device/boards/unix_sim/hal.py) with its RTC file:
  the first start is at skew_us; a step is kept across a restart, drift and all (a good
  backup cell); `lost` starts it at skew_us again, and the restart after that keeps that.

The recorder (device/app.py boot, signed events read back from the store), restarted on the
same card as a board restarts:
  good cell: synced before and after a power-off of an hour, times true; lost cell (the RTC
  restarting at 2000-01-01): the records say unset (with their 2000 times) through a reboot,
  until the dock's step; synced again after it and after the next reboot. Lost cell with a
  small slip (the RTC 5 s behind, restarted 2 s after the sync): unset, and still unset once
  the clock has run past the sync and through a reboot, until the next step.

Prints "ok <name>" per check and "ALL OK"; exits 1 on the first failure.
"""

import sys

sys.path.append("tests/mpy")
from cards import log, ok  # noqa: E402
from crash_points import rmtree  # noqa: E402

from device import app, fs  # noqa: E402
from device.boards.unix_sim.hal import SimBattery, SimCamera, SimClock, SimIndicator, SimStorage
from device.clock import ClockService
from device.hal import Hal
from protocol import cbor

ROOT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/check_clock_lost"
S = 1000000
HOUR = 3600 * S
T0 = 1796000000 * S  # 2026-11-30: true time at the start
Y2K = 946684800 * S  # 2000-01-01, where an RTC restarts after its cell went flat



class FakeSim:
    """Simulated true time, set by the script."""

    def __init__(self, t):
        self.t = t
        self.rate = 1

    def now_us(self):
        return self.t

    def ticks_ms(self):
        return self.t // 1000


class BareClock:
    """A settable clock (the hal's clock part): what the script sets it to."""

    def __init__(self, t):
        self.t = t

    def now_us(self):
        return self.t

    def ticks_ms(self):
        return 0

    def step(self, delta_us):
        self.t += delta_us


def check_service(root):
    fs.makedirs(root)
    hw = BareClock(T0)
    c = ClockService(hw, root)
    ok("never synced: unset", c.state() == "unset")
    before, after = c.adjust(2 * S, 1500)
    d = c.describe()
    ok("a dock's step: synced", d == {"state": "synced", "synced_at": T0 + 2 * S,
                                      "uncertainty_us": 1500}, d)
    hw.t += 25 * HOUR
    ok("25 h after the sync: holdover", c.state() == "holdover")
    hw.t = T0 + 30 * 365 * 24 * HOUR
    ok("RTC garbage 30 years ahead: holdover (the window)", c.state() == "holdover")
    c.adjust(T0 - hw.t, 1500)
    ok("a dock's step back of 30 years: synced", c.state() == "synced")
    c.adjust(-HOUR, 1500)
    ok("a dock's step back of an hour: synced (a step is a sync)", c.state() == "synced")
    synced_at = c.synced_at
    hw.t = Y2K
    d = c.describe()
    ok("clock at 2000-01-01 without a step: unset, synced_at the sync it lost",
       d == {"state": "unset", "synced_at": synced_at, "uncertainty_us": 1500}, d)
    hw.t = synced_at + 10 * S
    ok("the clock past synced_at again: still unset", c.state() == "unset")
    c2 = ClockService(hw, root)
    ok("after a reboot: still unset (the loss is on the card)",
       c2.state() == "unset" and c2.synced_at == synced_at)
    c2.adjust(0, 900)
    ok("the next dock step: synced", c2.state() == "synced")
    ok("and after a reboot", ClockService(hw, root).state() == "synced")

    c3 = ClockService(hw, root)
    hw.t = c3.synced_at - 1
    ok("1 us earlier than the sync: unset", c3.state() == "unset")
    c3.adjust(0, 900)
    ok("synced after a step", c3.state() == "synced")

    def refuse(kind, path):
        raise OSError(5)

    hw.t = c3.synced_at - S
    fs.set_hook(refuse)
    try:
        state = c3.state()
    finally:
        fs.set_hook(None)
    ok("a card refusing the note: unset all the same", state == "unset" and c3.lost)
    hw.t = c3.synced_at + S
    ok("... for this boot", c3.state() == "unset")

    fs.write_atomic(root + "/clock", cbor.encode({"synced_at": T0, "uncertainty_us": 7}))
    hw.t = T0 + S
    c4 = ClockService(hw, root)
    ok("a clock file without the note: synced as before", c4.state() == "synced"
       and c4.uncertainty_us == 7)


def check_sim_rtc(root):
    fs.makedirs(root)
    path = root + "/rtc"
    sim = FakeSim(T0)
    c = SimClock(-5 * S, 0, sim, path)
    ok("sim rtc: the first start at skew_us", c.now_us() == T0 - 5 * S)
    c.step(5 * S)
    sim.t += HOUR
    c = SimClock(-5 * S, 0, sim, path)
    ok("sim rtc: a step kept across a restart", c.now_us() == sim.t, c.now_us() - sim.t)
    c = SimClock(-5 * S, 0, sim, path, True)
    ok("sim rtc: lost: skew_us again", c.now_us() == sim.t - 5 * S)
    sim.t += HOUR
    c = SimClock(0, 0, sim, path)
    ok("sim rtc: the restart after a loss keeps what it restarted at",
       c.now_us() == sim.t - 5 * S)
    rmtree(root)
    fs.makedirs(root)
    sim.t = T0
    c = SimClock(0, 100, sim, path)  # 100 ppm fast
    sim.t += 10000 * S
    c.step(-S)  # the dock takes the second it gained back
    at = c.now_us()
    sim.t += 10000 * S
    expect = at + 10000 * S + S  # running on, 100 ppm fast, through the power-off
    c = SimClock(0, 100, sim, path)
    ok("sim rtc: drift runs on through a power-off", c.now_us() == expect, c.now_us() - expect)
    ok("sim rtc: without a path every start is a first start",
       SimClock(3, 0, sim).now_us() == sim.t + 3)


class Board:
    """The recorder booted on ROOT with a SimClock as device/boards/unix_sim/main.py builds
    it; `restart` is a power-off and on."""

    def __init__(self, root, sim):
        self.root = root
        self.sim = sim
        self.rec = None

    def boot(self, skew_us, lost=False):
        sim = self.sim
        fs.makedirs(self.root)  # as main.py does before it builds the parts
        clock = SimClock(skew_us, 0, sim, self.root + "/rtc", lost)
        hal = Hal(device_id="SIM-CLOCKLOST", clock=clock,
                  battery_main=SimBattery(4200, 3300, 95, True, sim=sim),
                  battery_backup=SimBattery(3000, 2000, 90, sim=sim),
                  storage=SimStorage(self.root, 64 * 1024 * 1048576),
                  camera=SimCamera(8000000, sim), indicator=SimIndicator(log), link=None,
                  selftest=lambda: [])
        key = app.load_key(self.root, log)
        self.rec = app.boot(hal, key, log, root=self.root)
        return self

    def signed(self):
        """Sign an event now; its (clock state, t, synced_at) as stored."""
        seq = self.rec.event("bookmark")
        f = self.rec.store.fields(seq)
        return f["clock"]["state"], f["t"], f["clock"]["synced_at"]

    def sync(self):
        """A dock's step to true time."""
        return self.rec.clock.adjust(self.sim.t - self.rec.clock.now_us(), 2000)


def check_recorder(root):
    sim = FakeSim(T0)
    b = Board(root, sim).boot(-5 * S)
    state, t, _ = b.signed()
    ok("recorder: never synced: unset, 5 s behind", state == "unset" and t == T0 - 5 * S)
    b.sync()
    state, t, synced_at = b.signed()
    ok("recorder: docked: synced, true time", state == "synced" and t == T0, (state, t))

    sim.t += HOUR  # powered off an hour, the backup cell good
    b.boot(-5 * S)
    state, t, _ = b.signed()
    ok("good cell: synced after a power-off, true time", state == "synced" and t == sim.t,
       (state, t - sim.t))

    sim.t += HOUR  # off another hour; the cell went flat: the RTC restarts at 2000-01-01
    b.boot(Y2K - sim.t, lost=True)
    state, t, was = b.signed()
    ok("lost cell: unset, its 2000 time, synced_at the lost sync",
       state == "unset" and t == Y2K and was == synced_at, (state, t, was))
    sim.t += 600 * S
    b.boot(-5 * S)  # the next restart: the RTC kept what it restarted at
    state, t, _ = b.signed()
    ok("lost cell: still unset after a reboot", state == "unset" and t == Y2K + 600 * S,
       (state, t))
    b.sync()
    state, t, synced_at = b.signed()
    ok("lost cell: synced again at the next docking", state == "synced" and t == sim.t,
       (state, t))
    sim.t += HOUR
    b.boot(-5 * S)
    state, t, _ = b.signed()
    ok("lost cell: synced after the next reboot", state == "synced" and t == sim.t)

    # A small slip: the RTC restarts 5 s behind, 2 s after the sync (3 s before it).
    b.sync()
    sim.t += 2 * S
    b.boot(-5 * S, lost=True)
    state, t, _ = b.signed()
    ok("small slip: unset", state == "unset" and t == sim.t - 5 * S, (state, t - sim.t))
    sim.t += 10 * S  # the clock now reads 7 s past the sync: still lost
    state, t, _ = b.signed()
    ok("small slip: still unset past the sync time", state == "unset")
    b.boot(0)
    state, t, _ = b.signed()
    ok("small slip: still unset after a reboot", state == "unset" and t == sim.t - 5 * S)
    b.sync()
    state, t, _ = b.signed()
    ok("small slip: synced at the next docking", state == "synced" and t == sim.t)
    ok("the card holds nothing foreign (rtc is the board's own)",
       b.rec.store.foreign() == [], b.rec.store.foreign())


def main():
    rmtree(ROOT)
    check_service(ROOT + "/service")
    check_sim_rtc(ROOT + "/sim")
    check_recorder(ROOT + "/card")
    print("ALL OK")


main()
