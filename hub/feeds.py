"""Live fan-out: one Redis reader per channel and hub process, many local subscribers.

Theory of operation. A :class:`ChannelFeed` blocks on ``XREAD`` from the newest id it
has seen. For every batch it reads it does the per-note and per-reader work once, for
all of its subscribers: it encodes each note's WebSocket frame once (every subscriber
is sent the same bytes), and it re-checks every subscriber's right to read against the
channel record and the directory entries of the subscribed agencies, which Redis reads
right after the notes, in the same round trip (pipelined behind the blocking read). It
then queues the batch for each subscriber that may still read, and the refusal for
each that may not. A subscriber joins in three steps that leave no gap and
no duplicate:

1. it registers with the feed, and waits until the feed knows its starting id (the
   newest note at that moment), so every later note will be queued for it;
2. it replays from its own cursor with ``XRANGE`` until the stream is exhausted, which
   covers everything up to the feed's starting id and possibly beyond (also every note
   the feed read but had not yet handed out when the subscriber registered);
3. it drains its queue, skipping notes whose id is not after the last one it delivered.

A feed runs while its channel has subscribers in this process and stops when the last
one leaves. Each running feed holds at most one pooled Redis connection (while it waits
in ``XREAD``), so a process follows at most :data:`MAX_FEEDS` channels live: the rest of
the store's pool stays free for requests, and a subscription that would need one more
feed is refused (:class:`~hub.errors.TooManyLiveChannels`, 503, retry later) instead of
starving every post of a connection.

If Redis goes away the feed keeps its position and retries with a capped backoff; when
Redis returns (with its append-only file) it continues after the last id it handed out.
A batch is handed out only after its access check succeeded, so while Redis is away
notes are held back rather than sent unchecked. A subscriber whose queue overflows is
told to reconnect and resume from its cursor, so a slow reader never makes the hub hold
unbounded memory and never loses a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import msgpack

from hub import policy
from hub.directory import DamagedRecord
from hub.errors import HubError, NotFound, TooManyLiveChannels, Unauthenticated, Unavailable
from hub.records import AgencyRecord, Role
from hub.store import MAX_POOL_CONNECTIONS, Store, StoredNote
from keys import KeysError

log = logging.getLogger(__name__)

BLOCK_MS: Final = 1000
BATCH: Final = 256
QUEUE_LIMIT: Final = 10_000
RETRY_CAP_S: Final = 2.0
#: Channels one hub process follows live at most: half the store's pool, so requests
#: always find connections.
MAX_FEEDS: Final = MAX_POOL_CONNECTIONS // 2


class Overflow(Exception):
    """A subscriber fell too far behind; it must reconnect and resume from its cursor."""


def stream_key(stream_id: str) -> tuple[int, int]:
    """A stream id as a tuple that sorts as Redis orders the ids."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


def note_frame(channel: str, note: StoredNote) -> bytes:
    """The ``note`` frame of the subscription protocol (:mod:`hub.live`), encoded."""
    frame = {"t": "note", "ch": channel, "id": note.stream_id, "env": note.envelope}
    data: bytes = msgpack.packb(frame, use_bin_type=True)
    return data


@dataclass(frozen=True, slots=True)
class LiveNote:
    """A note as the feed hands it out: its id, sortable, and its frame, encoded once."""

    stream_id: str
    key: tuple[int, int]
    frame: bytes


