"""host_agent/dock/fetch.py against a simulated lossy line (no I/O): every byte arrives, in
order, once; the chunk size finds the line's optimum; goodput comes near the channel's limit.

The simulated line loses a frame of w bytes with probability 1 - (1 - BER)^(8w), in both
directions: the read request, each data chunk, the read_done. Seeded: a failure replays.
"""

from __future__ import annotations

import os
import random

import pytest

from host_agent.dock.fetch import (
    CHUNK_MAX,
    OVERHEAD,
    Ask,
    Fetch,
    LineModel,
    best_chunk,
    efficiency,
    limit,
)

REQUEST_WIRE = 60  # a read request or a read_done, framed


def lost(rng: random.Random, ber: float, wire: int) -> bool:
    return rng.random() > (1.0 - ber) ** (8 * wire)


def fetch_over(data: bytes, ber: float, seed: int) -> tuple[bytes, int, Fetch]:
    """Run a Fetch to completion over the simulated line; (bytes written, data-direction wire
    bytes spent, the fetch). The recorder answers the reads that reach it in order, one after
    another; the dock asks for more as soon as it hears anything, and calls on_quiet (counted
    in `quiets`) only when nothing more is coming."""
    rng = random.Random(seed)
    line = LineModel()
    f = Fetch(len(data), line)
    out = bytearray()
    wire = 0
    rid = 0
    queue: list[tuple[int, Ask]] = []  # reads on their way to the recorder
    f.quiets = 0  # type: ignore[attr-defined]
    while not f.complete:
        for ask in f.next_reads():
            rid += 1
            f.sent(rid, ask)
            if not lost(rng, ber, REQUEST_WIRE + 8 * (len(ask.ranges) - 1)):
                queue.append((rid, ask))  # else it never reached the recorder
        if not queue:
            assert f.inflight or f.holes, "no progress"
            f.on_quiet()  # what was not answered by now never will be
            f.quiets += 1  # type: ignore[attr-defined]
            continue
        rid_now, ask = queue.pop(0)
        for start, end in ask.ranges:
            for at in range(start, end, ask.chunk):
                piece = data[at:min(end, at + ask.chunk)]
                wire += len(piece) + OVERHEAD
                if not lost(rng, ber, len(piece) + OVERHEAD):
                    for w in f.on_chunk(at, piece):
                        out += w
        wire += REQUEST_WIRE
        if not lost(rng, ber, REQUEST_WIRE):
            f.on_done(rid_now, ask.length)
    return bytes(out), wire, f


