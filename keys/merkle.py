"""The audit log's Merkle tree: RFC 9162 section 2.1 hashes, proofs and their checks.

Theory of operation. Leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left
|| right), and the root is the Merkle Tree Hash (MTH) of RFC 9162 section 2.1.1. Every
hash here is built from *perfect subtrees*: node ``(level, index)`` covers the leaves
``[index << level, (index + 1) << level)`` and never changes once its last leaf is in, so
the hub stores each as it completes (:meth:`Frontier.append` lists them). A range that is
not perfect, such as the right edge of a tree whose size is not a power of two, is the
right fold of the perfect subtrees tiling it, largest first.

Proofs are made in two pure steps, so the hub reads all nodes in one round trip:
:func:`inclusion_proof_nodes` / :func:`consistency_proof_nodes` name the O(log n) nodes
and how they fold (:class:`ProofNodes`); :meth:`ProofNodes.combine` folds their hashes.
Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step and raises
:class:`~keys.errors.InvalidProof` on any mismatch; it never returns False. Hashes that
are not 32 bytes and numbers outside 0 .. 2**64 - 1 raise
:class:`~keys.errors.MalformedInput` everywhere.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from keys import labels
from keys._suites import DIGEST, sha256
from keys.errors import InvalidProof, LimitExceeded, MalformedInput

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_PROOF_HASHES",
    "MAX_TREE_SIZE",
    "Frontier",
    "NodeId",
    "ProofNodes",
    "consistency_proof",
    "consistency_proof_nodes",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

#: Length of every hash in the tree (SHA-256).
HASH_SIZE: Final = DIGEST
#: Tree sizes and leaf indexes are unsigned 64-bit integers, as in RFC 9162.
MAX_TREE_SIZE: Final = 2**64 - 1
#: 64 levels, plus the first node of a consistency proof.
MAX_PROOF_HASHES: Final = 65
#: MTH of the empty tree (RFC 9162 section 2.1.1).
EMPTY_ROOT: Final = sha256(b"")

#: A perfect subtree: ``(level, index)`` covers leaves ``[index << level, (index + 1) << level)``.
NodeId: TypeAlias = tuple[int, int]


def leaf_hash(leaf: bytes) -> bytes:
    """The hash of one leaf: SHA-256(0x00 || leaf) (RFC 9162 section 2.1.1)."""
    return sha256(labels.MERKLE_LEAF_PREFIX, leaf)


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right) (RFC 9162 section 2.1.1)."""
    return sha256(labels.MERKLE_NODE_PREFIX, left, right)


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """The MTH of a whole tree given every leaf hash; O(n), for tests and small trees."""
    frontier = Frontier()
    for hashed in leaf_hashes:
        frontier, _ = frontier.append(hashed)
    return frontier.root()


@dataclass(frozen=True)
class Frontier:
    """The right edge of a tree of ``size`` leaves: all an appender needs to keep.

    ``hashes`` are those of the perfect subtrees :meth:`node_ids` names, largest first.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_size("frontier size", self.size)
        if len(self.hashes) != self.size.bit_count():
            raise MalformedInput("frontier: one hash per set bit of the size is required")
        for hashed in self.hashes:
            _check_hash("frontier hash", hashed)

    @staticmethod
    def node_ids(size: int) -> tuple[NodeId, ...]:
        """The perfect subtrees tiling a tree of ``size`` leaves, largest first."""
        _check_size("tree size", size)
        return _tiling(0, size)

    def append(self, leaf_hash: bytes) -> tuple[Frontier, list[tuple[int, int, bytes]]]:
        """Append a leaf: the new frontier, and the ``(level, index, hash)`` of every
        perfect node it completes, the leaf first; no later append changes them."""
        _check_hash("leaf hash", leaf_hash)
        if self.size == MAX_TREE_SIZE:
            raise LimitExceeded("tree size", MAX_TREE_SIZE)
        stack, hashed = list(self.hashes), leaf_hash
        level, index = 0, self.size
        completed = [(level, index, hashed)]
        while index & 1:
            hashed = node_hash(stack.pop(), hashed)
            level, index = level + 1, index >> 1
            completed.append((level, index, hashed))
        return Frontier(self.size + 1, (*stack, hashed)), completed

    def root(self) -> bytes:
        """The MTH of the tree (RFC 9162 section 2.1.1); SHA-256() when it is empty."""
        return _fold(self.hashes) if self.hashes else EMPTY_ROOT


@dataclass(frozen=True)
class ProofNodes:
    """The perfect nodes of a proof, one group per proof hash, in proof order.

    A group of one node is that node's hash; a longer group (a subtree cut by the right
    edge of the tree) is the right fold ``node_hash(a, node_hash(b, ...))`` of its nodes.
    """

    groups: tuple[tuple[NodeId, ...], ...]

    @property
    def ids(self) -> tuple[NodeId, ...]:
        """Every node to fetch, in the order :meth:`combine` expects their hashes."""
        return tuple(node for group in self.groups for node in group)

    def combine(self, hashes: Sequence[bytes]) -> list[bytes]:
        """The proof, from the hashes of :attr:`ids` in the same order."""
        ids = self.ids
        if len(hashes) != len(ids):
            raise MalformedInput(f"proof nodes: expected {len(ids)} hashes, got {len(hashes)}")
        for (level, index), hashed in zip(ids, hashes, strict=True):
            _check_hash(f"node ({level}, {index})", hashed)
        given = iter(hashes)
        return [_fold([next(given) for _ in group]) for group in self.groups]


def inclusion_proof_nodes(index: int, size: int) -> ProofNodes:
    """The nodes of PATH(index, D[size]) (RFC 9162 section 2.1.3.1); needs index < size."""
    _check_size("tree size", size)
    _check_size("leaf index", index)
    if index >= size:
        raise MalformedInput("leaf index: must be below the tree size")
    return ProofNodes(_path(0, index, size))


def consistency_proof_nodes(old_size: int, new_size: int) -> ProofNodes:
    """The nodes of PROOF(old_size, D[new_size]) (RFC 9162 section 2.1.4.1).

    That is the largest perfect subtree ending at ``old_size`` (unless it is the whole
    old tree), then its inclusion path in the new tree; empty if a size is 0 or equal.
    """
    _check_size("old tree size", old_size)
    _check_size("new tree size", new_size)
    if old_size > new_size:
        raise MalformedInput("old tree size: must not exceed the new tree size")
    if old_size in (0, new_size):
        return ProofNodes(())
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    path = _path(level, index, new_size)
    return ProofNodes(path if index == 0 else (((level, index),), *path))


def inclusion_proof(
    index: int, size: int, subtree_hash: Callable[[int, int], bytes]
) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 2.1.3.1); calls ``subtree_hash(level, index)``,
    the hash of a perfect subtree, at most about 2 * log2(size) times."""
    nodes = inclusion_proof_nodes(index, size)
    return nodes.combine([subtree_hash(level, at) for level, at in nodes.ids])


