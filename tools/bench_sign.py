"""Time Ed25519 signing: ms per signature of a ~250-byte message.

    micropython -X heapsize=128k tools/bench_sign.py [count]   # from the repo root
    python tools/bench_sign.py [count]                         # adds `cryptography` as baseline

Under MicroPython, also prints the heap in use once the key and comb table exist.
"""

import sys

try:
    from time import ticks_diff, ticks_us
except ImportError:  # CPython
    from time import perf_counter

    def ticks_us():
        return int(perf_counter() * 1_000_000)

    def ticks_diff(a, b):
        return a - b


from protocol import ed25519  # noqa: E402

SEED = bytes(range(32))
MSG = bytes(i * 7 & 0xFF for i in range(250))


def bench(label, sign, count):
    sign(MSG)  # warm-up: builds the comb table
    start = ticks_us()
    for _ in range(count):
        sign(MSG)
    ms = ticks_diff(ticks_us(), start) / count / 1000
    print(f"{label}: {ms:.2f} ms/signature ({count} signatures)")


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    start = ticks_us()
    key = ed25519.SigningKey(SEED)  # includes the one-time comb table build
    print(f"SigningKey() incl. comb table: {ticks_diff(ticks_us(), start) / 1000:.1f} ms")
    bench(f"protocol.ed25519 ({sys.implementation.name})", key.sign, count)
    try:
        import gc

        import micropython

        gc.collect()
        print(f"heap in use after signing: {gc.mem_alloc()} bytes")
        micropython.mem_info()
    except ImportError:
        pass
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        return
    ref = Ed25519PrivateKey.from_private_bytes(SEED)
    assert ref.sign(MSG) == key.sign(MSG)
    bench("cryptography (OpenSSL)", ref.sign, count)
    sig = key.sign(MSG)
    bench("protocol.ed25519 verify", lambda m: ed25519.verify(key.public, m, sig), count)


main()
