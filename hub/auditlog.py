"""The audit log: sequencer, checkpoints, proofs and deletion.

Theory of operation. An action and its audit event are written by one Lua script into
the action's own hash slot: the event goes into that slot's *outbox* stream. So there is
no action without its event and no event without its action, on one Redis or a Cluster.
The sequencer then moves events from outboxes into the Merkle log, exactly once:

1. it reads the log size and the frontier (the perfect subtrees on the right edge);
2. it reads the outbox's events after the outbox's cursor (the last event taken);
3. it computes the new leaves' hashes and every perfect subtree they complete
   (:meth:`keys.merkle.Frontier.append`), in Python, since Redis has no SHA-256;
4. one Lua script in the ``{log}`` slot stores leaves, records, salts and nodes, and
   moves size and cursor, but only if size and cursor are still what step 1 and 2 read.

Two sequencers (two hub replicas) can race; the loser's script changes nothing and it
starts again, so every event becomes exactly one leaf, in outbox order. A crash between
the steps leaves the outbox untouched, and the next drain (each post drains its channel;
a sweep drains every outbox every second) picks the events up.

Proofs read the O(log n) perfect-subtree hashes they need in one ``HMGET``.
Checkpoints are signed at most every ``checkpoint_interval_s`` while the log grows.

Refusals nobody can be named for (no valid signature, or a replayed one) are not logged
one by one: anyone could grow the log at the hub's refusal rate. Each process counts them
in memory by problem and status (:class:`RefusalTally`, a fixed set of keys) and logs at
most one ``refusals-summarized`` record every ``refusal_summary_s``; stopping logs what
is pending. A crash loses at most one interval of these counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from hub import events, keyspace
from hub.errors import BadRequest, Conflict, HubError, NotFound, Unavailable
from hub.events import AuditEvent
from hub.logstore import LogStore, OutboxEvent, StoredLeaf
from keys import merkle, now_ms
from keys.leaf import MAX_SUMMARY_ROWS, EventKind, EventRecord, RefusalSummary, Tombstone
from keys.logkey import LogKey

log = logging.getLogger(__name__)

BATCH: Final = 512
#: How many recently sequenced event ids each outbox remembers the indexes of.
RECENT: Final = 2 * BATCH
SWEEP_S: Final = 1.0
WAIT_FOR_INDEX_S: Final = 5.0
MAX_PAGE: Final = 1000
RETENTION_REASON: Final = "retention: end of the year after creation (BDSG section 76(4))"
RETENTION_CHECK_S: Final = 3600.0
#: How long stopping waits for a loop to finish its round before cancelling it.
STOP_WAIT_S: Final = 5.0


@dataclass
class _Outbox:
    """This process's sequencer state of one outbox.

    ``cursor`` is the last event taken into the log as this process last saw it (None:
    read it); ``waiters`` are the callers waiting for an event's index; ``recent`` the
    indexes of the last events sequenced here, for a caller that comes just after its
    event was taken; ``trim_to`` what the next outbox read trims; ``again`` asks the
    drainer ``task`` for one more pass.
    """

    cursor: str | None = None
    waiters: dict[str, asyncio.Future[int]] = field(default_factory=dict)
    recent: OrderedDict[str, int] = field(default_factory=OrderedDict)
    task: asyncio.Task[None] | None = None
    again: bool = False
    trim_to: str | None = None

    def settle(self, events: Sequence[OutboxEvent], first: int) -> None:
        """Hand the waiters of ``events`` (now leaves ``first ..``) their indexes."""
        for offset, item in enumerate(events):
            index = first + offset
            self.recent[item.event_id] = index
            waiter = self.waiters.pop(item.event_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(index)
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)


def _stream_order(event_id: str) -> tuple[int, int]:
    """A stream id ``<ms>-<seq>`` as a sortable pair."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def _report_failure(task: asyncio.Task[None]) -> None:
    """Retrieve a drainer's failure; log it unless it is a storage error.

    Storage errors reach whoever waits on the drainer (a post answers 503, the sweep
    logs and retries); anything else is a bug and must not pass silently.
    """
    if task.cancelled():
        return
    failure = task.exception()
    if failure is not None and not isinstance(failure, HubError):
        log.error("audit sequencer failed", exc_info=failure)


