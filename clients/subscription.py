"""Live notes as an async iterator that survives disconnects, restarts and failovers.

The subscription keeps one cursor per channel: the stream id of the last note it
yielded. Whenever the WebSocket ends (network drop, hub restart, the hub's "reconnect"
frame, Redis outage behind the hub) it reconnects with capped backoff, sending the
cursors, and the hub replays what came after them. A note is never yielded twice: ids
at or before a channel's cursor are skipped.

    async for delivery in hub.subscribe({"lage-ruhr": "0-0"}):
        ...
        await subscription.ack(delivery)       # read receipt
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import msgpack

from clients.errors import ClientError, HubProblem, HubUnreachable, ProtocolError, Unavailable
from clients.transport import Transport

MAX_BACKOFF_S: Final = 5.0


@dataclass(frozen=True)
class Delivery:
    """One note as delivered: its channel, stream id and sealed envelope."""

    channel: str
    stream_id: str
    envelope: bytes


def _key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


class Subscription:
    """Async iterator of :class:`Delivery`; see the module docstring."""

    def __init__(self, transport: Transport, cursors: Mapping[str, str]) -> None:
        if not cursors:
            raise ValueError("subscribe to at least one channel")
        self._transport = transport
        self.cursors = dict(cursors)
        self.live: set[str] = set()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closed = False

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._run()

    async def close(self) -> None:
        """Stop the subscription."""
        self._closed = True
        if self._ws is not None:
            await self._ws.close()

    def _stopped(self) -> bool:
        return self._closed

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge reading up to ``delivery`` (sent over the open socket)."""
        if self._ws is None or self._ws.closed:
            raise HubUnreachable(detail="not connected; acknowledge with HubClient.ack")
        frame = {"t": "ack", "ch": delivery.channel, "id": delivery.stream_id}
        await self._ws.send_bytes(msgpack.packb(frame, use_bin_type=True))

    async def _run(self) -> AsyncIterator[Delivery]:
        failures = 0
        while True:
            try:
                async for delivery in self._connection():
                    failures = 0
                    yield delivery
            except (HubUnreachable, Unavailable, ConnectionError):
                pass
            if self._stopped():
                return
            failures += 1
            await asyncio.sleep(min(MAX_BACKOFF_S, 0.05 * 2**failures) * random.uniform(0.5, 1))

    async def _connection(self) -> AsyncIterator[Delivery]:
        params = [("cursor", f"{ch}:{cursor}") for ch, cursor in self.cursors.items()]
        async with self._transport.websocket("/v1/subscribe", params=params) as ws:
            self._ws = ws
            try:
                async for message in ws:
                    if message.type is not aiohttp.WSMsgType.BINARY:
                        continue
                    delivery = self._handle(_frame(message.data))
                    if delivery is not None:
                        yield delivery
            finally:
                self._ws = None

    def _handle(self, frame: dict[str, Any]) -> Delivery | None:
        kind = frame.get("t")
        if kind == "note":
            return self._note(frame)
        if kind == "live":
            self.live.add(str(frame.get("ch")))
        elif kind == "error":
            raise HubProblem(detail=str(frame.get("detail", "")), problem_type=frame.get("type"))
        return None

    def _note(self, frame: dict[str, Any]) -> Delivery | None:
        channel, stream_id, envelope = frame.get("ch"), frame.get("id"), frame.get("env")
        if channel not in self.cursors or not isinstance(stream_id, str):
            raise ProtocolError(detail="the hub sent a note for a channel not subscribed")
        if not isinstance(envelope, bytes):
            raise ProtocolError(detail="the hub sent a note without an envelope")
        if _key(stream_id) <= _key(self.cursors[channel]):
            return None  # already yielded before a reconnect
        self.cursors[channel] = stream_id
        return Delivery(channel, stream_id, envelope)


def _frame(data: bytes) -> dict[str, Any]:
    with contextlib.suppress(ValueError, TypeError, msgpack.UnpackException):
        frame = msgpack.unpackb(data, raw=False, max_bin_len=16 * 1024 * 1024)
        if isinstance(frame, dict):
            return frame
    raise ProtocolError(detail="the hub sent a frame that is not a msgpack map")


__all__ = ["ClientError", "Delivery", "Subscription"]
