"""Fuzz the device's decoders inside MicroPython, from the repository root:

    micropython -X heapsize=256k tests/mpy/fuzz_device.py [ITERATIONS] [SEED]

Random and mutated frames and payloads (from the golden vectors) go to
protocol.framing.FrameDecoder, protocol.messages.parse_payload, protocol.cbor.decode and
protocol.cose.parse_sign1. Passes when, for every input:
  - only the documented error is raised (none for the frame decoder; ProtocolError,
    CBORError, CoseError for the others) -- a MemoryError, IndexError, ... is a bug;
  - the frame decoder's buffer stays bounded and yields only payloads that were framed;
and at the end the heap in use (after gc.collect) is within 4 KB of what it was at the start.
Iterations are bounded; the pytest wrapper adds a timeout. Prints "FUZZ OK ..." or FAIL lines.
"""

import gc
import json
import sys
import time
from binascii import hexlify, unhexlify

from protocol import cbor, cose, framing, messages

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
_state = [int(sys.argv[2]) if len(sys.argv) > 2 else 1]
MAX_PAYLOAD = 4096


def rand32():
    # xorshift32: the same sequence on every port, no dependence on the random module.
    x = _state[0] or 0x9E3779B9
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    _state[0] = x
    return x


def below(n):
    return rand32() % n if n > 0 else 0


def random_bytes(n):
    return bytes(rand32() & 0xFF for _ in range(n))


def mutate(src):
    data = bytearray(src)
    for _ in range(1 + below(4)):
        op = below(5)
        at = below(len(data)) if data else 0
        if op == 0 and data:
            data[at] ^= 1 << below(8)
        elif op == 1 and data:
            data[at] = below(256)
        elif op == 2:  # (MicroPython's bytearray has no del or resizing slice assignment)
            data = data[:at] + random_bytes(1 + below(8)) + data[at:]
        elif op == 3 and data:
            data = data[:at] + data[at + 1 + below(8):]
        else:
            # a large length where one may be: CBOR heads and frame lengths claim 4 GB
            data = data[:at] + bytes([0x5A, 0xFF, 0xFF, 0xFF, 0xF0]) + data[at:]
    return bytes(data)


with open("tests/vectors/protocol.json") as f:
    vec = json.load(f)
PAYLOADS = [unhexlify(v["payload"]) for v in vec["frames"]]
PAYLOADS += [unhexlify(v["payload"]) for v in vec["messages"]]
PAYLOADS += [unhexlify(v["payload"]) for v in vec["data"]]
RECORDS = [unhexlify(v["record"]) for v in vec["records"]]
del vec

failures = []
counts = {}


def fail(what, data, exc):
    failures.append(what)
    print("FAIL %s: %s %r on %s" % (what, type(exc).__name__, exc, hexlify(data[:200])))


def expect(what, func, data, allowed):
    try:
        func(data)
        counts[what + ":ok"] = counts.get(what + ":ok", 0) + 1
    except allowed:
        counts[what + ":err"] = counts.get(what + ":err", 0) + 1
    except Exception as exc:  # noqa: BLE001 - any other type is the finding
        fail(what, data, exc)


def pick(items):
    return items[below(len(items))]


def one_input():
    kind = below(4)
    if kind == 0:
        return random_bytes(below(300))
    if kind == 1:
        return mutate(pick(PAYLOADS))
    if kind == 2:
        return mutate(pick(RECORDS))
    return b"M" + mutate(pick(PAYLOADS)[1:])


def fuzz_frames(decoder):
    sent = [pick(PAYLOADS) for _ in range(1 + below(4))]
    stream = bytearray()
    for p in sent:
        stream += framing.encode_frame(p)
        if below(2):
            stream += random_bytes(below(20))
    stream = mutate(stream) if below(2) else bytes(stream)
    step = 1 + below(64)
    try:
        for i in range(0, len(stream), step):
            decoder.receive_data(stream[i:i + step])
            while True:
                p = decoder.next_frame()
                if p is None:
                    break
                if p not in sent:
                    fail("framing yields an unsent payload", p, ValueError("unsent"))
        if decoder.buffered() > framing.HEADER_SIZE + MAX_PAYLOAD + framing.TRAILER_SIZE:
            fail("framing buffer unbounded", stream, ValueError(decoder.buffered()))
        decoder.take_noise()
    except Exception as exc:  # noqa: BLE001
        fail("framing", stream, exc)


def main():
    gc.collect()
    before = gc.mem_alloc()
    t0 = time.ticks_ms()
    decoder = framing.FrameDecoder(max_payload=MAX_PAYLOAD)
    for _ in range(N):
        data = one_input()
        expect("parse_payload", messages.parse_payload, data, messages.ProtocolError)
        expect("cbor", cbor.decode, data[1:] if data[:1] == b"M" else data, cbor.CBORError)
        expect("cose", cose.parse_sign1, data, cose.CoseError)
        fuzz_frames(decoder)
        if len(failures) > 20:
            break
    del decoder
    gc.collect()
    after = gc.mem_alloc()
    ms = time.ticks_diff(time.ticks_ms(), t0)
    print("iterations=%d ms=%d mem_before=%d mem_after=%d counts=%s"
          % (N, ms, before, after, sorted(counts.items())))
    if after - before > 4096:
        failures.append("heap grew by %d bytes" % (after - before))
        print("FAIL heap grew by %d bytes over the loop" % (after - before))
    if failures:
        print("FAILED: %d" % len(failures))
        sys.exit(1)
    print("FUZZ OK")


main()
