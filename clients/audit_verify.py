"""The auditor's verification core: replay the audit log as values, report what is wrong.

Pure: no I/O. :mod:`clients.audit_run` feeds it checkpoints and pages of leaves (from
the hub or from a bundle) and answers the questions it cannot settle alone with proofs.

Theory of operation. A :class:`LogVerifier` trusts nothing but the verifier key the
auditor configured out of band (never ``/v1/audit/key`` alone):

1. every checkpoint must carry a valid signature by that key (:meth:`open_checkpoint`);
   two signed checkpoints of one size with different roots are a *fork*
   (:meth:`expect`);
2. leaves arrive in index order; each leaf hash (:func:`keys.merkle.leaf_hash`) goes
   into the right edge of the tree, whose root is compared with every expected
   checkpoint the replay passes; a missing index breaks the chain and is named;
3. every record is checked against its leaf's commitment (:func:`keys.leaf.commit`);
   an event leaf served without its record needs a signed tombstone naming it;
4. key records (``agency-registered``, ``key-added``) build the key history; every
   ``note-accepted`` record's header must match its fields and carry its sender's
   signature by a key of that history, every ``note-acknowledged`` record its reader's.

Signature checks are most of the cost (~46 µs each; the rest of a leaf is a few µs, a
note's header ~40 µs). They are collected per page and, once a log proves large, sent
in batches to worker processes, one per core (an Ed25519 check holds the GIL: threads
would not help). The replay does not wait for them: it goes on with the
next page, and failures are reported, batch by batch in submission order, as results
come back and at :meth:`LogVerifier.finish`. Every signature is checked either way; a
broken worker pool only sends its batches back to this process.

Every problem becomes an :class:`Anomaly` naming its leaf index (``None``: the log as
a whole); nothing here raises on hostile log content.
"""

from __future__ import annotations

import enum
import multiprocessing
import os
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from keys import AgencyCard, Header, KeysError, VerifyKey, codec, labels, merkle
from keys.checkpoint import Checkpoint, NoteVerifier, open_signed_checkpoint
from keys.leaf import (
    MAX_RECORD_BYTES,
    EventKind,
    RefusalSummary,
    Tombstone,
    commit,
    parse_leaf,
)
from keys.statements import ReadAck

HOUR_MS: Final = 3_600_000
#: The first this many signatures of a run are checked in this process: starting the
#: workers (0.2-0.5 s of CPU) costs more than a small log's checks.
POOL_FROM: Final = 2000
#: A page with fewer signatures than this is checked in this process (the last page).
PARALLEL_FROM: Final = 64
#: Signatures per batch sent to a worker (~9 ms of work: the round trip is ~0.1 ms).
BATCH: Final = 128
#: Batches sent and not yet settled, at most (~5 pages: memory stays bounded).
IN_FLIGHT: Final = 32
_KINDS: Final = {kind.value: kind for kind in EventKind}
# An event leaf is always these canonical bytes around its commitment (keys.leaf encodes
# it); matching them skips a full decode of the commonest leaf. Anything else is parsed.
_TEMPLATE: Final = codec.encode({"v": 1, "t": "event", "c": bytes(merkle.HASH_SIZE)})
_HEAD: Final = _TEMPLATE[: _TEMPLATE.index(bytes(merkle.HASH_SIZE))]
_TAIL: Final = _TEMPLATE[len(_HEAD) + merkle.HASH_SIZE :]


class Problem(enum.Enum):
    """What kind of anomaly an audit found (docs/AUDIT.md explains each)."""

    MISSING_LEAF = "missing-leaf"
    MALFORMED_LEAF = "malformed-leaf"
    RECORD_MISMATCH = "record-mismatch"
    MALFORMED_RECORD = "malformed-record"
    RECORD_WITHHELD = "record-withheld"
    BAD_CHECKPOINT = "bad-checkpoint"
    ROOT_MISMATCH = "root-mismatch"
    DIVERGENT_LEAF = "divergent-leaf"
    FORK = "fork"
    ROLLBACK = "rollback"
    BAD_KEY_RECORD = "bad-key-record"
    UNKNOWN_KEY = "unknown-key"
    HEADER_MISMATCH = "header-mismatch"
    BAD_ENVELOPE_SIGNATURE = "bad-envelope-signature"
    BAD_ACK = "bad-ack"
    BAD_TOMBSTONE = "bad-tombstone"