class RefusalTally:
    """This process's count of the refusals logged only as a summary, since ``start``.

    Keyed by (problem slug, HTTP status): both come from the :class:`~hub.errors.HubError`
    class that refused, never from the request, so the keys are a small fixed set. Should
    they ever be more than :data:`TALLY_ROWS`, further problems are counted as ``other``
    (with their status): memory stays bounded whatever arrives.
    """

    def __init__(self, start: int) -> None:
        self.start = start
        self._counts: Counter[tuple[str, int]] = Counter()

    def count(self, problem: str, status: int) -> None:
        """Count one refusal."""
        key = (problem, status if 400 <= status <= 599 else 500)
        if key not in self._counts and len(self._counts) >= TALLY_ROWS:
            key = ("other", key[1])
        self._counts[key] += 1

    def pending(self) -> dict[tuple[str, int], int]:
        """The counts not yet taken into a summary."""
        return dict(self._counts)

    def take(self, now: int) -> RefusalSummary | None:
        """The summary of what was counted (None: nothing), and start a new interval."""
        counts, self._counts = self._counts, Counter()
        start, self.start = self.start, max(now, self.start)
        if not counts:
            return None
        rows = tuple((problem, status, n) for (problem, status), n in sorted(counts.items()))
        return RefusalSummary(start, max(now, start), rows)

    def restore(self, summary: RefusalSummary) -> None:
        """Count a summary that could not be logged again, into the next one."""
        self.start = min(self.start, summary.start)
        for problem, status, n in summary.counts:
            self._counts[(problem, status)] += n


#: Distinct (problem, status) pairs a tally keeps before it counts further ones as
#: ``other``: with at most 200 statuses, a summary stays within its row limit.
TALLY_ROWS: Final = MAX_SUMMARY_ROWS - 200


@dataclass
class _Tree:
    """The sequencer's view of the log: its frontier (hence size and root)."""

    frontier: merkle.Frontier


