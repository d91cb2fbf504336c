"""Audit-log leaves: salted commitments to event records, and signed tombstones.

Theory of operation. The log must stay verifiable after content is deleted (BDSG
section 76(4): logs end with the year after their creation; people may demand erasure).
So the Merkle tree never holds an event itself. Each event record is kept beside the
tree with a fresh 32-byte salt, and the tree holds only a commitment to both::

    record     = E({"v": 1, "kind", "at", ...fields of the kind})
    commitment = SHA-256(LEAF_COMMITMENT || salt || record)
    leaf       = E({"c": commitment, "t": "event", "v": 1})

Deleting a record removes record and salt; the commitment reveals nothing about it (the
salt has 256 bits), and every proof still verifies. The deletion itself is a new leaf,
a tombstone that names the index and the reason, signed by the log key::

    tombstone body = {"at", "index", "reason", "t": "tombstone", "v": 1}
    leaf           = E({...tombstone body, "sig": Ed25519(SIG_TOMBSTONE || E(body))})

An auditor checks each surviving record against its leaf with :func:`check_record`,
and reports deleted ones by their tombstones.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from keys import codec, labels
from keys._suites import DIGEST, ED25519_SIG, SigningKey, VerifyKey, random_bytes, sha256
from keys.errors import InvalidProof, MalformedInput
from keys.identity import MAX_TIME_MS

__all__ = [
    "EventKind",
    "EventRecord",
    "RefusalSummary",
    "Tombstone",
    "check_record",
    "commit",
    "event_leaf",
    "parse_leaf",
]

SALT_BYTES: Final = 32
MAX_RECORD_BYTES: Final = 256 * 1024
MAX_LEAF_BYTES: Final = 1024
MAX_REASON: Final = 200
#: Rows of one ``refusals-summarized`` record: (problem, status) pairs are a fixed set.
MAX_SUMMARY_ROWS: Final = 512
MAX_PROBLEM: Final = 64
_PROBLEM: Final = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


class EventKind(enum.Enum):
    """What a record of the audit log is about."""

    AGENCY_REGISTERED = "agency-registered"
    KEY_ADDED = "key-added"
    AGENCY_STATUS = "agency-status"
    CHANNEL_CREATED = "channel-created"
    MEMBER_CHANGED = "member-changed"
    NOTE_ACCEPTED = "note-accepted"
    NOTE_ACKNOWLEDGED = "note-acknowledged"
    REQUEST_REFUSED = "request-refused"
    PROPOSAL = "proposal"
    REFUSALS_SUMMARIZED = "refusals-summarized"


@dataclass(frozen=True)
class EventRecord:
    """One event as the log keeps it: its kind, time, and the fields of its kind."""

    kind: EventKind
    at: int
    fields: Mapping[str, Any]

    def __post_init__(self) -> None:
        codec.expect_int(self.at, "record.at", low=0, high=MAX_TIME_MS)
        for reserved in ("v", "kind", "at"):
            if reserved in self.fields:
                raise MalformedInput(f"record: field {reserved!r} is reserved")

    def serialize(self) -> bytes:
        """The canonical record bytes that the leaf commits to."""
        data = codec.encode({**self.fields, "v": 1, "kind": self.kind.value, "at": self.at})
        codec.decode(data, max_bytes=MAX_RECORD_BYTES)  # only records that parse() reads
        return data

    @classmethod
    def parse(cls, data: bytes) -> EventRecord:
        """Decode record bytes strictly."""
        value = codec.decode(data, max_bytes=MAX_RECORD_BYTES)
        if type(value) is not dict:
            raise MalformedInput("record: expected a map")
        fields = dict(value)
        version = fields.pop("v", None)
        if type(version) is not int or version != 1:
            raise MalformedInput("record: only version 1 is supported")
        name = fields.pop("kind", None)
        kind = [k for k in EventKind if k.value == name]
        if not kind:
            raise MalformedInput("record: unknown kind")
        at = fields.pop("at", None)
        if type(at) is not int:
            raise MalformedInput("record.at: expected an integer")
        return cls(kind[0], at, fields)


@dataclass(frozen=True)
class RefusalSummary:
    """The fields of a ``refusals-summarized`` record: refusals nobody can be named for.

    A request refused before its signature verified and its nonce was recorded (no or a
    bad signature, an unknown key, a stale time, a replay) proves nothing about who sent
    it, and anyone can send any number of them. So the hub does not log each one; it
    counts them by problem and HTTP status and logs one summary per interval::

        {"from": ms, "to": ms, "counts": [[problem, status, n], ...]}

    ``counts`` is sorted by (problem, status), each pair once, every ``n`` at least 1:
    one canonical form, so a summary has exactly one encoding. Nothing in it is chosen
    by the senders of the requests (no path, no header): its size is bounded.
    """

    start: int
    end: int
    counts: tuple[tuple[str, int, int], ...]

    def __post_init__(self) -> None:
        codec.expect_int(self.start, "summary.from", low=0, high=MAX_TIME_MS)
        codec.expect_int(self.end, "summary.to", low=0, high=MAX_TIME_MS)
        if self.end < self.start:
            raise MalformedInput("summary.to: before summary.from")
        if type(self.counts) is not tuple or not 0 < len(self.counts) <= MAX_SUMMARY_ROWS:
            raise MalformedInput(f"summary.counts: 1-{MAX_SUMMARY_ROWS} rows")
        for row in self.counts:
            _summary_row(row)
        pairs = [row[:2] for row in self.counts]
        if any(a >= b for a, b in itertools.pairwise(pairs)):
            raise MalformedInput("summary.counts: expected sorted by problem and status, once each")

    def fields(self) -> dict[str, Any]:
        """The record's fields (beside ``v``, ``kind`` and ``at``)."""
        return {"from": self.start, "to": self.end, "counts": [list(row) for row in self.counts]}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> RefusalSummary:
        """The summary in a record's fields; :class:`MalformedInput` for anything else."""
        value = codec.expect_map(
            dict(fields), "summary", required={"from": int, "to": int, "counts": list}
        )
        rows = codec.expect_list(value["counts"], "summary.counts", max_items=MAX_SUMMARY_ROWS)
        for row in rows:
            if type(row) is not list:
                raise MalformedInput("summary.counts: expected [problem, status, n] rows")
        return cls(value["from"], value["to"], tuple(tuple(row) for row in rows))


