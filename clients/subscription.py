"""Live notes as an async iterator that survives disconnects, restarts and failovers.

The subscription keeps one cursor per channel: the stream id of the last note it
yielded. Whenever the WebSocket ends (network drop, hub restart, the hub's "reconnect"
frame, Redis outage behind the hub) it reconnects with capped backoff, sending the
cursors, and the hub replays what came after them. A note is never yielded twice: ids
at or before a channel's cursor are skipped. An "unavailable" error frame is transient
and never ends the iteration; any other error frame (the agency lost the read role, was
suspended, replaced its key) is raised from ``__anext__``.

    async with hub.subscribe({"lage-ruhr": "0-0"}) as subscription:
        async for delivery in subscription:
            ...
            await subscription.ack(delivery)       # read receipt
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

import aiohttp
import msgpack

from clients.errors import (
    HubProblem,
    HubUnreachable,
    ProtocolError,
    Unavailable,
    class_for_type,
)
from clients.transport import Transport
from keys import now_ms
from keys.statements import ReadAck

MAX_BACKOFF_S: Final = 5.0
_ENDED: Final = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


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
        self.reconnects = 0
        #: "unavailable" error frames seen (an ack refused or a replay cut short while
        #: the hub's storage was away); the subscription carries on after each.
        self.unavailable = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._failures = 0
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        while not self._closed:
            ws = await self._connected()
            if ws is None:
                continue
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                delivery = self._handle(_frame(message.data))
                if delivery is not None:
                    return delivery
            elif message.type in _ENDED:
                await self._drop()
        raise StopAsyncIteration

    async def close(self) -> None:
        """Stop the subscription; iteration ends."""
        self._closed = True
        await self._drop()

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge (signed) reading up to ``delivery`` over the open socket."""
        if self._ws is None or self._ws.closed:
            raise HubUnreachable(detail="not connected; acknowledge with HubClient.ack")
        at = now_ms()
        _, signature = ReadAck.make(
            self._transport.identity, delivery.channel, delivery.stream_id, at
        )
        frame = {
            "t": "ack",
            "ch": delivery.channel,
            "id": delivery.stream_id,
            "at": at,
            "sig": signature,
        }
        await self._ws.send_bytes(msgpack.packb(frame, use_bin_type=True))

    async def _connected(self) -> aiohttp.ClientWebSocketResponse | None:
        if self._ws is not None and not self._ws.closed:
            return self._ws
        if self._failures:
            delay = min(MAX_BACKOFF_S, 0.05 * 2**self._failures)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        params = [("cursor", f"{ch}:{cursor}") for ch, cursor in self.cursors.items()]
        try:
            self._ws = await self._transport.open_websocket("/v1/subscribe", params=params)
        except (HubUnreachable, Unavailable):
            self._failures += 1
            return None
        self._failures = 0
        return self._ws

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            self.reconnects += 1
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await ws.close()
        if not self._closed:
            self._failures += 1

    def _handle(self, frame: dict[str, Any]) -> Delivery | None:
        kind = frame.get("t")
        if kind == "note":
            return self._note(frame)
        if kind == "live":
            self.live.add(str(frame.get("ch")))
        elif kind == "error":
            problem_type = str(frame.get("type", ""))
            error_class = class_for_type(problem_type) or HubProblem
            if issubclass(error_class, Unavailable):
                # Transient: Redis is away behind the hub. After a refused ack the socket
                # stays open; during a replay the hub closes it next, and the usual
                # reconnect with backoff resumes from the cursors.
                self.unavailable += 1
                return None
            raise error_class(detail=str(frame.get("detail", "")), problem_type=problem_type)
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