def consistency_proof(
    old_size: int, new_size: int, subtree_hash: Callable[[int, int], bytes]
) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 section 2.1.4.1), reading perfect subtrees."""
    nodes = consistency_proof_nodes(old_size, new_size)
    return nodes.combine([subtree_hash(level, at) for level, at in nodes.ids])


def _path(level: int, index: int, size: int) -> tuple[tuple[NodeId, ...], ...]:
    """Sibling groups from node (level, index) up to the root of a tree of ``size``."""
    groups: list[tuple[NodeId, ...]] = []
    while (size - 1) >> level:
        start = (index ^ 1) << level
        if start < size:
            groups.append(_tiling(start, min(start + (1 << level), size)))
        level, index = level + 1, index >> 1
    return tuple(groups)


def _tiling(start: int, end: int) -> tuple[NodeId, ...]:
    """The perfect subtrees tiling ``[start, end)``, largest first (``start`` aligned)."""
    nodes: list[NodeId] = []
    while start < end:
        level = (end - start).bit_length() - 1
        nodes.append((level, start >> level))
        start += 1 << level
    return tuple(nodes)


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold: node_hash(h0, node_hash(h1, ... h_last))."""
    folded = hashes[-1]
    for hashed in reversed(hashes[:-1]):
        folded = node_hash(hashed, folded)
    return folded


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root ``proof`` yields for ``leaf_hash`` at ``index`` (RFC 9162 section 2.1.3.2).

    Raises InvalidProof if ``index`` is not below ``size`` or the proof is too long or
    too short for them.
    """
    _check_hash("leaf hash", leaf_hash)
    _check_size("leaf index", index)
    _check_size("tree size", size)
    _check_proof(proof)
    if index >= size:
        raise InvalidProof("leaf index is not below the tree size")
    return _climb(index, size - 1, leaf_hash, proof, "inclusion")[1]


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree (size, root); RFC 9162 2.1.3.2."""
    _check_hash("root", root)
    if not hmac.compare_digest(root_from_inclusion_proof(leaf_hash, index, size, proof), root):
        raise InvalidProof("inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (new_size, new_root) extends (old_size, old_root); RFC 9162 2.1.4.2.

    Equal sizes need equal roots and an empty proof; an empty old tree needs an empty
    proof and the root SHA-256(). A smaller new tree is refused with InvalidProof.
    """
    _check_size("old tree size", old_size)
    _check_size("new tree size", new_size)
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    _check_proof(proof)
    if old_size > new_size:
        raise InvalidProof("the new tree is smaller than the old tree")
    if old_size in (0, new_size):
        expected = EMPTY_ROOT if old_size == 0 else new_root
        if proof or not hmac.compare_digest(old_root, expected):
            raise InvalidProof("consistency proof must be empty and the old root match")
        return
    first, second = _roots_from_consistency_proof(old_size, new_size, old_root, proof)
    if not (hmac.compare_digest(first, old_root) and hmac.compare_digest(second, new_root)):
        raise InvalidProof("consistency proof does not lead to the roots")


def _roots_from_consistency_proof(
    old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """Steps 1 to 7 of RFC 9162 section 2.1.4.2: the (old, new) roots the proof yields."""
    if not proof:
        raise InvalidProof("consistency proof is empty")
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else proof
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return _climb(fn, sn, path[0], path[1:], "consistency")


def _climb(fn: int, sn: int, start: bytes, path: Sequence[bytes], what: str) -> tuple[bytes, bytes]:
    """The loop of RFC 9162 2.1.3.2 step 4 (r is the second value) and of 2.1.4.2 step 6
    (fr, sr): hash ``start`` up the tree along ``path``."""
    first = second = start
    for hashed in path:
        if sn == 0:
            raise InvalidProof(f"{what} proof is too long")
        if fn & 1 or fn == sn:
            first, second = node_hash(hashed, first), node_hash(hashed, second)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            second = node_hash(second, hashed)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise InvalidProof(f"{what} proof is too short")
    return first, second


def _check_hash(what: str, hashed: bytes) -> None:
    if type(hashed) is not bytes or len(hashed) != HASH_SIZE:
        raise MalformedInput(f"{what}: expected {HASH_SIZE} bytes")


def _check_size(what: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TREE_SIZE:
        raise MalformedInput(f"{what}: expected an integer from 0 to 2**64 - 1")


def _check_proof(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF_HASHES:
        raise LimitExceeded("proof hashes", MAX_PROOF_HASHES)
    for position, hashed in enumerate(proof):
        _check_hash(f"proof hash {position}", hashed)
