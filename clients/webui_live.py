"""What the local web UI shows, kept current from the hub: channels, notes, unread counts.

:class:`Live` loads every readable channel once (all kept notes, opened here with the
agency's key), then follows the hub's subscription and hands each new note, opened,
to every open page as an event. The page only ever gets plaintext of notes this
agency may read, as JSON; private keys never leave this process.

Unread counts are the notes of other agencies after the agency's read position on
the hub (:meth:`~clients.sdk.HubClient.read_position`), which moves only when the
officer confirms reading on the page: each confirmation is a signed statement in the
audit log, so it is never sent just because a note was shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Final

from clients.errors import ClientError
from clients.sdk import HubClient
from clients.subscription import Delivery, Subscription
from keys import KeysError, peek_header_unverified
from keys.envelope import Header

log = logging.getLogger(__name__)

MAX_NOTES_KEPT: Final = 2000  # per channel, in memory; older ones drop off the page
PAGE_SIZE: Final = 100
QUEUE_SIZE: Final = 1000  # events a slow page may lag behind before it must reload
RETRY_S: Final = 2.0
LIVE_POLL_S: Final = 0.02

View = dict[str, Any]


def _key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


def _markings(header: Header) -> View:
    marks = header.markings
    return {
        "message_id": str(header.message_id),
        "sender": str(header.sender),
        "created": header.created,
        "classification": marks.classification.value,
        "handling": marks.handling.value,
        "tlp": marks.tlp.value,
        "source": marks.source.value if marks.source else None,
        "info": marks.info.value if marks.info else None,
    }


@dataclass
class Channel:
    """One channel as the page sees it."""

    name: str
    roles: list[str]
    ceiling: str = ""
    readers: list[str] = field(default_factory=list)
    notes: list[View] = field(default_factory=list)
    cursor: str = "0-0"
    position: str = "0-0"

    def unread(self, me: str) -> int:
        """Notes of other agencies after this agency's read position."""
        mark = _key(self.position)
        return sum(1 for n in self.notes if n["sender"] != me and _key(n["stream_id"]) > mark)

    def summary(self, me: str) -> View:
        """The channel list entry."""
        return {
            "channel": self.name,
            "roles": self.roles,
            "ceiling": self.ceiling,
            "readers": self.readers,
            "unread": self.unread(me),
            "position": self.position,
        }

    def add(self, view: View) -> bool:
        """Keep a note in stream order; False if it was already there."""
        if _key(view["stream_id"]) <= _key(self.cursor):
            return False
        self.cursor = view["stream_id"]
        self.notes.append(view)
        del self.notes[:-MAX_NOTES_KEPT]
        return True


class Live:
    """The channels of one agency, loaded from the hub and followed live."""

    def __init__(self, hub: HubClient) -> None:
        self.hub = hub
        self.me = str(hub.identity.agency)
        self.channels: dict[str, Channel] = {}
        self._pages: set[asyncio.Queue[View | None]] = set()
        #: Set once the hub's subscription is live (every channel replayed).
        self.following = asyncio.Event()

    # -- loading and following ------------------------------------------------------

    async def load(self) -> None:
        """Read the agency's channels, their rosters, kept notes and read positions."""
        for entry in await self.hub.channels():
            channel = Channel(entry["channel"], list(entry["roles"]))
            roster = await self.hub.roster(channel.name)
            channel.ceiling = roster.ceiling
            channel.readers = sorted(a for a, m in roster.members.items() if "read" in m.roles)
            if "read" in channel.roles:
                await self._load_notes(channel)
                channel.position = await self.hub.read_position(channel.name)
            self.channels[channel.name] = channel

    async def _load_notes(self, channel: Channel) -> None:
        while True:
            page = await self.hub.page_notes(channel.name, after=channel.cursor, limit=PAGE_SIZE)
            for delivery in page.notes:
                channel.add(await self.view(delivery))
            if len(page.notes) < PAGE_SIZE:
                return

    async def follow(self) -> None:
        """Follow the hub's subscription until cancelled; restart it after any error."""
        while True:
            cursors = {c.name: c.cursor for c in self.channels.values() if "read" in c.roles}
            if not cursors:
                self.following.set()
                return
            try:
                async with self.hub.subscribe(cursors) as subscription:
                    watcher = asyncio.create_task(self._mark_live(subscription))
                    try:
                        async for delivery in subscription:
                            self._arrived(await self.view(delivery))
                    finally:
                        watcher.cancel()
            except ClientError as exc:
                log.warning("subscription ended (%s); resuming", type(exc).__name__)
            await asyncio.sleep(RETRY_S)

    async def _mark_live(self, subscription: Subscription) -> None:
        """Set :attr:`following` once the hub has replayed every channel (then it is live)."""
        while not set(subscription.cursors) <= subscription.live:
            await asyncio.sleep(LIVE_POLL_S)
        self.following.set()

    def _arrived(self, view: View) -> None:
        channel = self.channels[view["channel"]]
        if channel.add(view):
            self.publish({"type": "note", "note": view, "unread": channel.unread(self.me)})

    async def view(self, delivery: Delivery) -> View:
        """A delivered note, verified and opened with the agency's key, for the page."""
        base = {"channel": delivery.channel, "stream_id": delivery.stream_id}
        try:
            header = peek_header_unverified(delivery.envelope)
        except KeysError:
            return {**base, "error": "not an envelope", "sender": "?", "mine": False}
        view = {**base, **_markings(header), "mine": str(header.sender) == self.me}
        try:
            note = (await self.hub.open(delivery)).note
        except ClientError as exc:
            # The page shows no text and marks the header (read unverified) as untrusted.
            return {**view, "error": f"cannot be opened or verified: {exc.detail}"}
        return {**view, "text": note.text, "subject": note.subject, "case_ref": note.case_ref}

    # -- actions from the page ------------------------------------------------------

    async def mark_read(self, name: str, stream_id: str) -> View:
        """Acknowledge (signed) reading ``name`` up to ``stream_id``; the new summary."""
        channel = self.channels[name]
        channel.position = await self.hub.ack(name, stream_id)
        summary = channel.summary(self.me)
        self.publish({"type": "channel", "channel": summary})
        return summary

    # -- pages listening ------------------------------------------------------------

    def listen(self) -> asyncio.Queue[View | None]:
        """A queue of events for one open page; ``None`` means: stop."""
        queue: asyncio.Queue[View | None] = asyncio.Queue(QUEUE_SIZE)
        self._pages.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[View | None]) -> None:
        """The page went away."""
        self._pages.discard(queue)

    def publish(self, event: View) -> None:
        """Hand ``event`` to every page; a page too far behind is told to reconnect."""
        for queue in list(self._pages):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._stop(queue)

    def stop_pages(self) -> None:
        """End every page's event stream (shutdown)."""
        for queue in list(self._pages):
            self._stop(queue)

    def _stop(self, queue: asyncio.Queue[View | None]) -> None:
        self._pages.discard(queue)
        with contextlib.suppress(asyncio.QueueEmpty):
            while queue.full():
                queue.get_nowait()
        queue.put_nowait(None)
