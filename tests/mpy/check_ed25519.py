"""Check protocol.ed25519 against the RFC 8032 vectors and Project Wycheproof's verifier edge
cases (non-canonical S, small-order and non-canonical points, truncated and over-long
signatures), under MicroPython or CPython.

Run from the repository root: `micropython tests/mpy/check_ed25519.py`.
Prints one line per RFC vector and one for Wycheproof, then "ALL OK"; exits 1 on the first
failure.
"""

import json
import sys
from binascii import hexlify, unhexlify

sys.path.insert(0, ".")  # CPython puts tests/mpy first, not the repo root
from protocol import ed25519  # noqa: E402

VECTORS = "tests/vectors/ed25519.json"
WYCHEPROOF = "tests/vectors/wycheproof_ed25519.json"


def fail(name, what, got, want):
    print("FAIL", name, what, "got", hexlify(got).decode(), "want", hexlify(want).decode())
    sys.exit(1)


def check(vec):
    name = vec["name"]
    seed = unhexlify(vec["seed"])
    public = unhexlify(vec["public"])
    msg = unhexlify(vec["msg"])
    sig = unhexlify(vec["sig"])
    key = ed25519.SigningKey(seed)
    if key.public != public:
        fail(name, "public", key.public, public)
    got = key.sign(msg)
    if got != sig:
        fail(name, "sign", got, sig)
    if ed25519.public_from_seed(seed) != public:
        fail(name, "public_from_seed", ed25519.public_from_seed(seed), public)
    if not ed25519.verify(public, msg, sig):
        fail(name, "verify rejected a good signature", sig, sig)
    bad = bytearray(sig)
    bad[5] ^= 0x10  # a flipped bit in R
    if ed25519.verify(public, msg, bytes(bad)):
        fail(name, "verify accepted a bad R", bad, sig)
    bad = bytearray(sig)
    bad[40] ^= 0x01  # a flipped bit in S
    if ed25519.verify(public, msg, bytes(bad)):
        fail(name, "verify accepted a bad S", bad, sig)
    if ed25519.verify(public, msg + b"\x00", sig):
        fail(name, "verify accepted a changed message", sig, sig)
    print("ok", name, "msg bytes", len(msg))


def main():
    with open(VECTORS) as f:
        vectors = json.load(f)["vectors"]
    if not vectors:
        print("FAIL no vectors in", VECTORS)
        sys.exit(1)
    for vec in vectors:
        check(vec)
    # The pure SHA-512 is what MicroPython uses; pin it on CPython too.
    if ed25519._sha512_pure(b"abc") != unhexlify(vectors[-1]["msg"]):
        print("FAIL _sha512_pure(b'abc')")
        sys.exit(1)
    check_wycheproof()
    print("ALL OK")


def check_wycheproof():
    """A verifier meets inputs no signer produces: accept exactly what Wycheproof calls valid."""
    rejected = total = 0
    with open(WYCHEPROOF) as f:
        for line in f:  # one case per line: a 128 KiB heap cannot hold the whole file parsed
            line = line.strip().rstrip(",")
            if not line.startswith('{"id"'):
                continue
            rejected += check_case(json.loads(line))
            total += 1
    if total != 151:
        print("FAIL wycheproof: read", total, "cases, not 151")
        sys.exit(1)
    print("ok wycheproof", total, "cases,", rejected, "rejected as they must be")


def check_case(t):
    """1 if the case is (rightly) rejected, 0 if (rightly) accepted; exits on a wrong verdict."""
    got = ed25519.verify(unhexlify(t["pk"]), unhexlify(t["msg"]), unhexlify(t["sig"]))
    if got != t["valid"]:
        print("FAIL wycheproof", t["id"], t["comment"], "verify said", got)
        sys.exit(1)
    return 0 if got else 1


main()
