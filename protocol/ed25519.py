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

# First 64 bits of the fractional parts of the cube roots of the first 80
# primes; tests re-derive them from the primes.
_SHA512_K = (
    0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
    0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242, 0x12835B0145706FBE, 0x243185BE4EE4B28C, 0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F, 0x80DEB1FE3B1696B1, 0x9BDC06A725C71235, 0xC19BF174CF692694,
    0xE49B69C19EF14AD2, 0xEFBE4786384F25E3, 0x0FC19DC68B8CD5B5, 0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275, 0x4A7484AA6EA6E483, 0x5CB0A9DCBD41FBD4, 0x76F988DA831153B5,
    0x983E5152EE66DFAB, 0xA831C66D2DB43210, 0xB00327C898FB213F, 0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2, 0xD5A79147930AA725, 0x06CA6351E003826F, 0x142929670A0E6E70,
    0x27B70A8546D22FFC, 0x2E1B21385C26C926, 0x4D2C6DFC5AC42AED, 0x53380D139D95B3DF,
    0x650A73548BAF63DE, 0x766A0ABB3C77B2A8, 0x81C2C92E47EDAEE6, 0x92722C851482353B,
    0xA2BFE8A14CF10364, 0xA81A664BBC423001, 0xC24B8B70D0F89791, 0xC76C51A30654BE30,
    0xD192E819D6EF5218, 0xD69906245565A910, 0xF40E35855771202A, 0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8, 0x1E376C085141AB53, 0x2748774CDF8EEB99, 0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63, 0x4ED8AA4AE3418ACB, 0x5B9CCA4F7763E373, 0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC, 0x78A5636F43172F60, 0x84C87814A1F0AB72, 0x8CC702081A6439EC,
    0x90BEFFFA23631E28, 0xA4506CEBDE82BDE9, 0xBEF9A3F7B2C67915, 0xC67178F2E372532B,
    0xCA273ECEEA26619C, 0xD186B8C721C0C207, 0xEADA7DD6CDE0EB1E, 0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA, 0x0A637DC5A2C898A6, 0x113F9804BEF90DAE, 0x1B710B35131C471B,
    0x28DB77F523047D84, 0x32CAAB7B40C72493, 0x3C9EBE0A15C9BEBC, 0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6, 0x597F299CFC657E2A, 0x5FCB6FAB3AD6FAEC, 0x6C44198C4A475817,
)  # fmt: skip

# First 64 bits of the fractional parts of the square roots of the first 8 primes.
_SHA512_H0 = (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
)  # fmt: skip

# The pure version works on 64-bit words split into 32-bit halves: on the
# 64-bit unix port those stay small ints, while whole 64-bit words become
# heap-allocated big ints at every operation (measured: 1.33 ms per block
# with 64-bit words, 0.27 ms with halves).
_M32 = const(0xFFFFFFFF)
_SHA512_KH = tuple(k >> 32 for k in _SHA512_K)
_SHA512_KL = tuple(k & 0xFFFFFFFF for k in _SHA512_K)
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
    h0h, h0l, h1h, h1l, h2h, h2l, h3h, h3l, h4h, h4l, h5h, h5l, h6h, h6l, h7h, h7l = struct.unpack(
        ">16I", struct.pack(">8Q", *_SHA512_H0)
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
            s0h = (xh >> 1 | xl << 31) ^ (xh >> 8 | xl << 24) ^ (xh >> 7)
            s0l = (xl >> 1 | xh << 31) ^ (xl >> 8 | xh << 24) ^ (xl >> 7 | xh << 25)
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


def _double(pt):
    # dbl-2008-hwcd for a = -1, signs folded so no negation is needed.
    x, y, z, _ = pt
    p = _P
    a = x * x % p
    b = y * y % p
    c = 2 * z * z % p
    h = a + b
    e = h - (x + y) * (x + y) % p
    g = a - b
    f = c + g
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _add_niels(pt, n):
    # add-2008-hwcd-3 (a = -1) with an affine second operand (Z2 = 1).
    x, y, z, t = pt
    yp, ym, t2d = n
    p = _P
    a = (y - x) * ym % p
    b = (y + x) * yp % p
    c = t * t2d % p
    d = 2 * z
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


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
                pt = _double(pt)
        rows.append(_to_niels(pt))
    _put_niels(table, 0, _NIELS_IDENTITY)
    for i in range(1, 1 << _TEETH):
        top = 0
        while i >> (top + 1):
            top += 1
        # Entry i = entry (i without its top bit) + row base `top`.
        rest = _from_niels(_get_niels(table, i ^ (1 << top)))
        _put_niels(table, i, _to_niels(_add_niels(rest, rows[top])))
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
        # The loop body is _double and _add_niels inlined: this is the
        # device's hot path, and MicroPython calls and tuples cost.
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


def _var_mul(s, pt):
    """[s]pt for a variable point, 4-bit fixed windows (used by verify only)."""
    window = [_NIELS_IDENTITY, _to_niels(pt)]
    acc = pt
    for _ in range(14):
        acc = _add_niels(acc, window[1])
        window.append(_to_niels(acc))
    acc = _IDENTITY
    for shift in range(252, -4, -4):
        if shift != 252:
            for _ in range(4):
                acc = _double(acc)
        acc = _add_niels(acc, window[(s >> shift) & 15])
    return acc


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
    check = _add_niels(_var_mul(k, minus_a), _to_niels(_base_mul(s)))
    return _encode(check) == sig[:32]