class AuditLog:
    """The hub's audit log service."""

    def __init__(
        self,
        store: LogStore,
        key: LogKey,
        *,
        checkpoint_interval_s: float,
        refusal_summary_s: float = 60.0,
    ) -> None:
        self._store = store
        self.key = key
        self._interval = checkpoint_interval_s
        self._summary_interval = refusal_summary_s
        self.refusals = RefusalTally(now_ms())
        self._tree: _Tree | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._outboxes: dict[str, _Outbox] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._signed_size = -1
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start the sequencer sweep and the checkpointer."""
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._sweep_loop(), name="audit-sequencer"),
            asyncio.create_task(self._checkpoint_loop(), name="audit-checkpointer"),
            asyncio.create_task(self._retention_loop(), name="audit-retention"),
            asyncio.create_task(self._summary_loop(), name="audit-refusal-summary"),
        ]

    async def stop(self) -> None:
        """Drain what is pending (if storage answers), sign a last checkpoint, stop.

        The loops are asked to stop by an event, not only by cancellation: a cancellation
        that lands inside a Redis call can be absorbed by the client library, and a loop
        that only listens for it would then sleep on forever.
        """
        self._stopping.set()
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            for task in pending:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        with contextlib.suppress(HubError):
            await self.summarize_refusals()
            await self.drain_all()
            await self.sign_checkpoint()
        drainers = [box.task for box in self._outboxes.values() if box.task is not None]
        for task in drainers:
            task.cancel()
        for task in drainers:
            with contextlib.suppress(asyncio.CancelledError, HubError):
                await task

    # -- sequencing -------------------------------------------------------------------

    async def index_of(self, outbox: str, event_id: str) -> int:
        """The leaf index ``event_id`` of ``outbox`` became, draining it if needed.

        Group commit: the caller registers what it waits for and wakes the outbox's one
        drainer; every post that arrives while a batch is being sequenced is taken by the
        next batch together, and the drainer hands each waiter its index from the batch
        it sequenced (no read of the index afterwards). An event that is already behind
        the outbox's cursor (a retry; another replica's drain) is looked up instead.
        """
        box = self._outbox(outbox)
        known = box.recent.get(event_id)
        if known is not None:
            return known
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_INDEX_S
        if box.cursor is not None and _stream_order(event_id) <= _stream_order(box.cursor):
            index = await self._store.source_index(outbox, event_id)
            if index is not None:
                return index
        waiter = box.waiters.get(event_id)
        if waiter is None:
            waiter = box.waiters[event_id] = loop.create_future()
        try:
            return await self._wait_for(outbox, box, event_id, waiter, deadline)
        finally:
            if box.waiters.get(event_id) is waiter:
                del box.waiters[event_id]

    async def _wait_for(
        self, outbox: str, box: _Outbox, event_id: str, waiter: asyncio.Future[int], deadline: float
    ) -> int:
        loop = asyncio.get_running_loop()
        while True:
            drainer = self._kick(outbox, box)
            await asyncio.wait(
                (waiter, drainer),
                timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if waiter.done():
                return waiter.result()
            if drainer.done() and not drainer.cancelled():
                failure = drainer.exception()
                if failure is not None:
                    raise failure
                # Drained, and not by this drainer: another sequencer took it.
                index = await self._store.source_index(outbox, event_id)
                if index is not None:
                    return index
            if loop.time() > deadline:
                raise Unavailable("the audit log is not keeping up; retry", retry_after=1)

    async def settle_directory(self, event_id: str) -> int:
        """The leaf index of a directory event (waiting for it to be sequenced)."""
        return await self.index_of(keyspace.directory_events(), event_id)

    async def settle_channel(self, channel: str, event_id: str) -> int:
        """The leaf index of a channel's event (waiting for it to be sequenced)."""
        return await self.index_of(keyspace.channel_events(channel), event_id)

    async def record_refusal(self, event: AuditEvent) -> None:
        """Queue a refused request's event; the sweep sequences it shortly."""
        await self._store.append_inbox(event)
        self.note_dirty(keyspace.log_inbox())

    def count_refusal(self, problem: str, status: int) -> None:
        """Count a refusal nobody can be named for, for the next summary (no I/O)."""
        self.refusals.count(problem, status)

    async def summarize_refusals(self, now: int | None = None) -> bool:
        """Log the summary of the refusals counted since the last one, if any; whether
        one was logged. If storage fails, the counts stay for the next summary."""
        summary = self.refusals.take(now_ms() if now is None else now)
        if summary is None:
            return False
        try:
            await self._store.append_inbox(events.refusals_summarized(summary, summary.end))
        except HubError:
            self.refusals.restore(summary)
            raise
        self.note_dirty(keyspace.log_inbox())
        return True

    async def _summary_loop(self) -> None:
        while not self._stopping.is_set():
            await self._pause(self._summary_interval)
            if self._stopping.is_set():
                return  # stop() logs what is pending
            try:
                await self.summarize_refusals()
            except HubError as error:
                log.warning("audit refusal summary: %s; retrying next interval", error)

    async def append(self, event: AuditEvent) -> int:
        """Log an event that has no action of its own (a refusal, a tombstone)."""
        event_id = await self._store.append_inbox(event)
        return await self.index_of(keyspace.log_inbox(), event_id)

    def note_dirty(self, outbox: str) -> None:
        """Ask the sweep to drain ``outbox`` soon."""
        self._dirty.add(outbox)
        self._wake.set()

    async def drain_all(self) -> None:
        """Take every pending event of every outbox into the log."""
        for outbox in await self._store.outboxes():
            await self.drain(outbox)

    async def drain(self, outbox: str) -> None:
        """Take every pending event of ``outbox`` into the log."""
        await asyncio.shield(self._kick(outbox, self._outbox(outbox)))

    def _outbox(self, outbox: str) -> _Outbox:
        box = self._outboxes.get(outbox)
        if box is None:
            box = self._outboxes[outbox] = _Outbox()
        return box

    def _kick(self, outbox: str, box: _Outbox) -> asyncio.Task[None]:
        """Ask for one more pass over ``outbox``; the task of its one drainer."""
        box.again = True
        if box.task is None or box.task.done():
            box.task = asyncio.create_task(self._drain_outbox(outbox, box), name="audit-drain")
            box.task.add_done_callback(_report_failure)
        return box.task

    async def _drain_outbox(self, outbox: str, box: _Outbox) -> None:
        """Drain ``outbox`` until nobody asked for another pass; then trim it.

        The only coroutine draining this outbox in this process, so the outbox's cursor
        can be kept in memory (the sequencing script still checks it, against other
        replicas). A pass asked for while the task ends (no await between the last check
        and the return) finds the task done and starts a new one.
        """
        while True:
            if box.again:
                box.again = False
                while await self._drain_batch(outbox, box):
                    pass
            elif box.trim_to is not None:
                upto, box.trim_to = box.trim_to, None
                await self._store.trim_outbox(outbox, upto)
            else:
                return

    async def _drain_batch(self, outbox: str, box: _Outbox) -> bool:
        """Sequence one batch of ``outbox``; True if there may be more right away.

        Only computing and storing the new leaves holds the lock (the log's size and
        frontier are shared by every outbox); reading the outbox and trimming what an
        earlier batch took (one pipelined round trip) do not.
        """
        if self._tree is None:
            async with self._lock:
                await self._current_tree()
        if box.cursor is None:
            box.cursor = await self._store.cursor(outbox)
        cursor = box.cursor
        trim, box.trim_to = box.trim_to, None
        events = await self._store.read_outbox(outbox, cursor, BATCH, trim_upto=trim)
        if not events:
            return False
        async with self._lock:
            tree = await self._current_tree()
            frontier, nodes = _appended(tree.frontier, events)
            first = await self._store.sequence(
                size=tree.frontier.size, outbox=outbox, cursor=cursor, events=events, nodes=nodes
            )
            if first is None:
                self._tree = None  # another sequencer went first: reload and try again
                box.cursor = None
                return True
            self._tree = _Tree(frontier)
        box.cursor = box.trim_to = events[-1].event_id
        box.settle(events, first)
        return len(events) == BATCH

    async def _current_tree(self) -> _Tree:
        if self._tree is None:
            size = await self._store.size()
            hashes = await self._store.nodes(merkle.Frontier.node_ids(size))
            if any(h is None for h in hashes):
                raise HubError("the audit log is missing subtree hashes; it needs an operator")
            self._tree = _Tree(merkle.Frontier(size, tuple(h for h in hashes if h is not None)))
        return self._tree

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the log is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_S)
            self._wake.clear()
            if self._stopping.is_set():
                return
            dirty, self._dirty = self._dirty, set()
            try:
                for outbox in dirty or await self._store.outboxes():
                    await self.drain(outbox)
            except HubError as error:
                log.warning("audit sequencer: %s; retrying", error)

    # -- checkpoints ------------------------------------------------------------------

    async def sign_checkpoint(self) -> bytes | None:
        """Sign and keep a checkpoint of the log as it is, if it grew since the last one."""
        async with self._lock:
            self._tree = None
            tree = await self._current_tree()
        size = tree.frontier.size
        if size == self._signed_size:
            return None
        note = self.key.sign_checkpoint(size, tree.frontier.root())
        await self._store.put_checkpoint(size, note)
        self._signed_size = size
        return note

    async def checkpoint_at(self, size: int) -> bytes | None:
        """The signed checkpoint of ``size`` leaves, if one was signed."""
        return await self._store.checkpoint_at(size)

    async def latest_checkpoint(self) -> bytes:
        """The newest signed checkpoint (signing the first one if there is none yet)."""
        note = await self._store.latest_checkpoint()
        if note is None:
            note = await self.sign_checkpoint()
        if note is None:
            note = await self._store.latest_checkpoint()
        if note is None:
            raise Unavailable("no checkpoint yet; retry", retry_after=1)
        return note

    async def _checkpoint_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sign_checkpoint()
            except HubError as error:
                log.warning("audit checkpointer: %s; retrying", error)
            await self._pause(self._interval)

    async def _retention_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                deleted = await self.retention_sweep(time.time_ns() // 1_000_000)
                if deleted:
                    log.info("audit retention: deleted %d records", len(deleted))
            except HubError as error:
                log.warning("audit retention: %s; retrying later", error)
            await self._pause(RETENTION_CHECK_S)

    # -- reading the log --------------------------------------------------------------

    async def size(self) -> int:
        """The number of leaves now."""
        return await self._store.size()

    async def leaves(self, start: int, end: int) -> list[StoredLeaf]:
        """Leaves ``start .. end-1`` with records and salts where still kept."""
        size = await self._store.size()
        if not 0 <= start <= end <= size or end - start > MAX_PAGE:
            raise BadRequest(f"ask for leaves 0 <= start <= end <= {size}, at most {MAX_PAGE}")
        return await self._store.leaves(start, end)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        await self._check_size(size)
        if not 0 <= index < size:
            raise BadRequest(f"index must be below the tree size {size}")
        return await self._proof(merkle.inclusion_proof_nodes(index, size))

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """The RFC 9162 consistency proof between trees of ``old`` and ``new`` leaves."""
        await self._check_size(new)
        if not 0 <= old <= new:
            raise BadRequest("need 0 <= old size <= new size")
        return await self._proof(merkle.consistency_proof_nodes(old, new))

    async def _check_size(self, size: int) -> None:
        current = await self._store.size()
        if not 0 <= size <= current:
            raise BadRequest(f"the log has {current} leaves; ask for a size up to that")

    async def _proof(self, plan: merkle.ProofNodes) -> list[bytes]:
        hashes = await self._store.nodes(plan.ids)
        if any(h is None for h in hashes):
            raise HubError("the audit log is missing subtree hashes; it needs an operator")
        return plan.combine([h for h in hashes if h is not None])

    # -- deletion -------------------------------------------------------------------

    async def retention_sweep(self, now_ms: int) -> list[int]:
        """Delete every record whose retention has passed; the indexes deleted.

        BDSG section 76(4): log data is deleted at the end of the year after the year it
        was made. Records are sequenced in time order, so the sweep walks forward from
        where it stopped last time and stops at the first record still due to be kept.
        Key records (:data:`KEPT_KINDS`) are passed over: they stay.
        """
        deleted: list[int] = []
        start, size = await self._store.retention_cursor(), await self._store.size()
        while start < size:
            page = await self._store.leaves(start, min(size, start + MAX_PAGE))
            for item in page:
                record = EventRecord.parse(item.record) if item.record else None
                if record is None or record.kind in KEPT_KINDS:
                    continue
                if retention_ends(record.at) > now_ms:
                    await self._store.set_retention_cursor(item.index)
                    return deleted
                if item.record:
                    with contextlib.suppress(NotFound):  # another replica's sweep was first
                        await self.delete_record(item.index, RETENTION_REASON, now_ms)
                        deleted.append(item.index)
            start += len(page) or MAX_PAGE
        await self._store.set_retention_cursor(start)
        return deleted

    async def delete_record(self, index: int, reason: str, now_ms: int) -> int:
        """Delete the record at ``index`` and log a signed tombstone; its leaf index.

        The tombstone is signed first and queued in the same Redis step that deletes the
        record, so no failure can leave a record gone without its tombstone. A leaf with
        no record (already deleted, or a tombstone itself) is refused with nothing changed,
        and so is a key record (:data:`KEPT_KINDS`).
        """
        if not 0 <= index < await self._store.size():
            raise NotFound(f"no leaf {index}")
        stored = await self._store.leaves(index, index + 1)
        if stored and stored[0].record:
            kind = EventRecord.parse(stored[0].record).kind
            if kind in KEPT_KINDS:
                raise Conflict(
                    f"leaf {index} records an agency's public key ({kind.value}); key records "
                    "are kept, since clients and auditors verify signatures with them"
                )
        tombstone = self.key.sign_tombstone(Tombstone(index, reason, now_ms))
        event_id = await self._store.delete_record(index, tombstone.leaf())
        if event_id is None:
            raise NotFound(f"the record of leaf {index} is already deleted (or it is a tombstone)")
        self.note_dirty(keyspace.log_inbox())
        return await self.index_of(keyspace.log_inbox(), event_id)


#: Records that neither retention nor erasure deletes: an agency's public key, which
#: holds no personal data and without which no later signature of that agency (notes,
#: acknowledgements) could be verified from the log, nor a card proved to a client.
KEPT_KINDS: Final = frozenset({EventKind.AGENCY_REGISTERED, EventKind.KEY_ADDED})


def retention_ends(at_ms: int) -> int:
    """When a record made at ``at_ms`` must be gone: the end of the following year (UTC)."""
    year = datetime.fromtimestamp(at_ms / 1000, tz=UTC).year
    return int(datetime(year + 2, 1, 1, tzinfo=UTC).timestamp() * 1000)


def _appended(
    frontier: merkle.Frontier, events: Sequence[OutboxEvent]
) -> tuple[merkle.Frontier, list[tuple[int, int, bytes]]]:
    nodes: list[tuple[int, int, bytes]] = []
    for item in events:
        frontier, completed = frontier.append(merkle.leaf_hash(item.event.leaf))
        nodes.extend(completed)
    return frontier, nodes
