"""Fetching a segment over a lossy line: selective repeat with chunks sized to the line.

Pure bookkeeping, no I/O (the dock session sends what `next_reads` asks for and feeds back
what arrives), so it is tested against a simulated channel in tests/unit/test_fetch.py.

Selective repeat: the recorder answers a `read` with data chunks in order, then `read_done`.
A chunk lost on the line shows as a hole; the chunks after it are kept (in memory, bounded by
the reads in flight) and only the holes are asked for again once their read is done or has
gone quiet. Go-back-N (ask again from the hole on) would throw away every chunk in flight after
a loss: at a bit-error rate of 1e-4 that is most of the line.

Chunks sized to the line (like ZMODEM's block size and TCP's window): a chunk of n data bytes
costs n + h on the wire (h: frame and chunk headers) and arrives whole with probability
(1 - BER)^(8(n + h)), so the fraction of the line that carries new data is
    efficiency(n) = n / (n + h) · (1 - BER)^(8(n + h)),
largest near n = sqrt(h / (8·BER)) for small BER. `LineModel` estimates the BER from each
answered read (of c chunks of n bytes, l lost: the maximum-likelihood b = -ln(1 - q) /
(8(n + h)) with q = l / (c + 1), so a read that lost everything still bounds b from below),
smoothed over reads and starting from a clean line; the chunk size follows the optimum, and
a read asks for CHUNKS_PER_READ chunks (a few at first), so the window follows the chunk size
too. A read whose
request or answer was lost on the way says nothing about the data and is not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from protocol import framing, messages

CHUNK_MAX = 32768  # what the recorder's transmit buffer holds
CHUNK_MIN = 16
CHUNKS_PER_READ = 32
READS_IN_FLIGHT = 2  # reads kept asked for, at least ...
READS_MAX = 8  # ... and up to this many while they ask for little (a noisy line's small
FLIGHT_MIN = 1 << 16  # windows, repeats of holes): FLIGHT_MIN bytes or two windows in all
WINDOW_MAX = 1 << 20  # bytes one read asks for at most
PROBE_MAX = 256  # bytes a tail loss probe asks for at most
OVERHEAD = framing.OVERHEAD + messages.DATA_HEADER_SIZE  # wire bytes per chunk beyond its data


def efficiency(chunk: int, ber: float, overhead: int = OVERHEAD) -> float:
    """The fraction of a line's bytes that arrive as new data with chunks of `chunk` bytes."""
    wire = chunk + overhead
    return chunk / wire * (1.0 - ber) ** (8 * wire)


def best_chunk(ber: float, overhead: int = OVERHEAD, lo: int = CHUNK_MIN,
               hi: int = CHUNK_MAX) -> int:
    """The chunk size that makes the most of a line with this bit-error rate: where the
    derivative of ln efficiency, 1/n - 1/(n + h) + 8·ln(1 - BER), is zero."""
    if ber <= 0:
        return hi
    c = -8.0 * math.log1p(-min(ber, 0.5))
    n = (-overhead + math.sqrt(overhead * overhead + 4.0 * overhead / c)) / 2.0
    candidates = {max(lo, min(hi, int(n) + d)) for d in (0, 1)}
    return max(candidates, key=lambda m: efficiency(m, ber, overhead))


def limit(ber: float, overhead: int = OVERHEAD) -> float:
    """The best any framed protocol with this overhead could do on the line: the efficiency of
    the best chunk size (what a benchmark's goodput is held against)."""
    return efficiency(best_chunk(ber, overhead), ber, overhead)


