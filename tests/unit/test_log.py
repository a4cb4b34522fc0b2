"""The vault log's tree math (host_agent/vault/log.py) against RFC 6962 and by hand.

Three kinds of evidence that the math is right: the reference trees every RFC 6962
implementation is tested with (Certificate Transparency's merkle_tree_test vectors: leaf
inputs, roots of sizes 0..8, audit paths and consistency proofs); small trees worked out here
by hand with hashlib; and properties over every size and pair of sizes up to 40 leaves (and
hypothesis beyond), including that a changed leaf, root, index or proof is refused. (A proof
verifier takes the tree size on trust, as RFC 9162 does: the size is what a checkpoint signs.)
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_agent.vault import log


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(data: bytes) -> bytes:
    return sha(b"\x00" + data)


def node(left: bytes, right: bytes) -> bytes:
    return sha(b"\x01" + left + right)


def h(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


# The RFC 6962 reference tree (certificate-transparency merkle_tree_test.cc).
CT_INPUTS = [h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                            "606162636465666768696a6b6c6d6e6f")]
CT_LEAVES = [log.leaf_hash(x) for x in CT_INPUTS]
CT_ROOTS = [h(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
CT_INCLUSION = [  # (index, size, audit path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def leaves_of(n: int, salt: bytes = b"") -> list[bytes]:
    return [log.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


# ---------------------------------------------------------------------------------------------
# Hashing and roots


def test_leaf_and_node_hashes_are_prefixed() -> None:
    assert log.leaf_hash(b"entry") == sha(b"\x00entry")
    assert log.node_hash(b"L" * 32, b"R" * 32) == sha(b"\x01" + b"L" * 32 + b"R" * 32)
    assert log.EMPTY_ROOT == sha(b"")


def test_roots_match_the_rfc6962_reference_tree() -> None:
    for size, want in enumerate(CT_ROOTS):
        assert log.root(CT_LEAVES[:size]) == want, size


def test_small_trees_by_hand() -> None:
    a, b, c, d, e = (leaf(x) for x in (b"a", b"b", b"c", b"d", b"e"))
    assert log.root([a]) == a
    assert log.root([a, b]) == node(a, b)
    assert log.root([a, b, c]) == node(node(a, b), c)
    assert log.root([a, b, c, d]) == node(node(a, b), node(c, d))
    assert log.root([a, b, c, d, e]) == node(node(node(a, b), node(c, d)), e)
    # the audit path of c in the 3-leaf tree is the root of (a, b); of a it is b, then c
    assert log.inclusion_proof([a, b, c], 2) == [node(a, b)]
    assert log.inclusion_proof([a, b, c], 0) == [b, c]
    assert log.inclusion_proof([a, b, c, d, e], 4) == [node(node(a, b), node(c, d))]
    # (a, b) grows into (a, b, c): c alone proves it; (a) into (a, b, c): b, then c
    assert log.consistency_proof([a, b, c], 2) == [c]
    assert log.consistency_proof([a, b, c], 1) == [b, c]
    assert log.consistency_proof([a, b, c, d, e], 3) == [c, d, node(a, b), e]
    assert log.verify_consistency(3, 5, node(node(a, b), c), log.root([a, b, c, d, e]),
                                  [c, d, node(a, b), e])


def test_frontier_follows_the_root_leaf_by_leaf() -> None:
    leaves = leaves_of(70)
    frontier = log.Frontier()
    assert frontier.root() == log.EMPTY_ROOT
    for n, one in enumerate(leaves, 1):
        frontier.append(one)
        assert frontier.size == n
        assert frontier.root() == log.root(leaves[:n])


def test_roots_at_many_sizes_in_one_pass() -> None:
    leaves = leaves_of(33)
    got = log.roots_at(iter(leaves), [0, 1, 7, 16, 33, 34])
    assert got == {n: log.root(leaves[:n]) for n in (0, 1, 7, 16, 33)}  # 34: beyond the end
    assert log.roots_at(leaves, []) == {}
    with pytest.raises(ValueError):
        log.roots_at(leaves, [-1])


# ---------------------------------------------------------------------------------------------
# Inclusion


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_inclusion_matches_the_reference(index: int, size: int, path: list[str]) -> None:
    proof = log.inclusion_proof(CT_LEAVES, index, size)
    assert proof == [h(p) for p in path]
    assert log.verify_inclusion(CT_LEAVES[index], index, size, proof, CT_ROOTS[size])


def test_every_inclusion_proof_verifies_and_nothing_else_does() -> None:
    for n in range(1, 41):
        leaves = leaves_of(n, b"incl")
        root = log.root(leaves)
        for i in range(n):
            proof = log.inclusion_proof(leaves, i)
            assert log.verify_inclusion(leaves[i], i, n, proof, root), (i, n)
            assert not log.verify_inclusion(flip(leaves[i]), i, n, proof, root)
            assert not log.verify_inclusion(leaves[i], i, n, proof, flip(root))
            if n > 1:
                assert not log.verify_inclusion(leaves[i], (i + 1) % n, n, proof, root)
                assert not log.verify_inclusion(leaves[i], i, n, proof[:-1], root)
                assert not log.verify_inclusion(leaves[i], i, n, [*proof, root], root)
                assert not log.verify_inclusion(leaves[i], i, n,
                                                [flip(proof[0]), *proof[1:]], root)


def test_inclusion_arguments() -> None:
    leaves = leaves_of(4)
    with pytest.raises(ValueError):
        log.inclusion_proof(leaves, 4)
    with pytest.raises(ValueError):
        log.inclusion_proof(leaves, 0, 5)
    with pytest.raises(ValueError):
        log.inclusion_proof(leaves, -1)
    assert log.inclusion_proof(leaves[:1], 0) == []
    assert log.verify_inclusion(leaves[0], 0, 1, [], leaves[0])
    assert not log.verify_inclusion(leaves[0], 0, 0, [], leaves[0])
    assert not log.verify_inclusion(leaves[0], -1, 4, [], leaves[0])


# ---------------------------------------------------------------------------------------------
# Consistency


@pytest.mark.parametrize(("old", "new", "path"), CT_CONSISTENCY)
def test_consistency_matches_the_reference(old: int, new: int, path: list[str]) -> None:
    proof = log.consistency_proof(CT_LEAVES, old, new)
    assert proof == [h(p) for p in path]
    assert log.verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], proof)


def test_every_consistency_proof_verifies_and_nothing_else_does() -> None:
    for n in range(1, 41):
        leaves = leaves_of(n, b"cons")
        roots = [log.root(leaves[:m]) for m in range(n + 1)]
        for m in range(n + 1):
            proof = log.consistency_proof(leaves, m, n)
            assert log.verify_consistency(m, n, roots[m], roots[n], proof), (m, n)
            if 0 < m < n:
                assert not log.verify_consistency(m, n, flip(roots[m]), roots[n], proof)
                assert not log.verify_consistency(m, n, roots[m], flip(roots[n]), proof)
                assert not log.verify_consistency(m, n, roots[m], roots[n], proof[:-1])
                assert not log.verify_consistency(m, n, roots[m], roots[n], [*proof, roots[n]])
                assert not log.verify_consistency(m, n, roots[m], roots[n],
                                                  [flip(proof[0]), *proof[1:]])
                assert not log.verify_consistency(n, m, roots[n], roots[m], proof)


def test_a_rewritten_entry_breaks_consistency_with_the_old_root() -> None:
    """What verify relies on: change one early entry and no proof reconciles the old head."""
    leaves = leaves_of(20)
    old_root = log.root(leaves[:12])
    rewritten = list(leaves)
    rewritten[5] = log.leaf_hash(b"edited")
    for m in (12, 13):
        proof = log.consistency_proof(rewritten, m)
        assert not log.verify_consistency(12, 20, old_root, log.root(rewritten), proof)


def test_consistency_arguments() -> None:
    leaves = leaves_of(5)
    with pytest.raises(ValueError):
        log.consistency_proof(leaves, 6)
    with pytest.raises(ValueError):
        log.consistency_proof(leaves, 2, 6)
    with pytest.raises(ValueError):
        log.consistency_proof(leaves, -1)
    assert log.consistency_proof(leaves, 0) == []
    assert log.consistency_proof(leaves, 5) == []
    assert log.verify_consistency(0, 5, log.EMPTY_ROOT, log.root(leaves), [])
    assert not log.verify_consistency(0, 5, leaves[0], log.root(leaves), [])
    assert not log.verify_consistency(5, 5, log.root(leaves), log.root(leaves), [leaves[0]])
    assert not log.verify_consistency(2, 5, log.root(leaves[:2]), log.root(leaves), [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=300), st.data())
def test_proofs_hold_for_any_tree(entries: list[bytes], data: st.DataObject) -> None:
    leaves = [log.leaf_hash(e) for e in entries]
    n = data.draw(st.integers(1, len(leaves)), "new size")
    m = data.draw(st.integers(0, n), "old size")
    i = data.draw(st.integers(0, n - 1), "index")
    root_n = log.root(leaves[:n])
    assert log.verify_inclusion(leaves[i], i, n, log.inclusion_proof(leaves, i, n), root_n)
    proof = log.consistency_proof(leaves, m, n)
    assert log.verify_consistency(m, n, log.root(leaves[:m]), root_n, proof)
