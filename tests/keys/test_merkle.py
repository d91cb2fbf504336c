"""keys.merkle against RFC 9162 section 2.1, a naive reference and published vectors.

The reference below is written straight from the recursive definitions of RFC 9162
(MTH 2.1.1, PATH 2.1.3.1, PROOF/SUBPROOF 2.1.4.1) over a list of leaves, and shares no
code with keys.merkle. tests/vectors/merkle.json holds the 8-leaf tree of the
Certificate Transparency / transparency-dev test suites.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import merkle
from keys.errors import InvalidProof, LimitExceeded, MalformedInput
from keys.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofNodes,
    consistency_proof,
    consistency_proof_nodes,
    inclusion_proof,
    inclusion_proof_nodes,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.vectors_util import load_vectors

V = load_vectors("merkle")
MAX_SIZE = 64

# -- the naive reference: RFC 9162 section 2.1, recursion over the leaves ---------------


def ref_mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]), RFC 9162 section 2.1.1."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 9162 section 2.1.3.1."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 9162 section 2.1.4.1."""
    if m == len(leaves):
        return [] if whole else [ref_mth(leaves)]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]), RFC 9162 section 2.1.4.1 (empty for m = 0, as RFC 6962 allows)."""
    return ref_subproof(m, leaves, True) if m > 0 else []


LEAVES = [f"leaf {i}".encode() for i in range(300)]
ROOTS = [ref_mth(LEAVES[:n]) for n in range(MAX_SIZE + 1)]


class Store:
    """Perfect subtree hashes as the hub keeps them, counting reads."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.frontier = Frontier()
        self.reads = 0
        for leaf in leaves:
            self.frontier, completed = self.frontier.append(leaf_hash(leaf))
            for level, index, hashed in completed:
                assert (level, index) not in self.nodes
                self.nodes[level, index] = hashed

    def subtree_hash(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.nodes[level, index]


STORE = Store(LEAVES[:MAX_SIZE])


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def hexes(hashes: list[bytes]) -> list[str]:
    return [hashed.hex() for hashed in hashes]


# -- 2.1.1 hashing ------------------------------------------------------------------------


def test_2_1_1_leaf_and_node_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert (
        node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    )


def test_2_1_1_empty_tree_hash_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == V["roots"][0]
    assert Frontier().root() == EMPTY_ROOT
    assert root_from_leaf_hashes([]) == EMPTY_ROOT


def test_2_1_1_published_roots_of_the_8_leaf_tree() -> None:
    leaves = [h(leaf) for leaf in V["leaves"]]
    for size, root in enumerate(V["roots"]):
        assert root_from_leaf_hashes(leaf_hash(x) for x in leaves[:size]).hex() == root
        assert ref_mth(leaves[:size]).hex() == root


def test_2_1_1_published_perfect_subtree_hashes() -> None:
    store = Store([h(leaf) for leaf in V["leaves"]])
    assert {f"{lv},{i}": x.hex() for (lv, i), x in store.nodes.items()} == V["nodes"]


@pytest.mark.parametrize("size", range(301))
def test_2_1_1_frontier_root_equals_naive_mth(size: int) -> None:
    frontier = Frontier()
    for leaf in LEAVES[:size]:
        frontier, _ = frontier.append(leaf_hash(leaf))
    assert frontier.size == size
    assert len(frontier.hashes) == len(Frontier.node_ids(size)) == size.bit_count()
    assert frontier.root() == ref_mth(LEAVES[:size])


def test_frontier_can_be_rebuilt_from_stored_nodes() -> None:
    for size in range(MAX_SIZE + 1):
        hashes = tuple(STORE.nodes[node] for node in Frontier.node_ids(size))
        assert Frontier(size, hashes).root() == ROOTS[size]


def test_frontier_append_completes_each_perfect_node_once() -> None:
    frontier, completed = Frontier(3, (STORE.nodes[1, 0], STORE.nodes[0, 2])).append(b"x" * 32)
    assert [(level, index) for level, index, _ in completed] == [(0, 3), (1, 1), (2, 0)]
    assert completed[-1][2] == frontier.root()


@pytest.mark.parametrize(
    "size, hashes",
    [(-1, ()), (True, ()), (2**64, ()), (1, ()), (0, (b"x" * 32,)), (1, (b"short",))],
)
def test_frontier_refuses_impossible_states(size: int, hashes: tuple[bytes, ...]) -> None:
    with pytest.raises(MalformedInput):
        Frontier(size, hashes)


def test_frontier_refuses_to_grow_past_2_64_leaves() -> None:
    full = Frontier(merkle.MAX_TREE_SIZE, (b"x" * 32,) * 64)
    with pytest.raises(LimitExceeded):
        full.append(b"y" * 32)
    with pytest.raises(MalformedInput):
        Frontier().append(b"too short")


# -- 2.1.3 inclusion proofs ---------------------------------------------------------------


def bound(size: int) -> int:
    """The read budget of one proof: about 2 * log2(n) + 2."""
    return 2 * math.ceil(math.log2(size)) + 2 if size > 1 else 2


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_2_1_3_1_inclusion_proofs_equal_the_reference_for_every_index(size: int) -> None:
    for index in range(size):
        STORE.reads = 0
        proof = inclusion_proof(index, size, STORE.subtree_hash)
        assert STORE.reads <= bound(size)
        assert STORE.reads == len(inclusion_proof_nodes(index, size).ids)
        assert proof == ref_path(index, LEAVES[:size])
        hashed = leaf_hash(LEAVES[index])
        assert root_from_inclusion_proof(hashed, index, size, proof) == ROOTS[size]
        verify_inclusion(hashed, index, size, proof, ROOTS[size])


@pytest.mark.parametrize("vector", V["inclusion"], ids=lambda v: f"{v['index']}-{v['size']}")
def test_2_1_3_published_inclusion_proofs(vector: dict[str, Any]) -> None:
    store = Store([h(leaf) for leaf in V["leaves"]])
    index, size = vector["index"], vector["size"]
    assert hexes(inclusion_proof(index, size, store.subtree_hash)) == vector["proof"]
    hashed = leaf_hash(h(V["leaves"][index]))
    verify_inclusion(hashed, index, size, [h(x) for x in vector["proof"]], h(V["roots"][size]))


def inclusion_tamperings(
    index: int, size: int, proof: list[bytes]
) -> list[tuple[int, int, list[bytes]]]:
    """(index, size, proof) variants that must all be refused (after Trillian's probes)."""
    cases = [(i, size, proof) for i in (index - 1, index + 1, index ^ 2) if 0 <= i < size]
    cases += [(index, s, proof) for s in (size * 2, size // 2) if index < s]
    cases += [(index, size, [*proof, ROOTS[size]]), (index, size, [ROOTS[size], *proof])]
    cases += [(index, size, proof[:-1])] if proof else []
    cases += [(index, size, [*proof[:1], b"\x42" * 32, *proof[1:]])] if len(proof) > 1 else []
    for i in range(len(proof)):
        flipped = bytes([proof[i][0] ^ 8]) + proof[i][1:]
        cases.append((index, size, [*proof[:i], flipped, *proof[i + 1 :]]))
    return [case for case in cases if case[:2] != (index, size) or case[2] != proof]


@pytest.mark.parametrize("size", range(1, 33))
def test_2_1_3_2_tampered_inclusion_proofs_are_refused(size: int) -> None:
    for index in range(size):
        proof = ref_path(index, LEAVES[:size])
        hashed = leaf_hash(LEAVES[index])
        for i, s, bad in inclusion_tamperings(index, size, proof):
            with pytest.raises(InvalidProof):
                verify_inclusion(hashed, i, s, bad, ROOTS[size])
        with pytest.raises(InvalidProof):
            verify_inclusion(leaf_hash(b"other"), index, size, proof, ROOTS[size])
        with pytest.raises(InvalidProof):
            verify_inclusion(hashed, index, size, proof, ROOTS[size - 1])


def test_2_1_3_2_a_proof_does_not_bind_the_tree_size_a_checkpoint_does() -> None:
    """Why callers must take (size, root) together from one verified checkpoint."""
    proof = ref_path(0, LEAVES[:3])
    verify_inclusion(leaf_hash(LEAVES[0]), 0, 4, proof, ROOTS[3])


def test_2_1_3_2_index_must_be_below_size() -> None:
    for index, size in [(0, 0), (1, 1), (2, 1), (5, 5)]:
        with pytest.raises(InvalidProof, match="not below"):
            verify_inclusion(b"x" * 32, index, size, [], EMPTY_ROOT)
        with pytest.raises(MalformedInput):
            inclusion_proof_nodes(index, size)


def test_2_1_3_2_single_leaf_tree_has_an_empty_proof() -> None:
    hashed = leaf_hash(b"data")
    verify_inclusion(hashed, 0, 1, [], hashed)
    with pytest.raises(InvalidProof, match="too long"):
        verify_inclusion(hashed, 0, 1, [hashed], hashed)
    with pytest.raises(InvalidProof, match="too short"):
        verify_inclusion(hashed, 0, 2, [], hashed)


@pytest.mark.parametrize(
    "call",
    [
        lambda: verify_inclusion(b"", 0, 1, [], b"x" * 32),
        lambda: verify_inclusion(b"x" * 32, 0, 1, [], b"WrongRoot"),
        lambda: verify_inclusion(b"x" * 32, 0, 2, [b"x" * 31], b"x" * 32),
        lambda: verify_inclusion(b"x" * 32, -1, 2, [], b"x" * 32),
        lambda: verify_inclusion(b"x" * 32, 0, 2**64, [], b"x" * 32),
        lambda: verify_inclusion(b"x" * 32, 0, 2, [bytearray(32)], b"x" * 32),  # type: ignore[list-item]
        lambda: inclusion_proof_nodes(-1, 3),
        lambda: inclusion_proof_nodes(0, 1.0),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_are_malformed_input(call: Callable[[], object]) -> None:
    with pytest.raises(MalformedInput):
        call()


def test_overlong_proofs_hit_a_limit_before_any_hashing() -> None:
    proof = [b"x" * 32] * (merkle.MAX_PROOF_HASHES + 1)
    with pytest.raises(LimitExceeded):
        verify_inclusion(b"x" * 32, 0, 2, proof, b"x" * 32)
    with pytest.raises(LimitExceeded):
        verify_consistency(1, 2, b"x" * 32, b"y" * 32, proof)


def test_2_1_3_largest_tree_proofs_are_64_hashes() -> None:
    nodes = inclusion_proof_nodes(0, merkle.MAX_TREE_SIZE)
    assert len(nodes.groups) == 64
    assert len(nodes.ids) <= 2 * 64
    nodes = consistency_proof_nodes(3, merkle.MAX_TREE_SIZE)
    assert len(nodes.groups) <= merkle.MAX_PROOF_HASHES


# -- 2.1.4 consistency proofs -------------------------------------------------------------


@pytest.mark.parametrize("new", range(1, MAX_SIZE + 1))
def test_2_1_4_1_consistency_proofs_equal_the_reference_for_every_pair(new: int) -> None:
    for old in range(new + 1):
        STORE.reads = 0
        proof = consistency_proof(old, new, STORE.subtree_hash)
        assert STORE.reads <= bound(new)
        assert proof == ref_proof(old, LEAVES[:new])
        verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


@pytest.mark.parametrize("vector", V["consistency"], ids=lambda v: f"{v['old']}-{v['new']}")
def test_2_1_4_published_consistency_proofs(vector: dict[str, Any]) -> None:
    store = Store([h(leaf) for leaf in V["leaves"]])
    old, new = vector["old"], vector["new"]
    assert hexes(consistency_proof(old, new, store.subtree_hash)) == vector["proof"]
    roots = h(V["roots"][old]), h(V["roots"][new])
    verify_consistency(old, new, *roots, [h(x) for x in vector["proof"]])


def test_generated_vectors_match_the_reference() -> None:
    leaves = [h(leaf) for leaf in V["leaves"]]
    for vector in V["generated"]["inclusion"]:
        assert hexes(ref_path(vector["index"], leaves[: vector["size"]])) == vector["proof"]
    for vector in V["generated"]["consistency"]:
        assert hexes(ref_proof(vector["old"], leaves[: vector["new"]])) == vector["proof"]


def consistency_tamperings(
    old: int, new: int, proof: list[bytes]
) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    """(old, new, old root, new root, proof) variants that must all be refused."""
    r1, r2 = ROOTS[old], ROOTS[new]
    sizes = [(o, new) for o in (old - 1, old + 1, old ^ 2) if 0 < o <= new]
    sizes += [(old, n) for n in (new * 2, new // 2) if old <= n <= MAX_SIZE]
    cases = [(o, n, r1, r2, proof) for o, n in sizes if (o, n) != (old, new)]
    cases += [(old, new, r2, r1, proof), (old, new, r1, r1, proof), (old, new, r2, r2, proof)]
    cases += [(old, new, r1, r2, []), (old, new, r1, r2, proof[:-1])]
    for extra in (r1, r2, proof[0], b"\x00" * 32):
        cases += [(old, new, r1, r2, [*proof, extra]), (old, new, r1, r2, [extra, *proof])]
    for i in range(len(proof)):
        flipped = bytes([proof[i][0] ^ 16]) + proof[i][1:]
        cases.append((old, new, r1, r2, [*proof[:i], flipped, *proof[i + 1 :]]))
    return cases


@pytest.mark.parametrize("new", range(2, 33))
def test_2_1_4_2_tampered_consistency_proofs_are_refused(new: int) -> None:
    for old in range(1, new):
        proof = ref_proof(old, LEAVES[:new])
        for o, n, r1, r2, bad in consistency_tamperings(old, new, proof):
            if (r1, r2) == (ROOTS[o], ROOTS[n]) and bad == ref_proof(o, LEAVES[:n]):
                continue  # a tampering that happens to be another valid proof
            with pytest.raises(InvalidProof):
                verify_consistency(o, n, r1, r2, bad)


def test_2_1_4_2_trivial_consistency() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    bad = [
        (0, 5, ROOTS[1], ROOTS[5], []),  # an empty tree has only one root
        (5, 5, ROOTS[5], ROOTS[4], []),  # same size, different roots: a fork
        (5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]]),  # same size needs no proof
        (0, 1, EMPTY_ROOT, ROOTS[1], [EMPTY_ROOT]),
        (6, 5, ROOTS[6], ROOTS[5], []),  # time travel
        (1, 2, ROOTS[1], ROOTS[2], []),  # a needed proof is missing
    ]
    for old, new, r1, r2, proof in bad:
        with pytest.raises(InvalidProof):
            verify_consistency(old, new, r1, r2, proof)


@pytest.mark.parametrize(
    "call",
    [
        lambda: verify_consistency(1, 2, b"WrongRoot", ROOTS[2], [ROOTS[1]]),
        lambda: verify_consistency(1, 2, ROOTS[1], b"", [ROOTS[1]]),
        lambda: verify_consistency(-1, 2, ROOTS[1], ROOTS[2], []),
        lambda: verify_consistency(1, 2**64, ROOTS[1], ROOTS[2], []),
        lambda: consistency_proof_nodes(3, 2),
        lambda: consistency_proof_nodes(-1, 2),
    ],
)
def test_bad_consistency_arguments_are_malformed_input(call: Callable[[], object]) -> None:
    with pytest.raises(MalformedInput):
        call()


# -- the one-round-trip form ----------------------------------------------------------------


def test_proof_nodes_fold_right_edge_groups() -> None:
    nodes = inclusion_proof_nodes(1, 7)
    assert nodes.groups == (((0, 0),), ((1, 1),), ((1, 2), (0, 6)))
    assert nodes.ids == ((0, 0), (1, 1), (1, 2), (0, 6))
    proof = nodes.combine([STORE.nodes[node] for node in nodes.ids])
    assert proof == ref_path(1, LEAVES[:7])
    assert consistency_proof_nodes(6, 8).groups == (((1, 2),), ((1, 3),), ((2, 0),))
    assert consistency_proof_nodes(4, 8).groups == (((2, 1),),)
    assert consistency_proof_nodes(0, 8) == consistency_proof_nodes(8, 8) == ProofNodes(())


def test_proof_nodes_combine_checks_what_the_store_returned() -> None:
    nodes = inclusion_proof_nodes(1, 7)
    with pytest.raises(MalformedInput, match="expected 4 hashes"):
        nodes.combine([b"x" * 32] * 3)
    with pytest.raises(MalformedInput, match=r"node \(1, 2\)"):
        nodes.combine([b"x" * 32, b"x" * 32, b"", b"x" * 32])


# -- properties ---------------------------------------------------------------------------

PERIOD = 64
sizes = st.integers(min_value=1, max_value=2**64 - 1)


def periodic_leaf(index: int) -> bytes:
    """Leaf ``index`` of a tree of any size, even 2**64 - 1: the leaves repeat every 64."""
    return b"%d" % (index % PERIOD)


def periodic_node(level: int, index: int) -> bytes:
    """The honest RFC 9162 hash of a perfect node of that tree, cheap thanks to the period."""
    return _periodic(level, index % (PERIOD >> level) if level < 6 else 0)


@functools.cache
def _periodic(level: int, index: int) -> bytes:
    if level == 0:
        return leaf_hash(periodic_leaf(index))
    return node_hash(periodic_node(level - 1, 2 * index), periodic_node(level - 1, 2 * index + 1))


def periodic_root(size: int) -> bytes:
    nodes = Frontier.node_ids(size)
    return Frontier(size, tuple(periodic_node(level, at) for level, at in nodes)).root()


def test_periodic_tree_is_an_honest_tree() -> None:
    for size in range(200):
        assert periodic_root(size) == ref_mth([periodic_leaf(i) for i in range(size)])


@given(size=sizes, data=st.data())
def test_any_inclusion_proof_is_small_and_verifies(size: int, data: st.DataObject) -> None:
    """For any size up to 2**64 - 1, generation (2.1.3.1) and verification (2.1.3.2) agree."""
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    nodes = inclusion_proof_nodes(index, size)
    assert len(nodes.ids) <= bound(size)
    proof = nodes.combine([periodic_node(level, at) for level, at in nodes.ids])
    assert len(proof) <= (size - 1).bit_length()
    root = periodic_root(size)
    verify_inclusion(leaf_hash(periodic_leaf(index)), index, size, proof, root)
    with pytest.raises(InvalidProof):
        verify_inclusion(leaf_hash(periodic_leaf(index + 1)), index, size, proof, root)


@given(new=sizes, data=st.data())
def test_any_consistency_proof_is_small_and_verifies(new: int, data: st.DataObject) -> None:
    """For any sizes, generation (2.1.4.1) and verification (2.1.4.2) agree."""
    old = data.draw(st.integers(min_value=0, max_value=new))
    nodes = consistency_proof_nodes(old, new)
    assert len(nodes.ids) <= bound(new)
    assert len(nodes.groups) <= merkle.MAX_PROOF_HASHES
    proof = nodes.combine([periodic_node(level, at) for level, at in nodes.ids])
    verify_consistency(old, new, periodic_root(old), periodic_root(new), proof)


@given(st.lists(st.binary(max_size=8), max_size=80))
def test_frontier_matches_reference_on_random_leaves(leaves: list[bytes]) -> None:
    assert root_from_leaf_hashes(leaf_hash(x) for x in leaves) == ref_mth(leaves)


@given(st.data())
def test_random_proofs_never_verify(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=MAX_SIZE))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    junk = data.draw(st.lists(st.binary(min_size=32, max_size=32), max_size=8))
    if junk == ref_path(index, LEAVES[:size]):
        return
    with pytest.raises(InvalidProof):
        verify_inclusion(leaf_hash(LEAVES[index]), index, size, junk, ROOTS[size])
