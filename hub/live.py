"""/v1/subscribe: a WebSocket of notes, replayed from cursors, then live; and acks.

The upgrade request is signed like every other request (:mod:`hub.auth`). Its query
names each channel with the last stream id the client has: ``?cursor=<channel>:<id>``
(repeatable; ``0-0`` for everything kept). Frames are msgpack maps, both ways:

server -> client::

    {"t": "note", "ch": channel, "id": stream id, "env": envelope bytes}
    {"t": "live", "ch": channel}               replay done; what follows is live
    {"t": "acked", "ch": channel, "pos": id}   answer to an ack
    {"t": "error", "type": problem type, "detail": text}   then the socket closes
    {"t": "reconnect", "detail": text}         then the socket closes (code 1012)

client -> server::

    {"t": "ack", "ch": channel, "id": stream id, "at": ms, "sig": signature}

An ack is the agency's signed statement (:class:`keys.statements.ReadAck`) that it has
read the channel up to that id; the hub keeps it in the audit log as evidence.

Within one connection every channel's notes arrive in stream order, with no gap and
no duplicate (see :mod:`hub.feeds`); after any disconnect the client resumes from the
last id it received.

Access is checked at the upgrade and again before every batch of notes the socket
sends and before every ack: an agency that was suspended, lost the read role or
replaced the key it subscribed with gets an ``error`` frame naming why and the socket
closes, so a long subscription never outlives the right to read. A replay page or an
ack is re-checked by the socket (one Redis round trip); live notes are re-checked by the
channel's feed (:mod:`hub.feeds`) for all its subscribers at once, with the records read
in the same round trip as the notes, however many sockets it serves. While Redis is
away both wait (the socket stays open) and send nothing unchecked.

A subscription that would need this process to follow more channels live than its
limit (:data:`hub.feeds.MAX_FEEDS`) is refused at the upgrade with a 503
``too-many-live-channels`` and ``Retry-After``, before the socket opens.

Live note frames are encoded once per note by the feed, and the same bytes go to every
socket. Sockets are not compressed: envelopes are ciphertext, which does not compress,
and deflating each 13 KB frame once per socket would cost more than sending it.

A refused ack frame, and a subscription ended by the re-check, are logged in the audit
log as refused requests of ``GET /v1/subscribe``, as an HTTP refusal would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import msgpack
from aiohttp import WSMsgType, web

from hub import policy
from hub.api_notes import parse_stream_id
from hub.auth import CALLER, Caller
from hub.errors import BadRequest, HubError, Unavailable
from hub.feeds import (
    RETRY_CAP_S,
    Feeds,
    Overflow,
    Subscriber,
    access_verdicts,
    note_frame,
    refusal_of,
    stream_key,
)
from hub.metrics import METRICS
from hub.problems import REFUSAL_RECORDER
from hub.reads import acknowledge
from hub.records import Role
from hub.state import STORE

log = logging.getLogger(__name__)

FEEDS = web.AppKey("feeds", Feeds)


class OpenSockets:
    """The WebSockets this hub process has open, to close them on shutdown."""

    def __init__(self) -> None:
        self.all: set[web.WebSocketResponse] = set()


SOCKETS = web.AppKey("sockets", OpenSockets)
MAX_CHANNELS: Final = 64
REPLAY_PAGE: Final = 500
CLOSE_SERVICE_RESTART: Final = 1012

routes = web.RouteTableDef()


def _cursors(request: web.Request) -> dict[str, str]:
    values = request.query.getall("cursor", [])
    if not values or len(values) > MAX_CHANNELS:
        raise BadRequest(f"give 1-{MAX_CHANNELS} cursors as ?cursor=<channel>:<stream id>")
    cursors: dict[str, str] = {}
    for value in values:
        channel, colon, stream_id = value.partition(":")
        if not colon or channel in cursors:
            raise BadRequest("each cursor is <channel>:<stream id>, one per channel")
        cursors[channel] = parse_stream_id(stream_id)
    return cursors


async def _check_readable(request: web.Request, caller: Caller, channels: list[str]) -> None:
    for channel in channels:
        record, _ = await request.app[STORE].get_channel(channel)
        policy.require_role(record, caller.record, Role.READ)


async def _recheck(
    request: web.Request, caller: Caller, channel: str, *, wait: bool = True
) -> None:
    """Raise unless the caller, as it is now, may still read ``channel``.

    Fresh reads of the directory entry and the channel record (one round trip): the
    caller's entry in the request was read at the upgrade and may be stale by now. The
    same rules as the feed's check of live notes (:func:`hub.feeds.access_verdicts`).
    With ``wait``, waits while Redis is away (notes are held back meanwhile); without,
    raises :class:`Unavailable`.
    """
    store, delay = request.app[STORE], 0.05
    while True:
        try:
            rec, entries = await store.access_records(channel, [caller.agency])
        except Unavailable:
            if not wait:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP_S)
            continue
        verdict = access_verdicts(store, channel, rec, [caller.agency], entries)[caller.agency]
        refusal = refusal_of(verdict, str(caller.card.key_id))
        if refusal is not None:
            raise refusal
        return


async def _record_refusal(request: web.Request, error: HubError) -> None:
    """Log and count a refusal on the socket, as the HTTP middlewares would.

    The socket's request verified with a fresh nonce, so the refusal names its agency.
    """
    request.app[METRICS].refusals.labels(error.slug).inc()
    recorder = request.app.get(REFUSAL_RECORDER)
    if recorder is None or isinstance(error, Unavailable):
        return
    try:
        await recorder(request, error)
    except HubError as failure:
        log.warning("could not log a refusal on a subscription: %s", failure)


@routes.get("/v1/subscribe")
async def subscribe(request: web.Request) -> web.WebSocketResponse:
    """Stream notes of the requested channels to an authenticated reader."""
    caller = request[CALLER]
    cursors = _cursors(request)
    await _check_readable(request, caller, sorted(cursors))
    request.app[FEEDS].check_room(cursors)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024, compress=False)
    await ws.prepare(request)
    request.app[SOCKETS].all.add(ws)
    gauge = request.app[METRICS].subscribers
    gauge.inc()
    lock = asyncio.Lock()
    tasks = [
        asyncio.create_task(_deliver(request, ws, lock, caller, channel, after))
        for channel, after in cursors.items()
    ]
    try:
        await _receive_acks(request, ws, lock, caller, set(cursors))
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        request.app[SOCKETS].all.discard(ws)
        gauge.dec()
    return ws


async def _send(ws: web.WebSocketResponse, lock: asyncio.Lock, frame: dict[str, Any]) -> None:
    async with lock:
        await ws.send_bytes(msgpack.packb(frame, use_bin_type=True))


async def _deliver(
    request: web.Request,
    ws: web.WebSocketResponse,
    lock: asyncio.Lock,
    caller: Caller,
    channel: str,
    after: str,
) -> None:
    feeds = request.app[FEEDS]
    subscriber = Subscriber(caller.agency, str(caller.card.key_id))
    try:
        # inside the try: join registers first and then waits for the feed to start,
        # and a socket that ends meanwhile must not leave its subscriber behind
        await feeds.join(channel, subscriber)
        last = stream_key(await _replay(request, ws, lock, caller, channel, after))
        await _send(ws, lock, {"t": "live", "ch": channel})
        while True:
            # the feed re-checked the caller's access before it queued these notes, and
            # encoded each frame once for all its subscribers
            notes = [n for n in await subscriber.next_batch() if n.key > last]
            if not notes:
                continue
            async with lock:
                for note in notes:
                    await ws.send_bytes(note.frame)
            last = notes[-1].key
    except Overflow:
        await _close(ws, lock, "you fell behind; reconnect and resume from your cursor")
    except HubError as error:
        await _record_refusal(request, error)  # first: logged before the caller learns of it
        await _send(ws, lock, {"t": "error", "type": error.problem_type(), "detail": error.detail})
        await ws.close()
    finally:
        feeds.leave(channel, subscriber)


async def _replay(
    request: web.Request,
    ws: web.WebSocketResponse,
    lock: asyncio.Lock,
    caller: Caller,
    channel: str,
    after: str,
) -> str:
    store = request.app[STORE]
    while True:
        notes = await store.read_after(channel, after, REPLAY_PAGE)
        if notes:
            await _recheck(request, caller, channel)
        async with lock:
            for note in notes:
                await ws.send_bytes(note_frame(channel, note))
        if notes:
            after = notes[-1].stream_id
        if len(notes) < REPLAY_PAGE:
            return after


async def _receive_acks(
    request: web.Request,
    ws: web.WebSocketResponse,
    lock: asyncio.Lock,
    caller: Caller,
    channels: set[str],
) -> None:
    async for message in ws:
        if message.type is not WSMsgType.BINARY:
            continue
        try:
            channel, stream_id, at, signature = _parse_ack(message.data, channels)
            await _recheck(request, caller, channel, wait=False)
            position = await acknowledge(request.app, caller, channel, stream_id, at, signature)
        except HubError as error:
            await _record_refusal(request, error)
            frame = {"t": "error", "type": error.problem_type(), "detail": error.detail}
            await _send(ws, lock, frame)
            continue
        await _send(ws, lock, {"t": "acked", "ch": channel, "pos": position})


def _parse_ack(data: bytes, channels: set[str]) -> tuple[str, str, int, bytes]:
    try:
        frame = msgpack.unpackb(data, raw=False, max_str_len=256, max_bin_len=64, max_array_len=0)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise BadRequest("frames must be msgpack maps") from None
    if not isinstance(frame, dict) or frame.get("t") != "ack":
        raise BadRequest('the only client frame is {"t": "ack", "ch", "id", "at", "sig"}')
    channel, stream_id = frame.get("ch"), frame.get("id")
    at, signature = frame.get("at"), frame.get("sig")
    if not isinstance(channel, str) or channel not in channels or not isinstance(stream_id, str):
        raise BadRequest("ack a channel of this subscription with a stream id")
    if type(at) is not int or not isinstance(signature, bytes):
        raise BadRequest("an ack carries its time 'at' (ms) and the agency's signature 'sig'")
    return channel, parse_stream_id(stream_id, "id"), at, signature


async def _close(ws: web.WebSocketResponse, lock: asyncio.Lock, detail: str) -> None:
    with contextlib.suppress(ConnectionError):
        await _send(ws, lock, {"t": "reconnect", "detail": detail})
    await ws.close(code=CLOSE_SERVICE_RESTART, message=b"reconnect")


async def close_all(app: web.Application, detail: str) -> None:
    """Tell every subscriber to reconnect elsewhere, and close its socket."""
    for ws in tuple(app[SOCKETS].all):
        await _close(ws, asyncio.Lock(), detail)
