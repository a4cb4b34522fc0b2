"""NTP-style clock measurement over the dock link (pure arithmetic, no I/O).

A ping carries the host's send time t1; the device stamps receive t2 and reply t3; the host
notes arrival t4. offset θ = ((t2−t1)+(t3−t4))/2 is device minus host; delay δ = (t4−t1)−(t3−t2).
Of a burst the lowest-delay sample is kept: its true offset lies within θ ± δ/2 whatever the
path asymmetry, so δ/2 is the stated bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


def host_now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Sample:
    t1: int
    t2: int
    t3: int
    t4: int

    @property
    def offset_us(self) -> int:
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) // 2

    @property
    def delay_us(self) -> int:
        return max(0, (self.t4 - self.t1) - (self.t3 - self.t2))

    @property
    def bound_us(self) -> int:
        return (self.delay_us + 1) // 2 + 1  # +1 µs: the clocks' own resolution


def best(samples: list[Sample]) -> Sample:
    if not samples:
        raise ValueError("no clock samples")
    return min(samples, key=lambda s: s.delay_us)


@dataclass(frozen=True)
class SyncResult:
    offset_before_us: int  # device − host before the step
    bound_before_us: int
    offset_after_us: int  # measured again after the step
    bound_after_us: int
    stepped_us: int
    samples: int
    event: int = 0  # the seq of the recorder's signed clock_stepped event
