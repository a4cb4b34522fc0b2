"""Ed25519 signatures (RFC 8032), pure Python for MicroPython and CPython alike.

The same file runs on the MicroPython unix port and on CPython, so it sticks to
plain ints, tuples and lists: no typing at runtime, no dataclasses.

Signing is what the device does for every segment manifest, so that path is
tuned: the base point multiple [r]B uses a fixed-base comb table (built lazily
once, 24 KB packed in a bytearray), and field inversion uses the extended
Euclidean algorithm because MicroPython's three-argument pow is ~6x slower.

Not constant-time: big-int arithmetic in either runtime leaks timing. That is
acceptable for a recorder signing its own evidence, not for a shared host.
"""

import gc
import struct

from protocol.compat import const

try:
    from hashlib import sha512 as _hashlib_sha512
except ImportError:  # MicroPython ships sha256/sha1/md5 only
    _hashlib_sha512 = None


# --- SHA-512 (FIPS 180-4), used only where hashlib lacks it -----------------

# FIPS 180-4 constants, big-endian 64-bit words: K, the first 64 bits of the fractional parts
# of the cube roots of the first 80 primes, then H0, of the square roots of the first 8; tests
# re-derive them from the primes. Kept as bytes: as int literals they would be 88 big ints held
# by the module's constant table for good (the literals of a module live as long as it does).
_SHA512_CONSTANTS = bytes.fromhex(
    "428a2f98d728ae22 7137449123ef65cd b5c0fbcfec4d3b2f e9b5dba58189dbbc"
    "3956c25bf348b538 59f111f1b605d019 923f82a4af194f9b ab1c5ed5da6d8118"
    "d807aa98a3030242 12835b0145706fbe 243185be4ee4b28c 550c7dc3d5ffb4e2"
    "72be5d74f27b896f 80deb1fe3b1696b1 9bdc06a725c71235 c19bf174cf692694"
    "e49b69c19ef14ad2 efbe4786384f25e3 0fc19dc68b8cd5b5 240ca1cc77ac9c65"
    "2de92c6f592b0275 4a7484aa6ea6e483 5cb0a9dcbd41fbd4 76f988da831153b5"
    "983e5152ee66dfab a831c66d2db43210 b00327c898fb213f bf597fc7beef0ee4"
    "c6e00bf33da88fc2 d5a79147930aa725 06ca6351e003826f 142929670a0e6e70"
    "27b70a8546d22ffc 2e1b21385c26c926 4d2c6dfc5ac42aed 53380d139d95b3df"
    "650a73548baf63de 766a0abb3c77b2a8 81c2c92e47edaee6 92722c851482353b"
    "a2bfe8a14cf10364 a81a664bbc423001 c24b8b70d0f89791 c76c51a30654be30"
    "d192e819d6ef5218 d69906245565a910 f40e35855771202a 106aa07032bbd1b8"
    "19a4c116b8d2d0c8 1e376c085141ab53 2748774cdf8eeb99 34b0bcb5e19b48a8"
    "391c0cb3c5c95a63 4ed8aa4ae3418acb 5b9cca4f7763e373 682e6ff3d6b2b8a3"
    "748f82ee5defb2fc 78a5636f43172f60 84c87814a1f0ab72 8cc702081a6439ec"
    "90befffa23631e28 a4506cebde82bde9 bef9a3f7b2c67915 c67178f2e372532b"
    "ca273eceea26619c d186b8c721c0c207 eada7dd6cde0eb1e f57d4f7fee6ed178"
    "06f067aa72176fba 0a637dc5a2c898a6 113f9804bef90dae 1b710b35131c471b"
    "28db77f523047d84 32caab7b40c72493 3c9ebe0a15c9bebc 431d67c49c100d4c"
    "4cc5d4becb3e42b6 597f299cfc657e2a 5fcb6fab3ad6faec 6c44198c4a475817"
    # H0
    "6a09e667f3bcc908 bb67ae8584caa73b 3c6ef372fe94f82b a54ff53a5f1d36f1"
    "510e527fade682d1 9b05688c2b3e6c1f 1f83d9abfb41bd6b 5be0cd19137e2179"
)
if _hashlib_sha512 is not None:  # CPython: the words themselves, for the tests
    _SHA512_K = struct.unpack(">80Q", _SHA512_CONSTANTS[:640])
    _SHA512_H0 = struct.unpack(">8Q", _SHA512_CONSTANTS[640:])

