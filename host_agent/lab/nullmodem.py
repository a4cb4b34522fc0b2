"""A null-modem cable in software: two ptys joined back to back, optionally a bad cable.

The simulated recorder opens one end as its UART (`device_path`), the dock opens the other with
pyserial (`host_path`), exactly as it would open /dev/ttyACM0. Each pty keeps its own termios,
so the device's raw/VMIN=0 settings and pyserial's never fight.

The relay between the two pty masters is also where a test rig damages the line. Each
direction ("up" = device → host, "down" = host → device) takes an optional `Impairment`:

- `rate_bps`: the line rate in bit/s; `bits_per_byte` says what a byte costs on the wire
  (10 for a UART with 8N1: 921600 baud carries 92160 B/s). The relay keeps the line booked a
  couple of milliseconds ahead, like a UART's transmit FIFO, so its own timer jitter never
  idles the line; it reads no more from the sender than it can hold in `backlog` bytes, so a
  sender that outruns the line blocks as it would on a real UART.
- `flip_rate` / `drop_rate`: the chance per byte of one flipped bit / of losing the byte
  (positions drawn from a seeded RNG, so a failing run can be replayed with its `seed`).
- `latency_s`: a fixed delay added to every byte.

Impairments can be set at construction or changed on a running line with `impair()`. With
none (the default) a direction is a plain read → write loop with nothing else in its way.
"""

from __future__ import annotations

import collections
import math
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass

_CHUNK = 1 << 18
_POLL_MS = 200
_FIFO_S = 0.002  # how far ahead a throttled line is booked (a UART FIFO's worth of time)
_IN = select.POLLIN | select.POLLERR | select.POLLHUP
_OUT = select.POLLOUT | select.POLLERR | select.POLLHUP


@dataclass(frozen=True)
class Impairment:
    """What one direction of the line does to the bytes it carries."""

    rate_bps: int = 0  # bit/s on the wire; 0 = as fast as the ptys go
    bits_per_byte: int = 10  # 8N1 framing: start bit + 8 data bits + stop bit
    flip_rate: float = 0.0  # probability per byte of one flipped bit
    drop_rate: float = 0.0  # probability per byte of losing it
    latency_s: float = 0.0  # added to every byte
    seed: int = 0
    backlog: int = 4096  # bytes the line holds before the sender blocks (plus latency's worth)

    @property
    def bytes_per_s(self) -> float:
        return self.rate_bps / self.bits_per_byte if self.rate_bps else 0.0

    @classmethod
    def uart(cls, baud: int = 921600, **kw: object) -> Impairment:
        """A UART at `baud` with 8N1 framing."""
        return cls(rate_bps=baud, bits_per_byte=10, **kw)  # type: ignore[arg-type]

    @classmethod
    def usb_full_speed(cls, **kw: object) -> Impairment:
        """A 12 Mbit/s line counted at 8 bits a byte (USB full speed's raw signalling rate)."""
        return cls(rate_bps=12_000_000, bits_per_byte=8, **kw)  # type: ignore[arg-type]


class _Direction:
    """One direction of the cable and its counters."""

    def __init__(self, name: str, src: int, dst: int, impairment: Impairment | None) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.bytes_in = 0  # read from the sender
        self.bytes_out = 0  # delivered to the receiver
        self.dropped = 0
        self.flipped = 0
        self.impairment: Impairment | None = None
        # One RNG per kind of damage: the positions do not depend on how reads chunk the data.
        self._flip_rng = random.Random(0)
        self._drop_rng = random.Random(1)
        self._next_flip = self._next_drop = 0
        self.set(impairment)

    def set(self, imp: Impairment | None) -> None:
        if imp is not None:
            self._flip_rng = random.Random(2 * imp.seed)
            self._drop_rng = random.Random(2 * imp.seed + 1)
            self._next_flip = self._gap(self._flip_rng, imp.flip_rate)
            self._next_drop = self._gap(self._drop_rng, imp.drop_rate)
        self.impairment = imp

    @staticmethod
    def _gap(rng: random.Random, rate: float) -> int:
        """Bytes until the next event of probability `rate` per byte (geometric)."""
        if rate <= 0:
            return 1 << 62
        if rate >= 1:
            return 0
        u = 1.0 - rng.random()  # (0, 1]
        return int(math.log(u) / math.log1p(-rate))

    def damage(self, data: bytes, imp: Impairment) -> bytes:
        if imp.flip_rate <= 0 and imp.drop_rate <= 0:
            return data
        n = len(data)
        if self._next_flip >= n and self._next_drop >= n:
            self._next_flip -= n
            self._next_drop -= n
            return data
        buf = bytearray(data)
        at = self._next_flip
        while at < n:
            buf[at] ^= 1 << self._flip_rng.randrange(8)
            self.flipped += 1
            at += 1 + self._gap(self._flip_rng, imp.flip_rate)
        self._next_flip = at - n
        drops = []
        at = self._next_drop
        while at < n:
            drops.append(at)
            at += 1 + self._gap(self._drop_rng, imp.drop_rate)
        self._next_drop = at - n
        for i in reversed(drops):
            del buf[i]
        self.dropped += len(drops)
        return bytes(buf)


