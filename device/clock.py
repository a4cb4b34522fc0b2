"""The device clock as evidence needs it: the time, and how far that time can be trusted.

Every record carries the clock state: "unset" (never synced since the backup cell last held
it), "synced" (set by a dock within the holdover window, with the uncertainty the dock
measured) or "holdover" (synced, but longer ago than the window).

Two time sources: `now_us` is the settable clock a dock syncs and steps, and what every signed
timestamp says; `ticks_ms` is the board's monotonic tick, which decides every length (a
segment's, a pre-event piece's) and timeout, so a step never stretches or cuts one. The
holdover window alone is measured on the clock: it spans reboots and power-offs, which ticks
do not, and only `adjust` steps the clock, restarting it.
"""

from device import fs
from protocol import cbor
from protocol.compat import const

_HOLDOVER_US = const(86400 * 1000000)  # a dock syncs recorders daily (Art. 4)


class ClockService:
    def __init__(self, hal_clock, root: str) -> None:
        self._clock = hal_clock
        self._path = root + "/clock"
        self.synced_at = 0
        self.uncertainty_us = 0
        try:
            state = cbor.decode(fs.read(self._path))
            self.synced_at = state["synced_at"]
            self.uncertainty_us = state["uncertainty_us"]
        except (OSError, ValueError, KeyError):
            pass

    def now_us(self) -> int:
        """What the clock says: for the signed timestamps, never for a length."""
        return self._clock.now_us()

    def ticks_ms(self):
        """The monotonic tick (time.ticks_diff to compare): for lengths and timeouts."""
        return self._clock.ticks_ms()

    def state(self) -> str:
        if not self.synced_at:
            return "unset"
        if self._clock.now_us() - self.synced_at > _HOLDOVER_US:
            return "holdover"
        return "synced"

    def describe(self) -> dict:
        return {
            "state": self.state(),
            "synced_at": self.synced_at,
            "uncertainty_us": self.uncertainty_us,
        }

    def adjust(self, delta_us: int, uncertainty_us: int):
        """Step the clock by the dock's measured offset; returns (before, after) in µs."""
        before = self._clock.now_us()
        self._clock.step(delta_us)
        after = self._clock.now_us()
        self.synced_at = after
        self.uncertainty_us = uncertainty_us
        fs.write_atomic(self._path, cbor.encode({"synced_at": after,
                                                 "uncertainty_us": uncertainty_us}))
        return before, after
