"""clients/keylog.py with no hub: a card's registration checked against an in-memory log.

The log is built as the hub builds it (salted records, RFC 9162 tree, a checkpoint signed
by a log key), so every refusal below is one check of :func:`verify_card_logged` or
:func:`check_consistent` failing for the reason its message names.
"""

from __future__ import annotations

import dataclasses

import pytest

from clients.errors import ProtocolError
from clients.keylog import CardEntry, CardRefused, check_consistent, verify_card_logged
from keys import AgencyCard, Identity, Suite
from keys.checkpoint import Checkpoint, open_signed_checkpoint
from keys.leaf import EventKind, EventRecord, event_leaf
from keys.logkey import LogKey
from keys.merkle import consistency_proof, inclusion_proof, leaf_hash, root_from_leaf_hashes

ORIGIN = "hub.test/siko-log"
LOG_KEY = LogKey.generate(ORIGIN)
PARTNER = Identity.generate("sta-essen", suite=Suite.X25519)
OTHER = Identity.generate("sta-essen", suite=Suite.X25519)  # same agency, another key


def key_record(card: AgencyCard, kind: EventKind = EventKind.AGENCY_REGISTERED) -> bytes:
    fields = {"agency": str(card.agency), "key_id": bytes(card.key_id), "card": card.serialize()}
    if kind is EventKind.AGENCY_REGISTERED:
        fields |= {"role": "agency"}
    return EventRecord(kind, 1_733_100_000_000, {**fields, "by": "admin-lka"}).serialize()