@dataclass(frozen=True, slots=True)
class Entry:
    """One leaf as served: its bytes, and its record and salt unless withheld."""

    index: int
    leaf: bytes
    record: bytes | None = None
    salt: bytes | None = None


@dataclass(frozen=True)
class Anomaly:
    """One problem and the leaf index it concerns (``None``: the log as a whole)."""

    index: int | None
    problem: Problem
    detail: str

    def __str__(self) -> str:
        where = "log" if self.index is None else f"leaf {self.index}"
        return f"{where}: {self.problem.value}: {self.detail}"


@dataclass(frozen=True)
class Refusal:
    """A refused request, as its record tells it."""

    index: int
    at: int
    agency: str | None
    method: str
    path: str
    problem: str
    status: int


@dataclass(frozen=True)
class Erasure:
    """A record deleted by the hub, and the signed tombstone that says why."""

    index: int
    tombstone: int
    reason: str
    at: int


@dataclass
class Tally:
    """What was seen: counts by kind, agency and channel, per hour too."""

    entries: int = 0
    records: int = 0
    signatures: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_agency: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    hourly_by_agency: defaultdict[str, Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    hourly_by_channel: defaultdict[str, Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    refusals: list[Refusal] = field(default_factory=list)
    #: Refusals that name nobody, logged only as counts: (problem, status) -> n.
    summarized: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: How many ``refusals-summarized`` records those counts came from.
    summaries: int = 0
    erasures: list[Erasure] = field(default_factory=list)

    def refusals_by_problem(self) -> list[tuple[str, int, int, int]]:
        """(problem, status, refusals logged one by one, refusals in summaries), sorted."""
        single: Counter[tuple[str, int]] = Counter((r.problem, r.status) for r in self.refusals)
        return [
            (problem, status, single[(problem, status)], self.summarized[(problem, status)])
            for problem, status in sorted(single.keys() | self.summarized.keys())
        ]

    def add(self, kind: EventKind, at: int, fields: dict[str, Any]) -> None:
        """Count one record (once per leaf: kept lean)."""
        self.records += 1
        self.by_kind[kind.value] += 1
        hour = at // HOUR_MS
        agency = fields.get("sender") or fields.get("agency")
        if type(agency) is str:
            self.by_agency[agency] += 1
            self.hourly_by_agency[agency][hour] += 1
        channel = fields.get("channel")
        if type(channel) is str:
            self.by_channel[channel] += 1
            self.hourly_by_channel[channel][hour] += 1


@dataclass(frozen=True)
class Report:
    """What one verification found."""

    origin: str
    start: int
    end: int
    root: bytes | None
    checkpoints: tuple[tuple[int, str], ...]
    tally: Tally
    anomalies: tuple[Anomaly, ...]
    warnings: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """True when no anomaly was found."""
        return not self.anomalies


#: What a worker is sent per check: public key, signature, context, message, and for
#: an accepted note the record's fields, whose agreement with the header is checked first.
_Job = tuple[bytes, bytes, bytes, bytes, dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class _Check:
    """One signature to verify, and the anomaly to report if it does not."""

    index: int
    problem: Problem
    job: _Job
    what: str


def frontier_from_inclusion_proof(
    leaf: bytes, index: int, checkpoint: Checkpoint, proof: Sequence[bytes]
) -> merkle.Frontier:
    """The right edge of the first ``index`` leaves, proven by leaf ``index``'s inclusion.

    The left siblings on the path of leaf ``index`` (those RFC 9162 section 2.1.3.2 hashes
    in as ``HASH(0x01 || p || r)``) are the perfect subtrees tiling leaves ``0..index-1``;
    once the proof leads to the signed root they are authentic.

    Raises:
        InvalidProof: the proof does not lead from the leaf to the checkpoint's root.
    """
    merkle.verify_inclusion(
        merkle.leaf_hash(leaf), index, checkpoint.size, proof, checkpoint.root_hash
    )
    lefts, fn, sn = [], index, checkpoint.size - 1
    for hashed in proof:
        if fn & 1 or fn == sn:
            lefts.append(hashed)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        fn, sn = fn >> 1, sn >> 1
    return merkle.Frontier(index, tuple(reversed(lefts)))


def extends(frontier: merkle.Frontier, checkpoint: Checkpoint, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows the tree of ``frontier`` is a prefix of ``checkpoint``'s."""
    try:
        merkle.verify_consistency(
            frontier.size, checkpoint.size, frontier.root(), checkpoint.root_hash, proof
        )
    except KeysError:
        return False
    return True


class LogVerifier:
    """Replays the log as values; see the module's theory of operation.

    ``frontier`` is the proven right edge at ``start`` (``None``: roots are not
    recomputed, which only a range that could not be anchored needs). ``workers``: the
    processes that check signatures (default: one per core available, none on a single
    core; 0: all in this process). Call :meth:`finish`, or :meth:`close` on an error
    path, to stop them.
    """

    def __init__(
        self,
        verifier: NoteVerifier,
        *,
        start: int = 0,
        frontier: merkle.Frontier | None = None,
        workers: int | None = None,
    ) -> None:
        self.verifier = verifier
        self.start = start
        self.next = start
        self._log_key = verifier.verify_key
        self._stack: list[bytes] | None = None
        if frontier is not None or start == 0:
            self._stack = list(frontier.hashes) if frontier is not None else []
        self._expected: dict[int, list[tuple[bytes, str]]] = {}
        self._compared: list[tuple[int, str]] = []
        self.mismatched: list[Checkpoint] = []
        self.snapshots: dict[int, tuple[bytes, ...]] = {}
        self._keys: dict[bytes, tuple[int, AgencyCard]] = {}
        self._withheld: set[int] = set()
        self._erased: set[int] = set()
        self._anomalies: list[Anomaly] = []
        self._warnings: list[str] = []
        self.tally = Tally()
        self._workers = _cores() if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[tuple[list[_Check], Future[_Outcomes]]] = deque()
        self._in_process = 0
        #: Signatures sent to the worker processes (the rest were checked here).
        self.in_workers = 0
        self._snapshot()

    # -- checkpoints -----------------------------------------------------------------

    def open_checkpoint(self, note: bytes, label: str) -> Checkpoint | None:
        """The checkpoint in ``note`` if the log key signed it; else an anomaly and None."""
        try:
            return open_signed_checkpoint(note, self.verifier)
        except KeysError as exc:
            self.anomaly(None, Problem.BAD_CHECKPOINT, f"{label} checkpoint: {exc or 'invalid'}")
            return None

    def expect(self, checkpoint: Checkpoint, label: str) -> None:
        """Compare the replayed root with ``checkpoint`` when the replay reaches its size."""
        size, root = checkpoint.size, checkpoint.root_hash
        for other_root, other in self._expected.get(size, []):
            if other_root != root:
                self.anomaly(
                    None,
                    Problem.FORK,
                    f"two signed checkpoints of {size} leaves with different roots: {other} "
                    f"{other_root.hex()[:16]}, {label} {root.hex()[:16]}",
                )
        self._expected.setdefault(size, []).append((root, label))
        if self._stack is not None and self.next == size:
            self._compare(size)

    def _compare(self, size: int) -> None:
        root = self.frontier().root()
        self._snapshot()
        for expected, label in self._expected[size]:
            self._compared.append((size, label))
            if expected != root:
                self.not_in(
                    Checkpoint(self.verifier.name, size, expected),
                    f"the root recomputed from leaves 0..{size - 1} differs from the {label} one",
                )

    def beyond(self) -> list[tuple[Checkpoint, str]]:
        """Expected checkpoints larger than the replay, to reach with consistency proofs."""
        return [
            (Checkpoint(self.verifier.name, size, root), label)
            for size, roots in sorted(self._expected.items())
            if size > self.next
            for root, label in roots
        ]

    def not_in(self, checkpoint: Checkpoint, why: str) -> None:
        """The replayed leaves are not a prefix of ``checkpoint``'s tree: say why."""
        self.mismatched.append(checkpoint)
        self.anomaly(
            None, Problem.ROOT_MISMATCH, f"signed checkpoint of {checkpoint.size} leaves: {why}"
        )

    def extended(self, checkpoint: Checkpoint, label: str) -> None:
        """Note that ``checkpoint`` was reached with a consistency proof."""
        self._compared.append((checkpoint.size, label))

    def anchor(self, frontier: merkle.Frontier) -> None:
        """Start recomputing roots from ``frontier``, the proven edge at :attr:`next`."""
        if frontier.size != self.next:
            raise ValueError("the frontier is not that of the next leaf")
        self._stack = list(frontier.hashes)
        self._snapshot()

    def frontier(self) -> merkle.Frontier:
        """The right edge of the leaves replayed so far (needs an anchored replay)."""
        if self._stack is None:
            raise ValueError("this replay is not anchored: it recomputes no root")
        return merkle.Frontier(self.next, tuple(self._stack))

    @property
    def anchored(self) -> bool:
        """Whether roots are being recomputed (no leaf missing, start proven)."""
        return self._stack is not None

    def _snapshot(self) -> None:
        if self._stack is not None:
            self.snapshots[self.next] = tuple(self._stack)

    # -- leaves ----------------------------------------------------------------------

    def feed(self, entries: Sequence[Entry]) -> None:
        """Verify the next leaves, in index order; a gap or a repeat is an anomaly."""
        checks: list[_Check] = []
        for entry in entries:
            if entry.index < self.next:
                self.anomaly(entry.index, Problem.MALFORMED_LEAF, "served twice or out of order")
                continue
            if entry.index > self.next:
                self._gap(entry.index)
            self._append(entry.leaf)
            self._leaf(entry, checks)
        self._snapshot()
        self._run(checks)

    def _gap(self, index: int) -> None:
        first, last = self.next, index - 1
        which = f"leaf {first} is" if first == last else f"leaves {first}..{last} are"
        self.anomaly(first, Problem.MISSING_LEAF, f"{which} not served")
        if self._stack is not None:
            self.warn(f"roots after leaf {first - 1} were not recomputed: leaves are missing")
        self._stack = None
        self.next = index

    def _append(self, leaf: bytes) -> None:
        stack, size, hashed = self._stack, self.next, merkle.leaf_hash(leaf)
        self.next += 1
        if stack is None:
            return
        while size & 1:
            hashed = merkle.node_hash(stack.pop(), hashed)
            size >>= 1
        stack.append(hashed)
        if self.next in self._expected:
            self._compare(self.next)

    def _leaf(self, entry: Entry, checks: list[_Check]) -> None:
        leaf = entry.leaf
        self.tally.entries += 1
        if len(leaf) == len(_TEMPLATE) and leaf.startswith(_HEAD) and leaf.endswith(_TAIL):
            self._event(entry, leaf[len(_HEAD) : len(_HEAD) + merkle.HASH_SIZE], checks)
            return
        try:
            parsed = parse_leaf(leaf)
        except KeysError as exc:
            self.anomaly(entry.index, Problem.MALFORMED_LEAF, str(exc))
            return
        if isinstance(parsed, Tombstone):
            self._tombstone(entry.index, parsed)
        else:
            self._event(entry, parsed, checks)

    def _event(self, entry: Entry, commitment: bytes, checks: list[_Check]) -> None:
        index, record, salt = entry.index, entry.record, entry.salt
        if record is None or salt is None:
            self._withheld.add(index)
            return
        try:
            matches = commit(record, salt) == commitment
        except KeysError:
            matches = False
        if not matches:
            self.anomaly(index, Problem.RECORD_MISMATCH, "the record does not match its leaf")
            return
        try:
            kind, at, fields = decode_record(record)
        except ValueError as exc:
            self.anomaly(index, Problem.MALFORMED_RECORD, f"the record does not decode ({exc})")
            return
        self.tally.add(kind, at, fields)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, index, at, fields, checks)

    # -- records of each kind --------------------------------------------------------

    def _key(self, index: int, at: int, fields: dict[str, Any], checks: list[_Check]) -> None:
        try:
            card = AgencyCard.parse(fields["card"])
        except (KeysError, KeyError) as exc:
            self.anomaly(index, Problem.BAD_KEY_RECORD, f"the card does not verify ({exc})")
            return
        if card.agency != fields.get("agency") or bytes(card.key_id) != fields.get("key_id"):
            self.anomaly(index, Problem.BAD_KEY_RECORD, "agency or key id differ from the card's")
            return
        known = self._keys.get(bytes(card.key_id))
        if known is not None and known[1] != card:
            self.anomaly(index, Problem.BAD_KEY_RECORD, f"key id {card.key_id} names two cards")
            return
        self._keys.setdefault(bytes(card.key_id), (index, card))

    def key_history(self) -> dict[bytes, tuple[int, AgencyCard]]:
        """Every card the replayed log registered, by key id, with its leaf index."""
        return dict(self._keys)

    def _note(self, index: int, at: int, fields: dict[str, Any], checks: list[_Check]) -> None:
        """The header check (~40 µs with 10 recipients) goes with the signature's: it
        comes first wherever it runs, and here only when the sender's key is unknown."""
        key_id, sender = fields.get("sender_key"), fields.get("sender")
        card = self._known(key_id, sender)
        if card is None:
            wrong = header_mismatches(fields)
            if wrong:
                self.anomaly(index, Problem.HEADER_MISMATCH, _header_detail(wrong))
            else:
                self._card(index, key_id, sender)
            return
        header = fields.get("header")
        checks.append(
            _Check(
                index,
                Problem.BAD_ENVELOPE_SIGNATURE,
                (
                    card.sign_key.raw,
                    _bytes(fields.get("signature")),
                    labels.SIG_ENVELOPE,
                    _bytes(header),
                    fields,
                ),
                "the sender's signature over the envelope header does not verify",
            )
        )

    def _ack(self, index: int, at: int, fields: dict[str, Any], checks: list[_Check]) -> None:
        try:
            ack = ReadAck.parse(fields["statement"])
        except (KeysError, KeyError, TypeError) as exc:
            self.anomaly(index, Problem.BAD_ACK, f"the signed statement does not decode ({exc})")
            return
        stated = (str(ack.channel), str(ack.agency), ack.position)
        if stated != (fields.get("channel"), fields.get("agency"), fields.get("position")):
            self.anomaly(index, Problem.BAD_ACK, "the record disagrees with the signed statement")
            return
        card = self._card(index, bytes(ack.key_id), str(ack.agency))
        if card is not None:
            checks.append(
                _Check(
                    index,
                    Problem.BAD_ACK,
                    (
                        card.sign_key.raw,
                        _bytes(fields.get("signature")),
                        labels.SIG_ACK,
                        fields["statement"],
                        None,
                    ),
                    "the reader's signature over its acknowledgement does not verify",
                )
            )

    def _known(self, key_id: object, agency: object) -> AgencyCard | None:
        """The card of ``key_id`` if the log registered it, for ``agency``; no report."""
        known = self._keys.get(key_id) if isinstance(key_id, bytes) else None
        return known[1] if known is not None and known[1].agency == agency else None

    def _card(self, index: int, key_id: object, agency: object) -> AgencyCard | None:
        known = self._keys.get(key_id) if isinstance(key_id, bytes) else None
        if known is None:
            detail = f"key {_hex(key_id)} of {agency} is not in the log's key history before it"
            if self.start:
                self.warn(f"leaf {index}: {detail} (keys before leaf {self.start} are not known)")
            else:
                self.anomaly(index, Problem.UNKNOWN_KEY, detail)
            return None
        if known[1].agency != agency:
            self.anomaly(index, Problem.UNKNOWN_KEY, f"key {_hex(key_id)} is {known[1].agency}'s")
            return None
        return known[1]

    def _refused(self, index: int, at: int, fields: dict[str, Any], checks: list[_Check]) -> None:
        status = fields.get("status")
        self.tally.refusals.append(
            Refusal(
                index,
                at,
                _text(fields.get("agency")),
                str(fields.get("method", "")),
                str(fields.get("path", "")),
                str(fields.get("problem", "")),
                status if type(status) is int else 0,
            )
        )

    def _summarized(
        self, index: int, at: int, fields: dict[str, Any], checks: list[_Check]
    ) -> None:
        """Refusals that name nobody, counted by problem and status over an interval."""
        try:
            summary = RefusalSummary.from_fields(fields)
        except KeysError as exc:
            self.anomaly(
                index, Problem.MALFORMED_RECORD, f"the summary of refusals is malformed ({exc})"
            )
            return
        self.tally.summaries += 1
        for problem, status, count in summary.counts:
            self.tally.summarized[(problem, status)] += count

    def _tombstone(self, index: int, tombstone: Tombstone) -> None:
        self.tally.by_kind["tombstone"] += 1
        try:
            tombstone.verify(self._log_key)
        except KeysError:
            self.anomaly(index, Problem.BAD_TOMBSTONE, "it is not signed by the log key")
            return
        target = tombstone.index
        if target >= index or target in self._erased:
            self.anomaly(index, Problem.BAD_TOMBSTONE, f"it names leaf {target}, which it cannot")
            return
        self._erased.add(target)
        self.tally.erasures.append(Erasure(target, index, tombstone.reason, tombstone.at))
        if target >= self.start and target not in self._withheld:
            self.warn(f"leaf {index} erases the record of leaf {target}, which is still served")
        self._withheld.discard(target)

    # -- signatures ------------------------------------------------------------------

    def _run(self, checks: list[_Check]) -> None:
        self.tally.signatures += len(checks)
        pool = self._pool_for(len(checks))
        if pool is None:
            self._in_process += len(checks)
            self._failed(checks, _outcomes([c.job for c in checks]))
            return
        for low in range(0, len(checks), BATCH):
            batch = checks[low : low + BATCH]
            self._pending.append((batch, pool.submit(_outcomes, [c.job for c in batch])))
            self.in_workers += len(batch)
        while self._pending and (len(self._pending) > IN_FLIGHT or self._pending[0][1].done()):
            self._settle()

    def _pool_for(self, count: int) -> ProcessPoolExecutor | None:
        """The worker pool if ``count`` signatures are worth sending there (started once)."""
        if self._workers < 1 or count < PARALLEL_FROM or self._in_process < POOL_FROM:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._workers, mp_context=_context())
        return self._pool

    def _settle(self) -> None:
        """Report the failures of the oldest batch sent (waiting for it if need be)."""
        batch, future = self._pending.popleft()
        try:
            outcomes = future.result()
        except BrokenExecutor:  # a worker died: check here, and send no more
            self._workers = 0
            self.in_workers -= len(batch)
            self._in_process += len(batch)
            outcomes = _outcomes([c.job for c in batch])
        self._failed(batch, outcomes)

    def _failed(self, checks: list[_Check], outcomes: _Outcomes) -> None:
        for position, wrong in outcomes:
            check = checks[position]
            if wrong:
                self.anomaly(check.index, Problem.HEADER_MISMATCH, _header_detail(wrong))
            else:
                self.anomaly(check.index, check.problem, check.what)

    def close(self) -> None:
        """Stop the worker processes, dropping unchecked batches (an aborted run)."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    # -- the result ------------------------------------------------------------------

    def anomaly(self, index: int | None, problem: Problem, detail: str) -> None:
        """Record an anomaly."""
        self._anomalies.append(Anomaly(index, problem, detail))

    def warn(self, text: str) -> None:
        """Record something the auditor should know that is not proof of wrongdoing."""
        if text not in self._warnings:
            self._warnings.append(text)

    def finish(self, end: int) -> Report:
        """The report, once leaves up to ``end`` were fed (waits for every signature)."""
        while self._pending:
            self._settle()
        self.close()
        if self.next < end:
            self._gap(end)
        for index in sorted(self._withheld):
            self.anomaly(index, Problem.RECORD_WITHHELD, "no record is served and no tombstone")
        if self._withheld and not self.tally.records:
            self.warn("the hub served no record at all: is this key registered as an auditor?")
        anomalies = sorted(self._anomalies, key=lambda a: -1 if a.index is None else a.index)
        return Report(
            origin=self.verifier.name,
            start=self.start,
            end=end,
            root=self.frontier().root() if self.anchored else None,
            checkpoints=tuple(self._compared),
            tally=self.tally,
            anomalies=tuple(anomalies),
            warnings=tuple(self._warnings),
        )


_Handler = Callable[[LogVerifier, int, int, dict[str, Any], list[_Check]], None]
_HANDLERS: Final[dict[EventKind, _Handler]] = {
    EventKind.AGENCY_REGISTERED: LogVerifier._key,
    EventKind.KEY_ADDED: LogVerifier._key,
    EventKind.NOTE_ACCEPTED: LogVerifier._note,
    EventKind.NOTE_ACKNOWLEDGED: LogVerifier._ack,
    EventKind.REQUEST_REFUSED: LogVerifier._refused,
    EventKind.REFUSALS_SUMMARIZED: LogVerifier._summarized,
}


def decode_record(record: bytes) -> tuple[EventKind, int, dict[str, Any]]:
    """Kind, time and fields of a record whose commitment was already checked.

    The commitment binds the exact bytes, so this skips the canonical-form check of
    :meth:`keys.leaf.EventRecord.parse` (a quarter of whose cost is that check) but keeps
    its bounds and rules. Raises ValueError.
    """
    try:
        fields = _unpack_map(record)
    except (TypeError, msgpack.UnpackException) as exc:
        raise ValueError(str(exc)) from None
    kind, at, version = fields.pop("kind", None), fields.pop("at", None), fields.pop("v", None)
    if version != 1 or type(version) is not int:
        raise ValueError("only version 1 records are known")
    if kind not in _KINDS or type(at) is not int:
        raise ValueError("unknown kind or no time")
    return _KINDS[kind], at, fields


def _unpack_map(data: bytes, limit: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    if len(data) > limit:
        raise ValueError(f"longer than {limit} bytes")
    value = msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=True,
        max_bin_len=limit,
        max_str_len=limit,
        max_array_len=codec.MAX_ITEMS,
        max_map_len=codec.MAX_ITEMS,
        max_ext_len=0,
    )
    if type(value) is not dict:
        raise ValueError("not a map")
    return value


def header_mismatches(fields: dict[str, Any]) -> list[str]:
    """The fields of a note-accepted record that its signed header bytes contradict."""
    try:
        header = Header.parse(fields["header"])
    except (KeysError, KeyError, TypeError):
        return ["header"]
    stated = {
        "message_id": bytes(header.message_id),
        "channel": str(header.channel),
        "sender": str(header.sender),
        "sender_key": bytes(header.sender_key),
        "recipients": [[str(r.agency), bytes(r.key_id)] for r in header.recipients],
        "classification": header.markings.classification.value,
        "handling": header.markings.handling.value,
    }
    return [name for name, value in stated.items() if fields.get(name) != value]


def _context() -> multiprocessing.context.BaseContext:
    """Workers are forked from a fresh server process that imported this module once, not
    from this one (its threads make a fork unsafe) nor spawned (each would import it)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _cores() -> int:
    """Worker processes worth starting: one per core available, none on a single one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores if cores and cores > 1 else 0


#: The checks that fail, by position: the fields a note's header contradicts, or none
#: when the header agrees (or there is none) and the signature does not verify.
_Outcomes = list[tuple[int, list[str]]]


def _outcomes(jobs: Sequence[_Job]) -> _Outcomes:
    """Run checks (in a worker process, or in this one); see :data:`_Job`."""
    failed: _Outcomes = []
    for position, (raw, signature, context, message, fields) in enumerate(jobs):
        wrong = [] if fields is None else header_mismatches(fields)
        if wrong:
            failed.append((position, wrong))
            continue
        try:
            VerifyKey(raw).verify(signature, context, message)
        except KeysError:
            failed.append((position, []))
    return failed


def _header_detail(wrong: list[str]) -> str:
    return f"the signed header disagrees with the record on {', '.join(wrong)}"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""


def _hex(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else repr(value)