@dataclass
class LineModel:
    """What the dock has learnt about a line's bit-error rate; kept for the whole docking (the
    line does not change between segments).

    The estimate is the maximum-likelihood BER over the last MEMORY answered reads pooled: a
    read of c chunks of w wire bytes, l of them lost, has likelihood
    (1-b)^(8w(c-l)) · (1-(1-b)^(8w))^l. The chunk is the best for that estimate, but never
    more than `cap`: START_CHUNK at first, doubled by each read that lost nothing with chunks
    that large (like TCP's slow start: a few clean chunks say little about a line, and a
    line's first megabyte is not risked on chunks it may never carry).
    """

    MEMORY = 24
    START_CHUNK = 2048
    reads: list[tuple[int, int, int]] = field(default_factory=list)  # (wire, chunks, lost)
    answered: int = 0  # reads answered
    ber: float = 0.0
    cap: int = START_CHUNK
    lost: int = 0  # chunks lost in all

    def note(self, chunk: int, delivered: int, lost: int) -> None:
        """An answered read of `chunk`-byte chunks: `delivered` arrived whole, `lost` did not."""
        if delivered + lost <= 0:
            return
        self._add(chunk + OVERHEAD, delivered + lost, lost)
        self.answered += 1
        self.lost += lost
        if not lost and chunk >= self.cap:
            self.cap = min(CHUNK_MAX, 2 * self.cap)

    def note_frame(self, wire: int, lost: bool) -> None:
        """A request and its answer (`wire` bytes) arrived whole, or the answer came damaged:
        what the line shows before any read (host_agent/dock/exchange.py)."""
        self._add(wire, 1, int(lost))

    def _add(self, wire: int, chunks: int, lost: int) -> None:
        self.reads = (self.reads + [(wire, chunks, lost)])[-self.MEMORY:]
        self.ber = _ml_ber(self.reads)

    def chunk(self) -> int:
        return min(self.cap, best_chunk(self.ber))

    def chunks_per_read(self) -> int:
        """Chunks a read asks for: a few at first, doubling with each answered read (what is
        learnt of the line is learnt cheaply)."""
        return min(CHUNKS_PER_READ, 4 << min(8, self.answered))


def _ml_ber(reads: list[tuple[int, int, int]]) -> float:
    """The maximum-likelihood bit-error rate of these reads (0 if none lost a chunk)."""
    if not any(lost for _, _, lost in reads):
        return 0.0

    def loglik(log_b: float) -> float:
        b = 10.0 ** log_b
        total = 0.0
        for wire, chunks, lost in reads:
            ok = 8 * wire * math.log1p(-b)  # ln P(a chunk arrives whole)
            total += (chunks - lost) * ok + lost * math.log(max(1e-300, -math.expm1(ok)))
        return total

    lo, hi = -10.0, -0.5  # golden-section search on log10(b): the likelihood is unimodal
    g = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = loglik(x1), loglik(x2)
    for _ in range(40):
        if f1 < f2:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + g * (hi - lo)
            f2 = loglik(x2)
        else:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - g * (hi - lo)
            f1 = loglik(x1)
    return float(10.0 ** ((lo + hi) / 2.0))


@dataclass
class Ask:
    """One read: the ranges it asks for, [start, end) ascending, in chunks of `chunk` bytes."""

    ranges: list[tuple[int, int]]
    chunk: int
    probe: bool = False  # a tail loss probe (Fetch._probe)
    got: list[tuple[int, int]] = field(default_factory=list)  # (offset, end) of chunks seen

    @property
    def length(self) -> int:
        return sum(b - a for a, b in self.ranges)

    def holds(self, offset: int, exactly: bool = False) -> bool:
        """Whether a chunk at `offset` is one this read asked for (`exactly`: one it sends,
        on its grid of `chunk`-byte steps from each range's start)."""
        return any(a <= offset < b and not (exactly and (offset - a) % self.chunk)
                   for a, b in self.ranges)

    def end_after(self, sent: int) -> int:
        """Where the segment ends if the recorder had `sent` of the bytes asked for."""
        for a, b in self.ranges:
            if sent < b - a:
                return a + sent
            sent -= b - a
        return self.ranges[-1][1]