def _summary_row(row: object) -> None:
    if type(row) is not tuple or len(row) != 3:
        raise MalformedInput("summary.counts: expected [problem, status, n] rows")
    problem, status, count = row
    if type(problem) is not str or not 0 < len(problem) <= MAX_PROBLEM:
        raise MalformedInput(f"summary.counts: a problem is 1-{MAX_PROBLEM} characters")
    if _PROBLEM.fullmatch(problem) is None:
        raise MalformedInput("summary.counts: a problem is a slug of a-z, 0-9 and '-'")
    codec.expect_int(status, "summary.counts status", low=400, high=599)
    codec.expect_int(count, "summary.counts n", low=1, high=2**63 - 1)


def commit(record: bytes, salt: bytes) -> bytes:
    """The commitment a leaf holds for ``record`` under ``salt``."""
    codec.expect_bytes(salt, "salt", size=SALT_BYTES)
    return sha256(labels.LEAF_COMMITMENT, salt, record)


def event_leaf(record: bytes, salt: bytes | None = None) -> tuple[bytes, bytes]:
    """The leaf for ``record`` and the salt used (fresh unless given)."""
    salt = random_bytes(SALT_BYTES) if salt is None else salt
    leaf = codec.encode({"v": 1, "t": "event", "c": commit(record, salt)})
    return leaf, salt


def check_record(leaf: bytes, record: bytes, salt: bytes) -> None:
    """Raise :class:`InvalidProof` unless ``leaf`` commits to ``record`` under ``salt``."""
    parsed = parse_leaf(leaf)
    if not isinstance(parsed, bytes) or commit(record, salt) != parsed:
        raise InvalidProof("the record does not match its leaf")


@dataclass(frozen=True)
class Tombstone:
    """The leaf recording that the record at ``index`` was deleted, and why."""

    index: int
    reason: str
    at: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, ED25519_SIG):
            raise MalformedInput("tombstone.signature: expected none or 64 bytes")
        codec.expect_int(self.index, "tombstone.index", low=0, high=2**63 - 1)
        codec.expect_int(self.at, "tombstone.at", low=0, high=MAX_TIME_MS)
        if not isinstance(self.reason, str) or not 0 < len(self.reason) <= MAX_REASON:
            raise MalformedInput(f"tombstone.reason: 1-{MAX_REASON} characters")

    def _body(self) -> bytes:
        return codec.encode(
            {"v": 1, "t": "tombstone", "index": self.index, "reason": self.reason, "at": self.at}
        )

    def signed(self, key: SigningKey) -> Tombstone:
        """This tombstone signed with the log key."""
        return Tombstone(
            self.index, self.reason, self.at, key.sign(labels.SIG_TOMBSTONE, self._body())
        )

    def verify(self, key: VerifyKey) -> None:
        """Raise :class:`~keys.errors.InvalidSignature` unless the log key signed it."""
        key.verify(self.signature, labels.SIG_TOMBSTONE, self._body())

    def leaf(self) -> bytes:
        """The leaf bytes."""
        return codec.encode(
            {
                "v": 1,
                "t": "tombstone",
                "index": self.index,
                "reason": self.reason,
                "at": self.at,
                "sig": self.signature,
            }
        )


def parse_leaf(data: bytes) -> bytes | Tombstone:
    """A leaf: the commitment of an event leaf, or a :class:`Tombstone`."""
    value = codec.decode(data, max_bytes=MAX_LEAF_BYTES)
    kind = value.get("t") if isinstance(value, dict) else None
    if kind == "event":
        fields = codec.expect_map(value, "leaf", required={"v": int, "t": str, "c": bytes})
        _version(fields)
        return codec.expect_bytes(fields["c"], "leaf.c", size=DIGEST)
    if kind == "tombstone":
        fields = codec.expect_map(
            value,
            "tombstone",
            required={"v": int, "t": str, "index": int, "reason": str, "at": int, "sig": bytes},
        )
        _version(fields)
        return Tombstone(fields["index"], fields["reason"], fields["at"], fields["sig"])
    raise MalformedInput("leaf: expected an event or a tombstone")


def _version(fields: Mapping[str, Any]) -> None:
    if fields["v"] != 1:
        raise MalformedInput("leaf: only version 1 is supported")
