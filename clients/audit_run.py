"""One audit run: ask a source (hub or bundle) for checkpoints, leaves and proofs, in order.

The checks themselves are in :mod:`clients.audit_verify`; this module only decides what
to ask for, in the order a replay needs it:

1. the latest checkpoint (it bounds the replay) and any other the source holds;
2. what this auditor remembers from its last run (:mod:`clients.audit_state`): the
   latest must not be smaller (*rollback*), the hub's own checkpoint of the remembered
   size must have the same root (*fork*), and a consistency proof must lead from the
   remembered tree to the latest (*fork* again if it does not);
3. a range that starts after leaf 0 is anchored with the inclusion proof of its first
   leaf; every page of leaves is fetched while the previous one is verified;
4. checkpoints beyond the replayed range are reached with consistency proofs;
5. when a root differs, a binary search with consistency proofs names the first leaf
   that is not the one the checkpoint signed (O(log n) proofs and one page re-read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clients.audit_source import AuditSource, pages
from clients.audit_verify import (
    Entry,
    LogVerifier,
    Problem,
    Report,
    extends,
    frontier_from_inclusion_proof,
)
from keys import KeysError, merkle
from keys.checkpoint import Checkpoint, NoteVerifier


@dataclass(frozen=True)
class Outcome:
    """A run's report, the latest checkpoint it verified, and how long it took."""

    report: Report
    latest: Checkpoint | None
    latest_note: bytes | None
    seconds: float
    verify_seconds: float