class Subscriber:
    """One subscription's queue of live notes, and who it reads as.

    ``agency`` and ``key_id`` are the agency and the key the socket was opened with; the
    feed checks them against fresh records before it queues each batch. At most
    ``limit`` notes wait in the queue; one more and the subscriber has overflowed.
    """

    def __init__(self, agency: str, key_id: str, *, limit: int = QUEUE_LIMIT) -> None:
        self.agency = agency
        self.key_id = key_id
        self.limit = limit
        self._batches: deque[tuple[LiveNote, ...]] = deque()
        self._held = 0
        self._ready = asyncio.Event()
        self.overflowed = False
        self.refusal: HubError | None = None

    @property
    def queued(self) -> int:
        """How many notes wait in the queue."""
        return self._held

    def offer(self, notes: tuple[LiveNote, ...]) -> None:
        """Queue a batch of live notes, or mark the subscriber as overflowed."""
        if self.overflowed or self.refusal is not None:
            return
        if self._held + len(notes) > self.limit:
            self.overflowed = True
            self._drop()
        else:
            self._batches.append(notes)
            self._held += len(notes)
        self._ready.set()

    def refuse(self, error: HubError) -> None:
        """End the subscription with ``error``; notes queued but not yet taken are dropped.

        They were checked when the feed read them, but the agency may no longer read
        now, and nothing more is sent after a refusal is known.
        """
        if self.refusal is None:
            self.refusal = error
            self._drop()
            self._ready.set()

    def _drop(self) -> None:
        self._batches.clear()
        self._held = 0

    async def next_batch(self) -> list[LiveNote]:
        """Every live note queued so far, oldest first, waiting for at least one.

        Raises :class:`Overflow` when notes were dropped for this subscriber, and the
        refusal when the feed found that it may no longer read.
        """
        while True:
            if self.refusal is not None:
                raise self.refusal
            if self.overflowed:
                raise Overflow
            if self._batches:
                batch = [note for notes in self._batches for note in notes]
                self._drop()
                return batch
            self._ready.clear()
            await self._ready.wait()


class ChannelFeed:
    """Reads one channel's stream and fans new notes out to subscribers."""

    def __init__(self, store: Store, channel: str) -> None:
        self._store = store
        self.channel = channel
        self.subscribers: set[Subscriber] = set()
        self._started = asyncio.Event()
        self._last_id = "0-0"
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def join(self, subscriber: Subscriber) -> None:
        """Register ``subscriber``; returns once every later note will reach it."""
        self.subscribers.add(subscriber)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"feed:{self.channel}")
        await self._started.wait()

    def leave(self, subscriber: Subscriber) -> None:
        """Unregister ``subscriber``."""
        self.subscribers.discard(subscriber)

    def stop(self) -> asyncio.Task[None] | None:
        """Stop reading; the task that is ending, to be awaited by whoever cares.

        The flag stops the loop even if the cancellation lands inside a Redis call and is
        absorbed there; the loop then ends after its current read.
        """
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        return self._task

    async def close(self) -> None:
        """Stop reading, and wait until the loop has ended."""
        task = self.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                if not self._started.is_set():
                    self._last_id = await self._store.newest_id(self.channel)
                    self._started.set()
                await self._pump()
                delay = 0.05
            except Unavailable:
                log.warning("feed %s: storage unavailable; retrying", self.channel)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP_S)

    async def _pump(self) -> None:
        """Read one batch, check every subscriber, hand the batch out.

        The access records of the agencies subscribed when the read starts come in the
        same round trip as the notes (read after them); an agency that subscribed during
        the read costs one more round trip. ``_last_id`` moves only after the batch was
        handed out: if a read fails, the next round reads the same notes again.
        """
        agencies = sorted({s.agency for s in self.subscribers})
        notes, rec, entries = await self._store.wait_after_with_access(
            self.channel, self._last_id, agencies, count=BATCH, block_ms=BLOCK_MS
        )
        if not notes:
            return
        # who is registered now; a subscriber that registers later replays these notes
        subscribers = tuple(self.subscribers)
        if subscribers:
            verdicts = access_verdicts(self._store, self.channel, rec, agencies, entries)
            late = sorted({s.agency for s in subscribers} - verdicts.keys())
            if late:
                rec, entries = await self._store.access_records(self.channel, late)
                verdicts.update(access_verdicts(self._store, self.channel, rec, late, entries))
            batch = tuple(
                LiveNote(n.stream_id, stream_key(n.stream_id), note_frame(self.channel, n))
                for n in notes
            )
            for subscriber in subscribers:
                refusal = refusal_of(verdicts[subscriber.agency], subscriber.key_id)
                if refusal is None:
                    subscriber.offer(batch)
                else:
                    subscriber.refuse(refusal)
        self._last_id = notes[-1].stream_id