# The pure version works on 64-bit words split into 32-bit halves: on the
# 64-bit unix port those stay small ints, while whole 64-bit words become
# heap-allocated big ints at every operation (measured: 1.33 ms per block
# with 64-bit words, 0.27 ms with halves).
_M32 = const(0xFFFFFFFF)
_SHA512_KH = struct.unpack_from(">" + "I4x" * 80, _SHA512_CONSTANTS)  # high halves of K
_SHA512_KL = struct.unpack_from(">" + "4xI" * 80, _SHA512_CONSTANTS)  # low halves
# One message schedule reused by every block: no 80-int lists per block.
_sha512_wh = [0] * 80
_sha512_wl = [0] * 80
_SHA512_W_CLEAR = (0,) * 80


def _sha512_pure(data):
    """SHA-512 of `data` in pure Python (for runtimes without hashlib.sha512)."""
    data = bytes(data)
    n = len(data)
    # Pad: 0x80, zeros to 112 mod 128, then the bit length as 128-bit big-endian.
    msg = data + b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    m = _M32
    kh = _SHA512_KH
    kl = _SHA512_KL
    wh = _sha512_wh
    wl = _sha512_wl
    # State words as (high, low) 32-bit halves: h0h, h0l, ... h7h, h7l.
    h0h, h0l, h1h, h1l, h2h, h2l, h3h, h3l, h4h, h4l, h5h, h5l, h6h, h6l, h7h, h7l = (
        struct.unpack_from(">16I", _SHA512_CONSTANTS, 640)  # H0
    )
    for off in range(0, len(msg), 128):
        words = struct.unpack_from(">32I", msg, off)
        for t in range(16):
            wh[t] = words[2 * t]
            wl[t] = words[2 * t + 1]
        for t in range(16, 80):
            # sigma0 = rotr1 ^ rotr8 ^ shr7 of w[t-15]
            xh = wh[t - 15]
            xl = wl[t - 15]
            # (x & 1) << 31, not x << 31: every value stays below 2**62, a small int on the
            # 64-bit unix port, where the shifted-out bits would have made a big int to mask.
            s0h = (xh >> 1 | (xl & 1) << 31) ^ (xh >> 8 | xl << 24) ^ (xh >> 7)
            s0l = (xl >> 1 | (xh & 1) << 31) ^ (xl >> 8 | xh << 24) ^ (xl >> 7 | xh << 25)
            # sigma1 = rotr19 ^ rotr61 ^ shr6 of w[t-2]
            xh = wh[t - 2]
            xl = wl[t - 2]
            s1h = (xh >> 19 | xl << 13) ^ (xl >> 29 | xh << 3) ^ (xh >> 6)
            s1l = (xl >> 19 | xh << 13) ^ (xh >> 29 | xl << 3) ^ (xl >> 6 | xh << 26)
            lo = (s0l & m) + (s1l & m) + wl[t - 7] + wl[t - 16]
            wl[t] = lo & m
            wh[t] = ((s0h & m) + (s1h & m) + wh[t - 7] + wh[t - 16] + (lo >> 32)) & m
        ah, al, bh, bl, ch, cl, dh, dl = h0h, h0l, h1h, h1l, h2h, h2l, h3h, h3l
        eh, el, fh, fl, gh, gl, hh, hl = h4h, h4l, h5h, h5l, h6h, h6l, h7h, h7l
        for t in range(80):
            # Sigma1 = rotr14 ^ rotr18 ^ rotr41 of e
            s1h = (eh >> 14 | el << 18) ^ (eh >> 18 | el << 14) ^ (el >> 9 | eh << 23)
            s1l = (el >> 14 | eh << 18) ^ (el >> 18 | eh << 14) ^ (eh >> 9 | el << 23)
            lo = hl + (s1l & m) + ((el & fl) ^ (~el & gl)) + kl[t] + wl[t]
            t1h = hh + (s1h & m) + ((eh & fh) ^ (~eh & gh)) + kh[t] + wh[t] + (lo >> 32)
            t1l = lo & m
            # Sigma0 = rotr28 ^ rotr34 ^ rotr39 of a
            s0h = (ah >> 28 | al << 4) ^ (al >> 2 | ah << 30) ^ (al >> 7 | ah << 25)
            s0l = (al >> 28 | ah << 4) ^ (ah >> 2 | al << 30) ^ (ah >> 7 | al << 25)
            hh, hl, gh, gl, fh, fl = gh, gl, fh, fl, eh, el
            lo = dl + t1l
            el = lo & m
            eh = (dh + t1h + (lo >> 32)) & m
            dh, dl = ch, cl
            lo = t1l + (s0l & m) + ((al & bl) ^ (al & cl) ^ (bl & cl))
            t1h += (s0h & m) + ((ah & bh) ^ (ah & ch) ^ (bh & ch)) + (lo >> 32)
            ch, cl, bh, bl = bh, bl, ah, al
            al = lo & m
            ah = t1h & m
        # Add the block's result into the state, carrying low halves into high.
        lo = h0l + al
        h0l, h0h = lo & m, (h0h + ah + (lo >> 32)) & m
        lo = h1l + bl
        h1l, h1h = lo & m, (h1h + bh + (lo >> 32)) & m
        lo = h2l + cl
        h2l, h2h = lo & m, (h2h + ch + (lo >> 32)) & m
        lo = h3l + dl
        h3l, h3h = lo & m, (h3h + dh + (lo >> 32)) & m
        lo = h4l + el
        h4l, h4h = lo & m, (h4h + eh + (lo >> 32)) & m
        lo = h5l + fl
        h5l, h5h = lo & m, (h5h + fh + (lo >> 32)) & m
        lo = h6l + gl
        h6l, h6h = lo & m, (h6h + gh + (lo >> 32)) & m
        lo = h7l + hl
        h7l, h7h = lo & m, (h7h + hh + (lo >> 32)) & m
    # Where halves are big ints (ports with 31-bit small ints), ints left in the
    # schedule would pin blocks all over the heap and fragment it: drop them.
    wh[0:80] = _SHA512_W_CLEAR
    wl[0:80] = _SHA512_W_CLEAR
    return struct.pack(
        ">16I", h0h, h0l, h1h, h1l, h2h, h2l, h3h, h3l, h4h, h4l, h5h, h5l, h6h, h6l, h7h, h7l
    )


