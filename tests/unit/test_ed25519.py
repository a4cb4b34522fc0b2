"""protocol.ed25519 against RFC 8032, `cryptography`, hashlib, and real MicroPython."""

import hashlib
import json
import shutil
from math import isqrt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ed25519

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "ed25519.json").read_text()
)["vectors"]


def _reference(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def _reference_public(seed: bytes) -> bytes:
    return (
        _reference(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_rfc8032_vectors(vec):
    seed, public = bytes.fromhex(vec["seed"]), bytes.fromhex(vec["public"])
    msg, sig = bytes.fromhex(vec["msg"]), bytes.fromhex(vec["sig"])
    key = ed25519.SigningKey(seed)
    assert key.public == public
    assert ed25519.public_from_seed(seed) == public
    assert key.sign(msg) == sig
    assert ed25519.verify(public, msg, sig)
    # The vectors themselves agree with an independent implementation.
    assert _reference_public(seed) == public
    assert _reference(seed).sign(msg) == sig


def test_vector_file_has_the_five_rfc_tests():
    assert [v["name"] for v in VECTORS] == [
        "TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)",
    ]  # fmt: skip
    assert len(bytes.fromhex(VECTORS[3]["msg"])) == 1023


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=300), data=st.data())
def test_matches_cryptography_and_rejects_flipped_bits(seed, msg, data):
    key = ed25519.SigningKey(seed)
    sig = key.sign(msg)
    assert key.public == _reference_public(seed)
    assert sig == _reference(seed).sign(msg)
    Ed25519PublicKey.from_public_bytes(key.public).verify(sig, msg)  # raises if bad
    assert ed25519.verify(key.public, msg, sig)

    sig_bit = data.draw(st.integers(0, 511), label="sig bit")
    assert not ed25519.verify(key.public, msg, _flip(sig, sig_bit))
    pub_bit = data.draw(st.integers(0, 255), label="public bit")
    assert not ed25519.verify(_flip(key.public, pub_bit), msg, sig)
    if msg:
        msg_bit = data.draw(st.integers(0, len(msg) * 8 - 1), label="msg bit")
        assert not ed25519.verify(key.public, _flip(msg, msg_bit), sig)


@pytest.mark.parametrize(
    "public, msg, sig",
    [
        (b"", b"m", bytes(64)),
        (bytes(32), b"m", bytes(63)),
        (bytes(31), b"m", bytes(64)),
        (None, b"m", bytes(64)),
        (bytes(32), None, bytes(64)),
        ("text", b"m", bytes(64)),
        (b"\xff" * 32, b"m", bytes(64)),  # y >= p: not a point encoding
        (bytes(32), b"m", b"\xff" * 64),  # S >= L
    ],
)
def test_verify_returns_false_for_malformed_input(public, msg, sig):
    assert ed25519.verify(public, msg, sig) is False


def test_verify_rejects_non_canonical_s():
    key = ed25519.SigningKey(bytes(range(32)))
    sig = key.sign(b"m")
    s = int.from_bytes(sig[32:], "little") + ed25519._L  # same value mod L
    assert s < 2**256
    assert not ed25519.verify(key.public, b"m", sig[:32] + s.to_bytes(32, "little"))


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "x" * 32, None])
def test_bad_seed_raises_value_error(seed):
    with pytest.raises(ValueError):
        ed25519.SigningKey(seed)
    with pytest.raises(ValueError):
        ed25519.public_from_seed(seed)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.integers(100, 260).map(lambda n: bytes(n))))
def test_pure_sha512_matches_hashlib(data):
    assert ed25519._sha512_pure(data) == hashlib.sha512(data).digest()


@pytest.mark.parametrize("n", [0, 1, 110, 111, 112, 113, 127, 128, 129, 239, 240, 256, 1023])
def test_pure_sha512_padding_boundaries(n):
    data = bytes((i * 31 + 7) & 0xFF for i in range(n))
    assert ed25519._sha512_pure(data) == hashlib.sha512(data).digest()


def test_sha512_constants_derive_from_primes():
    primes = [n for n in range(2, 410) if all(n % d for d in range(2, isqrt(n) + 1))][:80]

    def icbrt(n):
        x = 1 << ((n.bit_length() + 2) // 3 + 1)
        while True:
            y = (2 * x + n // (x * x)) // 3
            if y >= x:
                return x
            x = y

    mask = 2**64 - 1
    assert ed25519._SHA512_K == tuple(icbrt(p << 192) & mask for p in primes)
    assert ed25519._SHA512_H0 == tuple(isqrt(p << 128) & mask for p in primes[:8])


def test_sha512_uses_hashlib_on_cpython():
    assert ed25519.sha512(b"abc") == hashlib.sha512(b"abc").digest()


@pytest.mark.skipif(shutil.which("micropython") is None, reason="micropython not installed")
def test_runs_in_micropython_with_128k_heap():
    from tests.micropython_runner import run_micropython

    done = run_micropython("tests/mpy/check_ed25519.py", heapsize="128k")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "ALL OK"
    assert "ok wycheproof 151 cases, 63 rejected" in done.stdout  # verifier edge cases too
    assert done.stdout.count("\nok ") + done.stdout.startswith("ok ") == len(VECTORS) + 1


def test_wycheproof_verdicts_on_cpython() -> None:
    from tests.micropython_runner import REPO

    cases = json.loads((REPO / "tests/vectors/wycheproof_ed25519.json").read_text())["tests"]
    wrong = [c["id"] for c in cases if ed25519.verify(bytes.fromhex(c["pk"]),
                                                      bytes.fromhex(c["msg"]),
                                                      bytes.fromhex(c["sig"])) != c["valid"]]
    assert len(cases) == 151 and wrong == []
