"""The verification core on logs built in memory: no hub, no Redis (keys/ makes them)."""

from __future__ import annotations

import pytest

from clients.audit_verify import (
    Entry,
    LogVerifier,
    Problem,
    decode_record,
    frontier_from_inclusion_proof,
)
from keys import merkle
from keys.checkpoint import Checkpoint
from keys.leaf import EventKind, EventRecord, Tombstone, event_leaf
from keys.logkey import LogKey

LOG = LogKey.generate("test.example/log")


def refusal(at: int) -> Entry:
    record = EventRecord(
        EventKind.REQUEST_REFUSED, at, {"method": "GET", "path": "/x", "problem": "p", "status": 4}
    ).serialize()
    leaf, salt = event_leaf(record)
    return Entry(at, leaf, record, salt)


def log(size: int) -> tuple[list[Entry], Checkpoint, bytes]:
    entries = [refusal(i) for i in range(size)]
    root = merkle.root_from_leaf_hashes(merkle.leaf_hash(e.leaf) for e in entries)
    note = LOG.sign_checkpoint(size, root)
    return entries, Checkpoint(LOG.origin, size, root), note


def replay(entries: list[Entry], note: bytes, end: int) -> list[tuple[int | None, Problem]]:
    check = LogVerifier(LOG.verifier)
    checkpoint = check.open_checkpoint(note, "latest")
    assert checkpoint is not None
    check.expect(checkpoint, "latest")
    check.feed(entries)
    return [(a.index, a.problem) for a in check.finish(end).anomalies]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 13, 64, 100])
def test_the_left_siblings_of_an_inclusion_proof_are_the_prefix_frontier(size: int) -> None:
    """RFC 9162 section 2.1.3.2: the siblings hashed in on the left tile leaves 0..index-1."""
    entries, checkpoint, _ = log(size)
    hashes = [merkle.leaf_hash(e.leaf) for e in entries]
    for index in range(size):
        proof = merkle.inclusion_proof(
            index,
            size,
            lambda level, at: merkle.root_from_leaf_hashes(hashes[at << level : (at + 1) << level]),
        )
        frontier = frontier_from_inclusion_proof(entries[index].leaf, index, checkpoint, proof)
        assert frontier.root() == merkle.root_from_leaf_hashes(hashes[:index])


def test_a_clean_log_has_no_anomaly() -> None:
    entries, _, note = log(10)
    assert replay(entries, note, 10) == []


def test_a_gap_a_repeat_and_a_short_log_are_named() -> None:
    entries, _, note = log(10)
    served = [*entries[:3], entries[2], *entries[4:8]]
    assert replay(served, note, 10) == [
        (2, Problem.MALFORMED_LEAF),
        (3, Problem.MISSING_LEAF),
        (8, Problem.MISSING_LEAF),
    ]


def test_a_tombstone_must_be_signed_by_the_log_key() -> None:
    entries, _, _ = log(4)
    other = LogKey.generate(LOG.origin)
    entries[1] = Entry(1, entries[1].leaf)  # record withheld
    entries.append(Entry(4, other.sign_tombstone(Tombstone(1, "erasure", 5)).leaf()))
    root = merkle.root_from_leaf_hashes(merkle.leaf_hash(e.leaf) for e in entries)
    assert replay(entries, LOG.sign_checkpoint(5, root), 5) == [
        (1, Problem.RECORD_WITHHELD),
        (4, Problem.BAD_TOMBSTONE),
    ]
    entries[4] = Entry(4, LOG.sign_tombstone(Tombstone(1, "erasure", 5)).leaf())
    root = merkle.root_from_leaf_hashes(merkle.leaf_hash(e.leaf) for e in entries)
    assert replay(entries, LOG.sign_checkpoint(5, root), 5) == []


def test_records_of_an_unknown_kind_or_version_do_not_decode() -> None:
    with pytest.raises(ValueError, match="version 1"):
        decode_record(b"\x81\xa1v\x02")
    with pytest.raises(ValueError, match="unknown kind"):
        decode_record(b"\x83\xa1v\x01\xa4kind\xa1x\xa2at\x01")
    with pytest.raises(ValueError):
        decode_record(b"\xc1")
