"""Read acknowledgements: an agency's signed statement that it read a channel up to a note.

The same rule serves the HTTP route and the WebSocket frame: the statement is rebuilt
from what the hub knows (the caller, its current key, the channel) plus the position and
time the client sent, its signature is checked with the caller's card, and only then
does the read position move, together with its audit event, in one Lua script. The
log then holds the agency's own signature: evidence that does not depend on the hub.
"""

from __future__ import annotations

from aiohttp import web

from hub import events
from hub.auth import Caller
from hub.errors import BadRequest, StaleRequest, Unauthenticated
from hub.state import AUDIT, SETTINGS, STORE
from keys import KeysError, MalformedInput, now_ms
from keys.ids import ChannelId
from keys.statements import ReadAck


async def acknowledge(
    app: web.Application, caller: Caller, channel: str, position: str, at: int, signature: bytes
) -> str:
    """Move ``caller``'s read position in ``channel`` to ``position``; the new position."""
    try:
        ack = ReadAck(caller.record.agency, caller.card.key_id, ChannelId(channel), position, at)
    except MalformedInput as exc:
        raise BadRequest(f"acknowledgement: {exc}") from None
    now = now_ms()
    skew_ms = app[SETTINGS].clock_skew_s * 1000
    if abs(now - at) > skew_ms:
        raise StaleRequest("the acknowledgement's time is too far from now; check the clock")
    try:
        ack.verify(signature, caller.card.sign_key)
    except KeysError:
        raise Unauthenticated(
            "the acknowledgement's signature does not verify; sign it with the current key"
        ) from None
    event = events.note_acknowledged(ack, signature, now)
    moved_to, event_id = await app[STORE].advance_read(channel, caller.agency, position, event)
    if event_id is not None:
        await app[AUDIT].settle_channel(channel, event_id)
    return moved_to
