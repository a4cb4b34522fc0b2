"""The device clock as evidence needs it: the time, and how far that time can be trusted.

Every record carries the clock state: "unset" (never synced since the backup cell last held
it), "synced" (set by a dock within the holdover window, with the uncertainty the dock
measured) or "holdover" (synced, but longer ago than the window).

A clock that reads earlier than its last sync lost that sync: only a dock's step (`adjust`)
moves it back, and a step is itself a sync. An RTC whose backup cell went flat restarts at its
reset value (2000-01-01 on many), and a glitch can set it back without anyone asking. Its
records say "unset" from then on, `synced_at` still the last sync it lost, until a dock syncs
it again: the lost sync is noted on the card, so the clock catching up with `synced_at` later,
or a reboot, does not make it "synced" again. A clock that jumps forward without a sync is
caught by the holdover window alone ("holdover" once it reads a day past its sync): the device
cannot tell such a jump from a day spent off a dock.

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
        self.lost = False  # the clock read earlier than synced_at: unset until the next sync
        try:
            state = cbor.decode(fs.read(self._path))
            self.synced_at = state["synced_at"]
            self.uncertainty_us = state["uncertainty_us"]
            self.lost = bool(state.get("lost"))
        except (OSError, ValueError, KeyError):
            pass

    def now_us(self) -> int:
        """What the clock says: for the signed timestamps, never for a length."""
        return self._clock.now_us()

    def ticks_ms(self):
        """The monotonic tick (time.ticks_diff to compare): for lengths and timeouts."""
        return self._clock.ticks_ms()

    def state(self) -> str:
        if not self.synced_at or self.lost:
            return "unset"
        since = self._clock.now_us() - self.synced_at
        if since < 0:
            self._lose()
            return "unset"
        if since > _HOLDOVER_US:
            return "holdover"
        return "synced"

    def _lose(self) -> None:
        """The clock went back past its sync with no dock's step: it lost its setting. Noted
        on the card, so that neither the clock catching up nor a reboot makes it synced."""
        self.lost = True
        try:
            self._save()
        except OSError:  # the card refused: unset for this boot all the same
            pass

    def _save(self) -> None:
        state = {"synced_at": self.synced_at, "uncertainty_us": self.uncertainty_us}
        if self.lost:
            state["lost"] = True
        fs.write_atomic(self._path, cbor.encode(state))

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
        self.lost = False
        self._save()
        return before, after
