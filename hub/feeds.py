"""Live fan-out: one Redis reader per channel and hub process, many local subscribers.

Theory of operation. A :class:`ChannelFeed` blocks on ``XREAD`` from the newest id it
has seen and hands every new note to each registered subscriber's queue. A subscriber
joins in three steps that leave no gap and no duplicate:

1. it registers its queue with the feed, and waits until the feed knows its starting
   id (the newest note at that moment), so every later note will be queued for it;
2. it replays from its own cursor with ``XRANGE`` until the stream is exhausted, which
   covers everything up to the feed's starting id and possibly beyond;
3. it drains its queue, skipping notes whose id is not after the last one it delivered.

If Redis goes away the feed keeps its position and retries with a capped backoff; when
Redis returns (with its append-only file) it continues after the last id it handed out.
A subscriber whose queue overflows is told to reconnect and resume from its cursor,
so a slow reader never makes the hub hold unbounded memory and never loses a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from hub.errors import Unavailable
from hub.store import Store, StoredNote

log = logging.getLogger(__name__)

BLOCK_MS: Final = 1000
BATCH: Final = 256
QUEUE_LIMIT: Final = 10_000
RETRY_CAP_S: Final = 2.0


class Overflow(Exception):
    """A subscriber fell too far behind; it must reconnect and resume from its cursor."""


class Subscriber:
    """One subscription's queue of live notes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StoredNote] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False

    def offer(self, note: StoredNote) -> None:
        """Queue a live note, or mark the subscriber as overflowed."""
        try:
            self.queue.put_nowait(note)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next(self) -> StoredNote:
        """The next live note; :class:`Overflow` when notes were dropped for it."""
        if self.overflowed:
            raise Overflow
        return await self.queue.get()

    async def next_batch(self, limit: int = BATCH) -> list[StoredNote]:
        """The next live note and up to ``limit - 1`` more already queued.

        Delivering a batch at a time lets the caller re-check the reader's access once
        per batch rather than once per note.
        """
        batch = [await self.next()]
        while len(batch) < limit and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        if self.overflowed:
            raise Overflow
        return batch


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

    async def close(self) -> None:
        """Stop reading.

        The flag stops the loop even if the cancellation lands inside a Redis call and is
        absorbed there; the loop then ends after its current read.
        """
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
        notes = await self._store.wait_after(
            self.channel, self._last_id, count=BATCH, block_ms=BLOCK_MS
        )
        for note in notes:
            for subscriber in tuple(self.subscribers):
                subscriber.offer(note)
            self._last_id = note.stream_id


class Feeds:
    """Every channel feed of this hub process."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._feeds: dict[str, ChannelFeed] = {}

    async def join(self, channel: str, subscriber: Subscriber) -> None:
        """Subscribe to live notes of ``channel``."""
        feed = self._feeds.get(channel)
        if feed is None:
            feed = self._feeds[channel] = ChannelFeed(self._store, channel)
        await feed.join(subscriber)

    def leave(self, channel: str, subscriber: Subscriber) -> None:
        """Unsubscribe; the feed keeps running for later subscribers."""
        feed = self._feeds.get(channel)
        if feed is not None:
            feed.leave(subscriber)

    async def close(self) -> None:
        """Stop every feed."""
        for feed in self._feeds.values():
            await feed.close()
        self._feeds.clear()