@pytest.mark.parametrize("ber", [0.0, 1e-6, 1e-5, 1e-4, 1e-3])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_byte_arrives_once_in_order_near_the_limit(ber: float, seed: int) -> None:
    data = random.Random(seed).randbytes(1_000_000 if ber < 1e-3 else 200_000)
    got, wire, f = fetch_over(data, ber, seed)
    assert got == data
    goodput = len(data) / wire  # of the data direction's bytes, the new data
    assert goodput >= 0.7 * limit(ber), (ber, goodput, limit(ber), f.line.ber)
    # Waiting for silence is the exception (only a loss at the end of what was asked for):
    reads = len(data) // (f.chunk() * 32) + f.repeats
    assert f.quiets <= max(2, reads // 10), (f.quiets, reads)  # type: ignore[attr-defined]


def test_the_chunk_follows_the_line() -> None:
    _, _, clean = fetch_over(os.urandom(3_000_000), 0.0, 1)
    assert clean.chunk() == CHUNK_MAX and clean.repeats == 0
    data = os.urandom(1_000_000)
    _, _, noisy = fetch_over(data, 1e-4, 1)
    assert 0.5 * best_chunk(1e-4) <= noisy.chunk() <= 2 * best_chunk(1e-4)
    assert 0.5e-4 <= noisy.line.ber <= 2e-4


def test_the_optimum_is_where_the_formula_says() -> None:
    for ber in (1e-6, 1e-5, 1e-4, 1e-3):
        n = best_chunk(ber)
        assert efficiency(n, ber) >= max(efficiency(m, ber) for m in range(16, 4096, 7))
    assert limit(0.0) == pytest.approx(CHUNK_MAX / (CHUNK_MAX + OVERHEAD))
    assert 0.70 < limit(1e-4) < 0.76 and 0.30 < limit(1e-3) < 0.40


def test_a_recorder_with_fewer_bytes_ends_the_fetch_short() -> None:
    f = Fetch(1000, LineModel())
    [ask] = f.next_reads()[:1]
    f.sent(1, ask)
    assert list(f.on_chunk(0, b"x" * 600)) == [b"x" * 600]
    f.on_done(1, 600)
    assert f.complete and f.size == 600


def test_holes_are_asked_for_again_in_one_read() -> None:
    """Chunks lost here and there in one read: one read asks for all of them again (not a read
    each, with its own request and read_done on a line that loses those too)."""
    line = LineModel()
    for _ in range(20):  # a line that has been clean so far
        line.note(2048, 32, 0)
    f = Fetch(8192, line)
    [first] = f.next_reads()
    first.chunk = c = 2048
    assert first.ranges == [(0, 8192)]
    f.sent(1, first)
    for at in (0, 4096):  # the chunks at 2048 and 6144 are lost
        f.on_chunk(at, b"z" * c)
    f.on_done(1, 8192)
    assert f.holes == [(2048, 4096), (6144, 8192)]
    again, probe = f.next_reads()  # the holes, and a probe of the last bytes missing
    assert again.ranges == [(2048, 4096), (6144, 8192)] and f.repeats == 2
    assert probe.probe and probe.ranges == [(8192 - 256, 8192)]
    f.sent(2, again)
    assert f.on_chunk(2048, b"a" * c) == [b"a" * c, b"z" * c]
    f.on_done(2, 2048)  # the recorder had 2048 of the bytes asked for: its segment ends at 6144
    assert f.complete and f.size == 6144 and f.holes == []


def test_chunks_nobody_asked_for_are_counted_and_dropped() -> None:
    f = Fetch(100, LineModel())
    for ask in f.next_reads():
        f.sent(1, ask)
    assert f.on_chunk(0, b"a" * 50) == [b"a" * 50]
    assert f.on_chunk(0, b"a" * 50) == []  # again
    assert f.on_chunk(90, b"b" * 50) == []  # past the end
    assert f.duplicates == 100


def test_a_lost_read_done_is_inferred_from_the_next_read() -> None:
    """The recorder answers in order: a chunk of the second read says the first is finished, so
    its lost chunk is asked for again without waiting for silence."""
    f = Fetch(20000, LineModel())
    reads = f.next_reads()
    assert len(reads) >= 2 and reads[0].ranges[0][1] == reads[1].ranges[0][0]
    for rid, ask in enumerate(reads[:2], 1):
        f.sent(rid, ask)
    [(s1, e1)], c1 = reads[0].ranges, reads[0].chunk
    [(s2, _)], c2 = reads[1].ranges, reads[1].chunk
    for at in range(s1 + c1, e1, c1):  # the first chunk of read 1 and its done are lost
        f.on_chunk(at, b"x" * min(c1, e1 - at))
    f.on_chunk(s2, b"y" * c2)
    assert 1 not in f.inflight and f.holes == [(s1, s1 + c1)]
    assert f.line.lost == 1  # counted: the request had arrived


def test_a_late_chunk_that_overlaps_a_repeat_yields_each_byte_once() -> None:
    """A read asked again in other chunks, and then the first answer's chunk comes late: the
    bytes come out once, in order."""
    data = bytes(range(256)) * 4
    f = Fetch(len(data), LineModel())
    f.sent(1, Ask([(0, len(data))], 512))
    out = b"".join(bytes(p) for p in f.on_chunk(512, data[512:]))  # early: past a hole
    f.on_quiet()
    assert f.holes == [(0, 512)]
    out += b"".join(bytes(p) for p in f.on_chunk(300, data[300:700]))  # overlaps the early one
    assert out == b""
    out += b"".join(bytes(p) for p in f.on_chunk(0, data[0:400]))
    assert out == data and f.complete
    assert f.on_chunk(100, data[100:200]) == []


def test_a_loss_at_the_tail_is_asked_for_again_without_waiting_for_silence() -> None:
    """The last chunk of a read and its read_done are lost: the tail loss probe sent after the
    read answers, which settles the read by order, so the hole is known at once."""
    line = LineModel()
    line.note(1024, 200, 1)  # a line seen to lose a chunk now and then
    f = Fetch(4096, line, max_chunk=512)
    read, probe = f.next_reads()
    assert (read.ranges, read.chunk, read.probe) == ([(0, 4096)], 512, False)
    assert probe.probe and probe.ranges == [(4096 - 256, 4096)]
    f.sent(1, read)
    f.sent(2, probe)
    for at in range(0, 4096 - 512, 512):  # all but the last chunk, and no read_done
        f.on_chunk(at, b"d" * 512)
    assert f.on_chunk(4096 - 256, b"p" * 256) == []  # the probe's answer: past a hole
    assert f.holes == [(4096 - 512, 4096 - 256)] and list(f.inflight) == [2]
    assert f.next_reads()[0].ranges == [(4096 - 512, 4096 - 256)]