async def verify_log(
    source: AuditSource,
    verifier: NoteVerifier,
    *,
    remembered: tuple[Checkpoint, bytes] | None = None,
    start: int = 0,
    end: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Outcome:
    """Verify leaves ``start .. end-1`` (default: the whole signed log) from ``source``."""
    began = time.perf_counter()
    check = LogVerifier(verifier, start=start)
    try:
        latest_note = await source.latest_checkpoint()
        latest = check.open_checkpoint(latest_note, "latest")
        if latest is None:
            return Outcome(check.finish(start), None, None, time.perf_counter() - began, 0.0)
        end = _bounded_end(check, latest, start, end)
        await _checkpoints(source, check, latest, remembered)
        if start:
            await _anchor(source, check, latest)
        spent = await _replay(source, check, end, progress)
        await _beyond(source, check, latest)
        for checkpoint in list(check.mismatched):
            await _locate(source, check, checkpoint)
        finishing = time.perf_counter()
        report = await asyncio.to_thread(check.finish, end)  # waits for the last signatures
        spent += time.perf_counter() - finishing
    finally:
        check.close()  # a source that failed midway leaves no worker process behind
    return Outcome(report, latest, latest_note, time.perf_counter() - began, spent)


def _bounded_end(check: LogVerifier, latest: Checkpoint, start: int, end: int | None) -> int:
    if end is None or end > latest.size:
        if end is not None:
            check.warn(f"the latest checkpoint has {latest.size} leaves: verified up to there")
        end = latest.size
    if start > end:
        check.warn(f"--from {start} is beyond the {end} leaves verified: nothing replayed")
        check.next = end
        check.start = end
    return end


async def _checkpoints(
    source: AuditSource,
    check: LogVerifier,
    latest: Checkpoint,
    remembered: tuple[Checkpoint, bytes] | None,
) -> None:
    check.expect(latest, "latest")
    for note in (await source.checkpoints())[1:]:
        other = check.open_checkpoint(note, "bundled")
        if other is not None:
            check.expect(other, f"bundled ({other.size} leaves)")
    if remembered is None:
        return
    seen = remembered[0]
    check.expect(seen, "remembered")
    served = await source.checkpoint_at(seen.size)
    if served is not None and (now := check.open_checkpoint(served, "served")) is not None:
        check.expect(now, f"served ({now.size} leaves)")
    if latest.size < seen.size:
        check.anomaly(
            None,
            Problem.ROLLBACK,
            f"the log shrank: this auditor verified a signed checkpoint of {seen.size} "
            f"leaves before, the latest one now has {latest.size}",
        )
        return
    proof = await source.consistency_proof(seen.size, latest.size)
    if proof is None:
        check.warn(f"no consistency proof from {seen.size} to {latest.size} leaves is available")
    elif not _consistent(seen, latest, proof):
        check.anomaly(
            None,
            Problem.FORK,
            f"the latest checkpoint ({latest.size} leaves) does not extend the one of "
            f"{seen.size} leaves this auditor verified before: the consistency proof fails",
        )


def _consistent(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> bool:
    try:
        merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    except KeysError:
        return False
    return True


async def _anchor(source: AuditSource, check: LogVerifier, latest: Checkpoint) -> None:
    """Prove the right edge of leaves ``0 .. start-1`` with leaf ``start``'s inclusion."""
    start = check.start
    if start >= latest.size:
        return
    entries = await source.leaves(start, start + 1)
    proof = await source.inclusion_proof(start, latest.size)
    if not entries or entries[0].index != start or proof is None:
        check.warn(f"leaf {start} or its inclusion proof is not available: roots not checked")
        return
    try:
        check.anchor(frontier_from_inclusion_proof(entries[0].leaf, start, latest, proof))
    except KeysError:
        check.anomaly(start, Problem.ROOT_MISMATCH, "its inclusion proof fails: not in the log")


async def _replay(
    source: AuditSource,
    check: LogVerifier,
    end: int,
    progress: Callable[[int, int], None] | None,
) -> float:
    """Feed every page to the verifier, fetching the next one meanwhile; verify time."""
    ranges = list(pages(check.next, end))
    spent = 0.0
    fetching: list[asyncio.Future[list[Entry]]] = []
    if ranges:
        fetching.append(asyncio.ensure_future(source.leaves(*ranges[0])))
    try:
        for number, (low, high) in enumerate(ranges):
            entries = await fetching.pop()
            if number + 1 < len(ranges):
                fetching.append(asyncio.ensure_future(source.leaves(*ranges[number + 1])))
            began = time.perf_counter()
            await asyncio.to_thread(check.feed, entries)
            spent += time.perf_counter() - began
            if progress is not None:
                progress(high - low, end - check.start)
    finally:
        for pending in fetching:
            pending.cancel()
    return spent


async def _beyond(source: AuditSource, check: LogVerifier, latest: Checkpoint) -> None:
    """Reach the checkpoints larger than the replay with consistency proofs (those larger
    than the latest were reported as a rollback already)."""
    if not check.anchored:
        return
    frontier = check.frontier()
    for checkpoint, label in check.beyond():
        if checkpoint.size > latest.size:
            continue
        proof = await source.consistency_proof(frontier.size, checkpoint.size)
        if proof is None:
            check.warn(f"no consistency proof to the {label} checkpoint: it was not checked")
        elif extends(frontier, checkpoint, proof):
            check.extended(checkpoint, label)
        else:
            span = f"leaves {check.start}..{frontier.size - 1}"
            check.not_in(checkpoint, f"{span} are not a prefix of it (consistency proof fails)")


async def _locate(source: AuditSource, check: LogVerifier, checkpoint: Checkpoint) -> None:
    """Name the first leaf that is not in ``checkpoint``'s tree (binary search).

    First over the prefixes the replay kept (one per page), then, after re-reading the
    one page between the last prefix in the tree and the first one not, over its leaves.
    """
    sizes = sorted(s for s in check.snapshots if s <= checkpoint.size)
    kept = [merkle.Frontier(size, check.snapshots[size]) for size in sizes]
    found = await _last_in_tree(source, checkpoint, kept)
    if found is None or found + 1 >= len(kept):
        return
    low, high = kept[found].size, kept[found + 1].size
    entries = await source.leaves(low, high)
    if [e.index for e in entries] != list(range(low, high)):
        return
    prefixes = [kept[found]]
    for entry in entries:
        prefixes.append(prefixes[-1].append(merkle.leaf_hash(entry.leaf))[0])
    first = await _last_in_tree(source, checkpoint, prefixes)
    if first is not None:
        check.anomaly(
            low + first,
            Problem.DIVERGENT_LEAF,
            f"the first leaf that is not the one the signed checkpoint of {checkpoint.size} "
            "leaves commits to (altered, replaced or moved)",
        )


async def _last_in_tree(
    source: AuditSource, checkpoint: Checkpoint, prefixes: Sequence[merkle.Frontier]
) -> int | None:
    """The position of the last of ``prefixes`` in the tree, given that the first is and
    the last is not; None when a proof is missing or there is nothing to search."""
    low, high = 0, len(prefixes) - 1
    if high < 1:
        return None
    while high - low > 1:
        mid = (low + high) // 2
        frontier = prefixes[mid]
        if frontier.size == checkpoint.size:
            inside: bool | None = frontier.root() == checkpoint.root_hash
        else:
            proof = await source.consistency_proof(frontier.size, checkpoint.size)
            inside = None if proof is None else extends(frontier, checkpoint, proof)
        if inside is None:
            return None
        low, high = (mid, high) if inside else (low, mid)
    return low