def sha512(data):
    """SHA-512 digest: hashlib's when the runtime has it, else the pure version."""
    if _hashlib_sha512 is not None:
        return _hashlib_sha512(data).digest()
    return _sha512_pure(data)


# --- Field GF(2^255 - 19) and the curve ------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # order of the base point
_MASK255 = 2**255 - 1


def _inv(z):
    """z^-1 mod p by extended Euclid (much faster than pow(z, p-2, p) on MicroPython)."""
    a, b = z % _P, _P
    x0, x1 = 1, 0
    while b:
        q, r = divmod(a, b)
        a, b = b, r
        x0, x1 = x1, x0 - q * x1
    return x0 % _P


_D = -121665 * _inv(121666) % _P
_D2 = 2 * _D % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

# A point is a tuple (X, Y, Z, T) in extended twisted Edwards coordinates:
# x = X/Z, y = Y/Z, x*y = T/Z. Precomputed affine points are kept as
# "Niels" triples (y+x, y-x, 2*d*x*y), which make a mixed addition 7 multiplies.
_IDENTITY = (0, 1, 1, 0)
_NIELS_IDENTITY = (1, 1, 0)


def _to_niels(pt):
    x, y, z, _ = pt
    zi = _inv(z)
    x = x * zi % _P
    y = y * zi % _P
    return ((y + x) % _P, (y - x) % _P, x * y % _P * _D2 % _P)


def _from_niels(n):
    yp, ym, t2d = n
    # x = (yp - ym) / 2, y = (yp + ym) / 2; halving mod p is multiplying by (p+1)/2.
    half = (_P + 1) // 2
    x = (yp - ym) * half % _P
    y = (yp + ym) * half % _P
    return (x, y, 1, x * y % _P)