class Log:
    """Leaves and their salted records, as the hub's sequencer stores them."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, record: bytes) -> int:
        leaf, salt = event_leaf(record)
        self.leaves.append(leaf)
        self.records.append((record, salt))
        return len(self.leaves) - 1

    def _subtree(self, level: int, index: int) -> bytes:
        hashes = [leaf_hash(leaf) for leaf in self.leaves]
        return root_from_leaf_hashes(hashes[index << level : (index + 1) << level])

    def checkpoint(self, size: int | None = None, key: LogKey = LOG_KEY) -> bytes:
        size = len(self.leaves) if size is None else size
        return key.sign_checkpoint(size, self._subtree_root(size))

    def _subtree_root(self, size: int) -> bytes:
        return root_from_leaf_hashes(leaf_hash(leaf) for leaf in self.leaves[:size])

    def entry(self, index: int, *, key: LogKey = LOG_KEY) -> CardEntry:
        size = len(self.leaves)
        record, salt = self.records[index]
        proof = inclusion_proof(index, size, self._subtree)
        return CardEntry(
            index, self.leaves[index], record, salt, self.checkpoint(key=key), tuple(proof)
        )

    def consistency(self, old: int, new: int) -> list[bytes]:
        return consistency_proof(old, new, self._subtree)


@pytest.fixture
def log() -> Log:
    log = Log()
    for n in range(5):
        log.append(EventRecord(EventKind.AGENCY_STATUS, n, {"agency": "x"}).serialize())
    return log


def test_a_logged_card_verifies_into_the_signed_checkpoint(log: Log) -> None:
    index = log.append(key_record(PARTNER.card))
    log.append(key_record(OTHER.card, EventKind.KEY_ADDED))
    checkpoint = verify_card_logged(PARTNER.card, log.entry(index), LOG_KEY.verifier)
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 7)
    rotated = verify_card_logged(OTHER.card, log.entry(6), LOG_KEY.verifier)
    assert rotated == checkpoint


def test_a_card_the_log_does_not_register_is_refused(log: Log) -> None:
    index = log.append(key_record(PARTNER.card))
    with pytest.raises(CardRefused, match="never logged, or was swapped"):
        verify_card_logged(OTHER.card, log.entry(index), LOG_KEY.verifier)


def test_a_record_that_is_not_a_key_event_is_refused(log: Log) -> None:
    with pytest.raises(CardRefused, match="never logged, or was swapped"):
        verify_card_logged(PARTNER.card, log.entry(2), LOG_KEY.verifier)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: dataclasses.replace(e, record=e.record.replace(b"admin-lka", b"admin-lkb")),
        lambda e: dataclasses.replace(e, salt=bytes(32)),
        lambda e: dataclasses.replace(e, record=key_record(OTHER.card)),
    ],
    ids=["record", "salt", "record-of-another-card"],
)
def test_a_record_or_salt_that_does_not_match_the_leaf_is_refused(log: Log, tamper: object) -> None:
    index = log.append(key_record(PARTNER.card))
    entry = tamper(log.entry(index))  # type: ignore[operator]
    with pytest.raises(CardRefused, match="does not match its leaf"):
        verify_card_logged(OTHER.card, entry, LOG_KEY.verifier)
    with pytest.raises(CardRefused, match="does not match its leaf"):
        verify_card_logged(PARTNER.card, entry, LOG_KEY.verifier)


def test_a_leaf_not_in_the_checkpointed_tree_is_refused(log: Log) -> None:
    index = log.append(key_record(PARTNER.card))
    entry = log.entry(index)
    with pytest.raises(CardRefused, match="not proved into"):
        verify_card_logged(PARTNER.card, dataclasses.replace(entry, index=1), LOG_KEY.verifier)
    with pytest.raises(CardRefused, match="not proved into"):
        verify_card_logged(PARTNER.card, dataclasses.replace(entry, proof=()), LOG_KEY.verifier)
    # A record and leaf made up by the operator, beside a genuine checkpoint and proof:
    leaf, salt = event_leaf(key_record(OTHER.card))
    forged = dataclasses.replace(entry, leaf=leaf, record=key_record(OTHER.card), salt=salt)
    with pytest.raises(CardRefused, match="not proved into"):
        verify_card_logged(OTHER.card, forged, LOG_KEY.verifier)


def test_a_checkpoint_signed_by_another_key_is_refused(log: Log) -> None:
    index = log.append(key_record(PARTNER.card))
    impostor = LogKey.generate(ORIGIN)  # the same name, another key
    with pytest.raises(CardRefused, match="not signed by the log key you trust"):
        verify_card_logged(PARTNER.card, log.entry(index, key=impostor), LOG_KEY.verifier)
    elsewhere = LogKey.generate("other.test/log")
    with pytest.raises(CardRefused, match="not signed by the log key you trust"):
        verify_card_logged(PARTNER.card, log.entry(index, key=elsewhere), LOG_KEY.verifier)


def test_a_malformed_answer_is_a_protocol_error() -> None:
    good = {"index": 0, "leaf": b"l", "record": b"r", "salt": b"s", "checkpoint": "c\n"}
    assert CardEntry.from_answer({**good, "proof": [b"p"]}).proof == (b"p",)
    bad: object
    for bad in ([], good, {**good, "proof": ["p"]}, {**good, "index": "0", "proof": []}):
        with pytest.raises(ProtocolError):
            CardEntry.from_answer(bad)


def opened(note: bytes) -> Checkpoint:
    return open_signed_checkpoint(note, LOG_KEY.verifier)


def test_checkpoints_of_one_history_are_consistent_in_either_order(log: Log) -> None:
    old = opened(log.checkpoint())
    log.append(key_record(PARTNER.card))
    log.append(key_record(OTHER.card, EventKind.KEY_ADDED))
    new = opened(log.checkpoint())
    proof = log.consistency(old.size, new.size)
    check_consistent(old, new, proof)
    check_consistent(new, old, proof)
    check_consistent(new, new, [])


def test_a_fork_is_refused(log: Log) -> None:
    fork = Log()
    fork.leaves, fork.records = list(log.leaves), list(log.records)
    log.append(key_record(PARTNER.card))
    fork.append(key_record(OTHER.card))  # the same size, another last leaf
    seen, shown = opened(log.checkpoint()), opened(fork.checkpoint())
    with pytest.raises(CardRefused, match="a fork"):
        check_consistent(seen, shown, [])
    fork.append(key_record(PARTNER.card, EventKind.KEY_ADDED))
    grown = opened(fork.checkpoint())
    with pytest.raises(CardRefused, match="a fork"):
        check_consistent(seen, grown, fork.consistency(seen.size, grown.size))