class Fetch:
    """The bytes [0, size) of one segment, asked for in reads of adaptive chunks.

    The session loop: send `next_reads()` (each as a `read` with the rid it gets back through
    `sent`), feed every data chunk to `on_chunk` (it returns the bytes that are now contiguous
    from the front, to write), every `read_done` to `on_done`, and call `on_quiet` when
    nothing came for a while. `complete` says when all bytes are in.

    The recorder answers reads one after another in the order they reach it, and the line keeps
    order, so any sign of a read (a chunk of it, its read_done) says every read sent before it
    is finished: what of those is missing was lost, whether or not their read_done came. Only a
    loss at the very end of what was asked for waits for `on_quiet`.
    """

    def __init__(self, size: int, line: LineModel, max_chunk: int = CHUNK_MAX) -> None:
        self.size = size
        self.line = line
        self.max_chunk = max(CHUNK_MIN, min(CHUNK_MAX, max_chunk))
        self.front = 0  # bytes before this were handed out, in order
        self.asked = 0  # bytes before this were asked for at least once
        self.holes: list[tuple[int, int]] = []  # ranges to ask for again
        self.early: dict[int, bytes] = {}  # chunks past a hole, by offset
        self.inflight: dict[int, Ask] = {}  # rid -> the read it asked for
        self.repeats = 0  # ranges asked for again
        self.duplicates = 0  # bytes that came twice (or were never asked for)

    @property
    def complete(self) -> bool:
        return self.front >= self.size

    def chunk(self) -> int:
        return min(self.max_chunk, self.line.chunk())

    def next_reads(self) -> list[Ask]:
        """The reads to send now: holes first (up to READ_RANGES of them in one read), then
        new bytes; each read `window` bytes at most."""
        out: list[Ask] = []
        chunk = self.chunk()
        window = min(WINDOW_MAX, chunk * self.line.chunks_per_read())
        asked = sum(r.length for r in self.inflight.values())
        # Several small reads in flight: a lost request then shows as a gap in the answers to
        # the reads after it (order inference, above), not as silence to be waited out.
        while len(self.inflight) + len(out) < READS_IN_FLIGHT or (
                len(self.inflight) + len(out) < READS_MAX
                and asked < max(FLIGHT_MIN, 2 * window)):
            ranges: list[tuple[int, int]] = []
            room = window
            while self.holes and room > 0 and len(ranges) < messages.READ_RANGES:
                start, end = self.holes.pop(0)
                if end - start > room:
                    self.holes.insert(0, (start + room, end))
                    end = start + room
                ranges.append((start, end))
                room -= end - start
            if ranges:
                self.repeats += len(ranges)
            elif self.asked < self.size:
                ranges = [(self.asked, min(self.size, self.asked + window))]
                self.asked = ranges[0][1]
            else:
                probe = self._probe(out, chunk)
                if probe is not None:
                    out.append(probe)
                break
            read = Ask(ranges, chunk)
            out.append(read)
            asked += read.length
        return out

    def _probe(self, out: list[Ask], chunk: int) -> Ask | None:
        """All is asked for and reads are in flight: on a line that loses frames, a small read
        of the last bytes still missing, sent after them (like TCP's tail loss probe). Its
        answer settles the reads before it by order, so a loss at the end of what was asked
        for is asked for again at once instead of after a quiet wait; and if the last chunk
        was what got lost, the probe brings it."""
        if self.line.ber <= 0 or not (self.inflight or out) or any(
                r.probe for r in self.inflight.values()):
            return None
        missing = self._missing(self.front, self.size)
        if not missing:
            return None
        start, end = missing[-1]
        return Ask([(max(start, end - min(chunk, PROBE_MAX)), end)], chunk, probe=True)

    def sent(self, rid: int, read: Ask) -> None:
        self.inflight[rid] = read

    def on_chunk(self, offset: int, data: bytes | memoryview) -> list[bytes | memoryview]:
        """Take a chunk; return what can now be written, in order (maybe nothing). A chunk may
        overlap what came already (a late answer to a read asked again with other chunks):
        only bytes not yet held count."""
        end = offset + len(data)
        if not data or end > self.size or not self._missing(offset, end):
            self.duplicates += len(data)
            return []
        # Whose answer it is: the read that sends a chunk at this offset (a probe and the
        # read it follows ask for the same bytes on different grids), else any that holds it.
        rid = next((r for exactly in (True, False) for r, read in self.inflight.items()
                    if read.holds(offset, exactly)), None)
        out: list[bytes | memoryview] = []
        if offset > self.front:
            if len(data) > len(self.early.get(offset, b"")):
                self.early[offset] = bytes(data)
        else:
            out.append(data[self.front - offset:])
            self.front = end
            joining = True
            while joining:  # the pieces that came early and now join the front
                joining = False
                for o in sorted(o for o in self.early if o <= self.front):
                    piece = self.early.pop(o)
                    joining = True
                    if o + len(piece) > self.front:
                        out.append(piece[self.front - o:])
                        self.front = o + len(piece)
        if rid is not None:  # the chunk is held now: settling the reads before it sees it
            self.inflight[rid].got.append((offset, end))
            self._heard(rid)
        return out

    def on_done(self, rid: int, sent: int | None = None) -> None:
        """The recorder finished read `rid`, having had `sent` of the bytes asked for (fewer:
        the segment ends there): what of it did not arrive is a hole."""
        read = self.inflight.get(rid)
        if read is None:
            return
        self._heard(rid)
        del self.inflight[rid]
        if sent is not None and sent < read.length:
            self.ends_at(read.end_after(sent))
        self._settle(read, answered=True)

    def _heard(self, rid: int) -> None:
        """A sign of read `rid`: the reads sent before it are finished (see the class)."""
        for earlier in list(self.inflight):
            if earlier == rid:
                return
            read = self.inflight.pop(earlier)
            # Some of it came: the request arrived and the rest was lost. None of it: most
            # likely the request was lost, which says nothing about the data.
            self._settle(read, answered=bool(read.got))

    def on_quiet(self) -> None:
        """Nothing arrived for a while: every read in flight is as done as it will get (one
        of which some came was answered and lost the rest)."""
        reads, self.inflight = list(self.inflight.values()), {}
        for read in reads:
            self._settle(read, answered=bool(read.got))
        if not reads and not self.complete and self.asked >= self.size:
            self._add_holes(self._missing(self.front, self.size))  # the last answers were lost

    def _settle(self, read: Ask, answered: bool) -> None:
        ranges = [(a, min(b, self.size)) for a, b in read.ranges if a < self.size]
        missing = [m for a, b in ranges for m in self._missing(a, b)]
        if answered:  # the request arrived and the recorder sent it all: what is missing was lost
            c = read.chunk
            chunks = max(1, sum((b - a + c - 1) // c for a, b in ranges))
            lost = min(chunks, sum((b - a + c - 1) // c for a, b in missing))
            self.line.note(c, chunks - lost, lost)
        self._add_holes(missing)

    def _add_holes(self, ranges: list[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for a, b in sorted(self.holes + ranges):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.holes = merged

    def _missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The ranges of [start, end) not yet received (before `front` all is received)."""
        start = max(start, self.front)
        if start >= end:
            return []
        have = sorted((o, o + len(b)) for o, b in self.early.items() if o < end and
                      o + len(b) > start)
        out, at = [], start
        for a, b in have:
            if a > at:
                out.append((at, a))
            at = max(at, b)
        if at < end:
            out.append((at, end))
        return out

    def ends_at(self, end: int) -> None:
        """The recorder has no bytes at or past `end` (a read came back short there)."""
        if end >= self.size:
            return
        self.size = max(self.front, end)
        self.holes = [(a, min(b, self.size)) for a, b in self.holes if a < self.size]
        self.asked = min(self.asked, self.size)
        self.early = {o: d for o, d in self.early.items() if o < self.size}