def _encode(pt):
    x, y, z, _ = pt
    zi = _inv(z)
    x = x * zi % _P
    y = y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode(s):
    """Decode a 32-byte point encoding (RFC 8032 5.1.3); None if invalid."""
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= _MASK255
    if y >= _P:
        return None
    p = _P
    u = (y * y - 1) % p
    v = (_D * y * y + 1) % p
    v3 = v * v % p * v % p
    x = u * v3 % p * pow(u * v3 % p * v3 % p * v % p, (p - 5) // 8, p) % p
    vx2 = v * x % p * x % p
    if vx2 == (p - u) % p:
        x = x * _SQRT_M1 % p
    elif vx2 != u:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return (x, y, 1, x * y % p)


_BASE = _decode((4 * _inv(5) % _P).to_bytes(32, "little"))


# --- Fixed-base comb for [s]B ------------------------------------------------
# Lim-Lee comb: write s as _TEETH rows of _SPACING bits; column j picks the
# subset sum of rows' bits at position j. [s]B then costs _SPACING doublings
# and _SPACING mixed additions. 8 teeth x 32 spacing covers 256-bit scalars
# with a 256-entry table; 4-bit windows would need 64 additions and twice the
# table. Entries are packed as 3 x 32-byte little-endian ints in bytearrays
# (24 KB in all): as int objects the same table took ~88 KB of MicroPython
# heap, and unpacking 3 ints per addition costs ~1.5 us. The bytes are split
# into 1.5 KB chunks because a fragmented 128 KB heap often has no free 24 KB
# run (nor a 3 KB one, measured).
_TEETH = const(8)
_SPACING = const(32)
_COLUMN_MASK = const(0xFFFFFFFF)  # _SPACING ones
_ENTRY = const(96)  # bytes per Niels triple
_CHUNK_BITS = const(4)  # 16 entries per chunk
_CHUNK_MASK = const(15)
_comb = None


def _put_niels(table, i, n):
    buf = table[i >> _CHUNK_BITS]
    o = (i & _CHUNK_MASK) * _ENTRY
    buf[o : o + 32] = n[0].to_bytes(32, "little")
    buf[o + 32 : o + 64] = n[1].to_bytes(32, "little")
    buf[o + 64 : o + 96] = n[2].to_bytes(32, "little")


def _get_niels(table, i):
    buf = table[i >> _CHUNK_BITS]
    o = (i & _CHUNK_MASK) * _ENTRY
    return (
        int.from_bytes(buf[o : o + 32], "little"),
        int.from_bytes(buf[o + 32 : o + 64], "little"),
        int.from_bytes(buf[o + 64 : o + 96], "little"),
    )


def _comb_table():
    global _comb
    if _comb is not None:
        return _comb
    # Allocate the table first, while the heap is least fragmented; the row
    # computations below leave small live ints scattered across it.
    gc.collect()
    size = _ENTRY << _CHUNK_BITS
    table = [memoryview(bytearray(size)) for _ in range(1 << (_TEETH - _CHUNK_BITS))]
    # Row bases 2^(t*_SPACING) * B, t = 0.._TEETH-1, as Niels triples.
    rows = []
    pt = _BASE
    for t in range(_TEETH):
        if t:
            for _ in range(_SPACING):
                pt = _add_cached(pt, _to_cached(pt))  # the formulas are complete: doubling
        rows.append(_to_cached(pt))
    _put_niels(table, 0, _NIELS_IDENTITY)
    for i in range(1, 1 << _TEETH):
        top = 0
        while i >> (top + 1):
            top += 1
        # Entry i = entry (i without its top bit) + row base `top`.
        rest = _from_niels(_get_niels(table, i ^ (1 << top)))
        _put_niels(table, i, _to_niels(_add_cached(rest, rows[top])))
    _comb = table
    return table


def _base_mul(s):
    """[s]B for 0 <= s < 2^256 (extended coordinates)."""
    table = _comb_table()
    # Rows of the comb as small ints; column j takes bit j of each row.
    rows = [(s >> (t * _SPACING)) & _COLUMN_MASK for t in range(_TEETH)]
    p = _P
    x, y, z, tt = _IDENTITY
    for j in range(_SPACING - 1, -1, -1):
        # The loop body is a doubling (dbl-2008-hwcd for a = -1, signs folded so no
        # negation is needed) and a mixed addition (add-2008-hwcd-3, Z2 = 1) inlined: this
        # is the device's hot path, and MicroPython calls and tuples cost.
        if j != _SPACING - 1:
            a = x * x % p
            b = y * y % p
            c = 2 * z * z % p
            h = a + b
            e = h - (x + y) * (x + y) % p
            g = a - b
            f = c + g
            x = e * f % p
            y = g * h % p
            z = f * g % p
            tt = e * h % p
        i = 0
        for t in range(_TEETH - 1, -1, -1):
            i = (i << 1) | ((rows[t] >> j) & 1)
        # Adding the identity entry when i == 0 keeps the operation count fixed.
        buf = table[i >> _CHUNK_BITS]
        o = (i & _CHUNK_MASK) * _ENTRY
        a = (y - x) * int.from_bytes(buf[o + 32 : o + 64], "little") % p
        b = (y + x) * int.from_bytes(buf[o : o + 32], "little") % p
        c = tt * int.from_bytes(buf[o + 64 : o + 96], "little") % p
        d = 2 * z
        e = b - a
        f = d - c
        g = d + c
        h = b + a
        x = e * f % p
        y = g * h % p
        z = f * g % p
        tt = e * h % p
    return (x, y, z, tt)


def _to_cached(pt):
    """An extended point as (Y+X, Y-X, 2Z, 2dT): added to another with no inversion."""
    x, y, z, t = pt
    p = _P
    return ((y + x) % p, (y - x) % p, 2 * z % p, t * _D2 % p)


def _var_mul(s, pt):
    """[s]pt for a variable point, 4-bit fixed windows (used by verify only).

    The window holds 0..15 times pt in cached form (no field inversion: each would cost a
    Euclid run of big-int divisions), packed like the comb (16 small bytearrays: 2 KB, not 64
    int objects, and no 2 KB run needed in a fragmented heap), and the doubling and addition
    are inlined as in _base_mul: on MicroPython every call of a function with this many
    locals allocates its frame, and every tuple is an allocation."""
    one = _to_cached(pt)
    table = [_packed((1, 1, 2, 0)), _packed(one)]  # 0 (the identity) and 1 times pt
    acc = pt
    for _ in range(14):
        acc = _add_cached(acc, one)
        table.append(_packed(_to_cached(acc)))
    one = acc = None
    p = _P
    x, y, z, tt = _IDENTITY
    for shift in range(252, -4, -4):
        if shift != 252:
            for _ in range(4):
                a = x * x % p
                b = y * y % p
                c = 2 * z * z % p
                h = a + b
                e = h - (x + y) * (x + y) % p
                g = a - b
                f = c + g
                x = e * f % p
                y = g * h % p
                z = f * g % p
                tt = e * h % p
        n = table[(s >> shift) & 15]
        a = (y - x) * int.from_bytes(n[32:64], "little") % p
        b = (y + x) * int.from_bytes(n[0:32], "little") % p
        c = tt * int.from_bytes(n[96:128], "little") % p
        d = z * int.from_bytes(n[64:96], "little") % p
        e = b - a
        f = d - c
        g = d + c
        h = b + a
        x = e * f % p
        y = g * h % p
        z = f * g % p
        tt = e * h % p
    return (x, y, z, tt)


def _packed(n):
    """A cached point as 128 bytes (4 x 32, little-endian)."""
    return b"".join(v.to_bytes(32, "little") for v in n)


def _add_cached(pt, n):
    # add-2008-hwcd-4 (a = -1, k = 2d) with a cached second operand.
    x, y, z, t = pt
    yp, ym, z2, t2d = n
    p = _P
    a = (y - x) * ym % p
    b = (y + x) * yp % p
    c = t * t2d % p
    d = z * z2 % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


# --- RFC 8032 Ed25519 --------------------------------------------------------


def _expand(seed):
    if not isinstance(seed, (bytes, bytearray, memoryview)):
        raise ValueError("Ed25519 seed must be bytes")
    seed = bytes(seed)
    if len(seed) != 32:
        raise ValueError("Ed25519 seed must be 32 bytes")
    h = sha512(seed)
    # Clamp (RFC 8032 5.1.5): clear the low 3 bits and bit 255, set bit 254.
    a = int.from_bytes(h[:32], "little")
    a = (a & ((1 << 254) - 8)) | (1 << 254)
    return a, h[32:]


def public_from_seed(seed):
    """The 32-byte public key for a 32-byte seed."""
    a, _ = _expand(seed)
    return _encode(_base_mul(a))


class SigningKey:
    """An Ed25519 private key; the expensive per-key work happens once, here."""

    def __init__(self, seed):
        a, prefix = _expand(seed)
        self._scalar = a % _L  # same signatures; smaller k*a product per sign
        self._prefix = prefix
        self.public = _encode(_base_mul(a))

    def sign(self, msg):
        """The 64-byte RFC 8032 signature of `msg`."""
        msg = bytes(msg)
        r = int.from_bytes(sha512(self._prefix + msg), "little") % _L
        big_r = _encode(_base_mul(r))
        k = int.from_bytes(sha512(big_r + self.public + msg), "little") % _L
        s = (r + k * self._scalar) % _L
        return big_r + s.to_bytes(32, "little")


def verify(public, msg, sig):
    """True iff `sig` is a valid signature of `msg` under `public`.

    Checks [S]B == R + [k]A by re-encoding [S]B - [k]A and comparing with R,
    as OpenSSL does; non-canonical S (>= L) and invalid A are rejected.
    Returns False, never raises, for malformed input.
    """
    try:
        public = bytes(public)
        msg = bytes(msg)
        sig = bytes(sig)
    except (TypeError, ValueError):
        return False
    if len(public) != 32 or len(sig) != 64:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= _L:
        return False
    a_pt = _decode(public)
    if a_pt is None:
        return False
    k = int.from_bytes(sha512(sig[:32] + public + msg), "little") % _L
    x, y, z, t = a_pt
    minus_a = ((_P - x) % _P, y, z, (_P - t) % _P)
    check = _add_cached(_var_mul(k, minus_a), _to_cached(_base_mul(s)))
    return _encode(check) == sig[:32]
