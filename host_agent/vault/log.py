"""Merkle tree math for the vault's append-only log (RFC 6962 §2.1, RFC 9162 §2.1).

Pure functions over leaf hashes, no storage and no I/O:

    leaf_hash(entry)         SHA-256(0x00 || entry): the hash of one log entry
    node_hash(left, right)   SHA-256(0x01 || left || right)
    root(leaves)             the tree head of a list of leaf hashes (MTH, RFC 9162 §2.1.1)
    Frontier                 the same root, fed one leaf at a time in O(log n) memory;
                             `roots_at` uses it to give the heads at many sizes in one pass
    inclusion_proof / verify_inclusion       a leaf is in the tree of a given size (§2.1.3)
    consistency_proof / verify_consistency   a tree of size m is a prefix of one of size n
                                             (§2.1.4): nothing was removed or rewritten

The leaf and node prefixes keep a leaf from ever being read as a node (second preimages), so
a root recomputed from the entries commits to every entry's bytes, their order and their
number. A proof verifier takes the tree size it is given on trust, as in RFC 9162: the size is
what a signed checkpoint vouches for. Everything
here agrees with the RFC 6962 reference trees (tests/unit/test_log.py): a log no other
implementation can check proves nothing to anyone.

Proof builders take the whole list of leaf hashes and cost O(n) hashing; verifiers cost
O(log n) and never raise on a bad proof: they return False. Bad arguments (a negative size,
an index outside the tree) raise ValueError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # the head of the tree with no leaves

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """The Merkle leaf hash of one log entry's bytes."""
    return _sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node from its two children."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): where RFC 6962 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The right edge of a growing tree: the roots of its perfect subtrees, largest first.

    `append` is O(1) amortised (a carry per completed subtree) and `root` is O(log n), so a
    tree head can be followed leaf by leaf without holding the leaves."""

    def __init__(self) -> None:
        self.size = 0
        self._nodes: list[bytes] = []  # one per set bit of size, from the highest bit down

    @classmethod
    def restore(cls, size: int, nodes: Sequence[bytes]) -> Frontier:
        """A frontier saved as (`size`, `nodes`): the right edge another process kept."""
        if size < 0 or len(nodes) != bin(size).count("1") or any(len(n) != 32 for n in nodes):
            raise ValueError(f"{len(nodes)} nodes are not the right edge of a tree of {size}")
        f = cls()
        f.size, f._nodes = size, [bytes(n) for n in nodes]
        return f

    @property
    def nodes(self) -> list[bytes]:
        """The right edge, to save and `restore`."""
        return list(self._nodes)

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash."""
        node = leaf
        size = self.size
        while size & 1:  # a subtree of the same height completes: merge it in
            node = node_hash(self._nodes.pop(), node)
            size >>= 1
        self._nodes.append(node)
        self.size += 1

    def root(self) -> bytes:
        """The tree head of the leaves appended so far."""
        if not self._nodes:
            return EMPTY_ROOT
        acc = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            acc = node_hash(node, acc)
        return acc


def root(leaves: Iterable[bytes]) -> bytes:
    """The tree head (RFC 9162 MTH) of leaf hashes, in O(n) time and O(log n) memory."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def roots_at(leaves: Iterable[bytes], sizes: Iterable[int]) -> dict[int, bytes]:
    """The tree heads at each of `sizes` in one pass over `leaves`; sizes beyond the number
    of leaves are left out of the answer."""
    wanted = set(sizes)
    if any(s < 0 for s in wanted):
        raise ValueError("a tree size is never negative")
    out: dict[int, bytes] = {}
    if 0 in wanted:
        out[0] = EMPTY_ROOT
    top = max(wanted, default=0)
    frontier = Frontier()
    for leaf in leaves:
        if frontier.size >= top:
            break
        frontier.append(leaf)
        if frontier.size in wanted:
            out[frontier.size] = frontier.root()
    return out


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of leaves[lo:hi] (hi > lo)."""
    if hi - lo == 1:
        return leaves[lo]
    k = _split(hi - lo)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def _check_size(leaves: Sequence[bytes], size: int | None) -> int:
    n = len(leaves) if size is None else size
    if not 0 <= n <= len(leaves):
        raise ValueError(f"tree size {n} is outside 0..{len(leaves)}")
    return n


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """The audit path of leaf `index` in the tree of the first `size` leaves (default all)."""
    n = _check_size(leaves, size)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of {n} leaves")
    proof: list[bytes] = []
    lo, hi, m = 0, n, index
    while hi - lo > 1:  # PATH(m, D[lo:hi]), iteratively; siblings collected top-down
        k = _split(hi - lo)
        if m < k:
            proof.append(_mth(leaves, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_mth(leaves, lo, lo + k))
            lo, m = lo + k, m - k
    proof.reverse()  # the RFC lists them from the leaf up
    return proof


def inclusion_proofs(leaves: Sequence[bytes], indices: Iterable[int],
                     size: int | None = None) -> dict[int, list[bytes]]:
    """`inclusion_proof` for many entries of one tree: the tree's levels are hashed once (an
    unpaired node goes up a level as it is, which is RFC 6962's tree), then each proof is
    read off them in O(log n)."""
    n = _check_size(leaves, size)
    levels = [list(leaves[:n])]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) if i + 1 < len(below) else below[i]
                       for i in range(0, len(below), 2)])
    out: dict[int, list[bytes]] = {}
    for index in indices:
        if not 0 <= index < n:
            raise ValueError(f"entry {index} is not in a tree of {n} entries")
        proof, i = [], index
        for level in levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            i >>= 1
        out[index] = proof
    return out


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     root_hash: bytes) -> bool:
    """True if `proof` shows `leaf` at `index` in the tree of `size` leaves with head
    `root_hash` (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def consistency_proof(leaves: Sequence[bytes], old_size: int,
                      new_size: int | None = None) -> list[bytes]:
    """The proof that the tree of the first `old_size` leaves is a prefix of the tree of the
    first `new_size` (default all): empty when old_size is 0 or equals new_size."""
    n = _check_size(leaves, new_size)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} is outside 0..{n}")
    if old_size in (0, n):
        return []
    proof: list[bytes] = []
    lo, hi, m, whole = 0, n, old_size, True
    while True:  # SUBPROOF(m, D[lo:hi], whole), iteratively; hashes collected top-down
        if m == hi - lo:
            if not whole:
                proof.append(_mth(leaves, lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            proof.append(_mth(leaves, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_mth(leaves, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    proof.reverse()
    return proof


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """True if `proof` shows the tree (old_size, old_root) is a prefix of the tree
    (new_size, new_root) (RFC 9162 §2.1.4.2; sizes 0 and equal sizes need an empty proof)."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