def access_verdicts(
    store: Store,
    channel_id: str,
    rec: bytes | None,
    agencies: list[str],
    entries: list[bytes | None],
) -> dict[str, HubError | str]:
    """For each agency, why it may not read ``channel_id`` now, or else its current key id.

    ``rec`` and ``entries`` are what :meth:`Store.access_records` read for ``agencies``,
    fresh; the store parses them (and remembers the parse of the same bytes: a feed
    checks the same records for every batch it reads).
    """
    if rec is None:
        return dict.fromkeys(agencies, NotFound(f"no channel {channel_id}"))
    try:
        channel = store.parse_channel(rec)
    except KeysError:
        damaged = DamagedRecord(f"the record of channel {channel_id} does not parse")
        return dict.fromkeys(agencies, damaged)
    verdicts: dict[str, HubError | str] = {}
    for agency, entry in zip(agencies, entries, strict=True):
        try:
            record = _agency(store, agency, entry)
            policy.require_role(channel, record, Role.READ)
        except HubError as refusal:
            verdicts[agency] = refusal
        else:
            verdicts[agency] = str(record.current_key)
    return verdicts


def refusal_of(verdict: HubError | str, key_id: str) -> HubError | None:
    """Why a reader subscribed with ``key_id`` must stop, given its agency's verdict."""
    if isinstance(verdict, HubError):
        return verdict
    if verdict != key_id:
        return Unauthenticated(
            "the key this subscription was opened with has been replaced; "
            "subscribe again with the current key"
        )
    return None


def _agency(store: Store, agency: str, entry: bytes | None) -> AgencyRecord:
    if entry is None:
        raise NotFound(f"no agency {agency} is registered")
    try:
        return store.parse_agency(entry)
    except KeysError:
        raise DamagedRecord(f"the directory entry of {agency} does not parse") from None


class Feeds:
    """Every channel feed of this hub process: one per channel that has subscribers here."""

    def __init__(self, store: Store, *, limit: int = MAX_FEEDS) -> None:
        self._store = store
        self.limit = limit
        self._feeds: dict[str, ChannelFeed] = {}
        self._ending: set[asyncio.Task[None]] = set()

    @property
    def following(self) -> frozenset[str]:
        """The channels this process reads live now."""
        return frozenset(self._feeds)

    def check_room(self, channels: Iterable[str]) -> None:
        """Raise :class:`TooManyLiveChannels` unless feeds for ``channels`` would fit.

        Asked before a WebSocket is accepted, so that a subscription that cannot be
        served is refused with a 503 rather than opened and closed at once; :meth:`join`
        enforces the limit itself.
        """
        wanted = len(set(channels) - self._feeds.keys())
        if len(self._feeds) + wanted > self.limit:
            raise TooManyLiveChannels(
                f"this hub process follows {self.limit} channels live, its limit; retry "
                "shortly (another process of the hub may have room) or subscribe to fewer",
                retry_after=1,
            )

    async def join(self, channel: str, subscriber: Subscriber) -> None:
        """Subscribe to live notes of ``channel``; its feed starts if it is not running."""
        feed = self._feeds.get(channel)
        if feed is None:
            self.check_room((channel,))
            feed = self._feeds[channel] = ChannelFeed(self._store, channel)
        await feed.join(subscriber)

    def leave(self, channel: str, subscriber: Subscriber) -> None:
        """Unsubscribe; the feed stops with its last subscriber, freeing its connection.

        The feed is forgotten at once, so a later subscriber starts a fresh one (from the
        newest note then, replaying the rest from its own cursor); the old one's task
        ends in the background and :meth:`close` waits for it.
        """
        feed = self._feeds.get(channel)
        if feed is None:
            return
        feed.leave(subscriber)
        if not feed.subscribers:
            del self._feeds[channel]
            task = feed.stop()
            if task is not None and not task.done():
                self._ending.add(task)
                task.add_done_callback(self._ending.discard)

    async def close(self) -> None:
        """Stop every feed, and wait for every feed that is still ending."""
        for feed in self._feeds.values():
            await feed.close()
        self._feeds.clear()
        for task in tuple(self._ending):
            with contextlib.suppress(asyncio.CancelledError):
                await task