class NullModem:
    def __init__(self, up: Impairment | None = None, down: Impairment | None = None) -> None:
        self._dev_master, self._dev_slave = os.openpty()
        self._host_master, self._host_slave = os.openpty()
        for fd in (self._dev_slave, self._host_slave):
            tty.setraw(fd)  # raw before anyone writes: no echo, no \n translation, no XON/XOFF
        for fd in (self._dev_master, self._host_master):
            os.set_blocking(fd, False)
        self.device_path = os.ttyname(self._dev_slave)
        self.host_path = os.ttyname(self._host_slave)
        self._stop = threading.Event()
        self.up = _Direction("up", self._dev_master, self._host_master, up)
        self.down = _Direction("down", self._host_master, self._dev_master, down)
        self._threads = [
            threading.Thread(target=self._run, args=(d,), name=f"nullmodem-{d.name}",
                             daemon=True)
            for d in (self.up, self.down)
        ]

    @property
    def bytes_up(self) -> int:
        """Bytes the device sent (device → host)."""
        return self.up.bytes_in

    def impair(self, up: Impairment | None = None, down: Impairment | None = None) -> None:
        """Change both directions' impairments on a running line (None: a clean line)."""
        self.up.set(up)
        self.down.set(down)

    def start(self) -> NullModem:
        for t in self._threads:
            t.start()
        return self

    # -- the relay -------------------------------------------------------------------------
    def _run(self, d: _Direction) -> None:
        try:
            self._pump(d)
        except OSError:
            return  # a pty is gone: the cable is unplugged

    def _pump(self, d: _Direction) -> None:
        src_poll = select.poll()
        src_poll.register(d.src, _IN)
        dst_poll = select.poll()
        dst_poll.register(d.dst, _OUT)
        line: collections.deque[tuple[float, memoryview]] = collections.deque()
        queued = 0
        line_t = 0.0  # when the line has sent everything handed to it so far
        stop = self._stop
        while not stop.is_set():
            imp = d.impairment
            if imp is None and not line:
                # The clean line: read what is there, write it all, nothing else. Read first
                # and poll only when there is nothing: while bytes flow, one read per 4 KiB.
                try:
                    data = os.read(d.src, _CHUNK)
                except BlockingIOError:
                    src_poll.poll(_POLL_MS)
                    continue
                d.bytes_in += len(data)
                self._write_all(d.dst, data, dst_poll)
                d.bytes_out += len(data)
                continue
            # The impaired line: a delay line of (due time, bytes), paced to the line rate.
            now = time.monotonic()
            bps = imp.bytes_per_s if imp else 0.0
            latency = imp.latency_s if imp else 0.0
            cap = (imp.backlog if imp else 0) + int(bps * latency if bps else 1 << 20)
            wait = _POLL_MS / 1000
            while line:
                due, head = line[0]
                if due > now:
                    wait = min(wait, due - now)
                    break
                if bps:
                    if line_t > now + _FIFO_S:
                        wait = min(wait, line_t - now - _FIFO_S)
                        break
                    piece = max(1, int(bps * _FIFO_S))
                    part = head[:piece]
                else:
                    part = head
                n = self._write_some(d.dst, part)
                if n == 0:
                    wait = 0.001
                    break
                if bps:
                    line_t = max(line_t, now - _FIFO_S) + n / bps
                d.bytes_out += n
                queued -= n
                if n == len(head):
                    line.popleft()
                else:
                    line[0] = (due, head[n:])
                now = time.monotonic()
            if queued >= cap:
                time.sleep(max(0.0002, wait))  # the line is full: the sender must wait
                continue
            if not src_poll.poll(max(0, math.ceil(wait * 1000)) if line else _POLL_MS):
                continue
            try:
                data = os.read(d.src, min(_CHUNK, max(1, cap - queued)))
            except BlockingIOError:
                continue
            d.bytes_in += len(data)
            if imp is not None:
                data = d.damage(data, imp)
            if data:
                line.append((time.monotonic() + latency, memoryview(data)))
                queued += len(data)

    @staticmethod
    def _write_some(fd: int, data: memoryview) -> int:
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0

    def _write_all(self, fd: int, data: bytes, poll: select.poll) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                poll.poll(_POLL_MS)
                continue
            view = view[n:]

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2)
        for fd in (self._dev_master, self._dev_slave, self._host_master, self._host_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> NullModem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
