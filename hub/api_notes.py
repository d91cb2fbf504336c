"""/v1/channels/{channel}/notes: post sealed notes, page through them, acknowledge, receipts.

A post is accepted only when every rule of :func:`hub.policy.check_post` holds and the
envelope's signature verifies against the sender's current card; then it is appended
once per message id (a retry returns the first result). The roster version seen by the
checks is part of the append, so a membership change between check and append cannot
let a note through to the wrong readers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from hub import events, policy, wire
from hub.auth import CALLER, Caller
from hub.errors import (
    AboveCeiling,
    AgencySuspended,
    BadEnvelopeSignature,
    BadRequest,
    Forbidden,
    MalformedEnvelope,
    NotFound,
    NotMember,
    RecipientsMismatch,
    RosterChanged,
    SenderMismatch,
    TooLarge,
)
from hub.events import AuditEvent
from hub.reads import acknowledge
from hub.records import AgencyRecord, ChannelRecord, Role
from hub.state import AUDIT, DIRECTORY, SETTINGS, STORE
from hub.store import AppendResult
from keys import (
    Envelope,
    KeysError,
    LimitExceeded,
    MessageId,
    WrongKey,
    now_ms,
    verify_envelope,
)
from keys.statements import Receipt

routes = web.RouteTableDef()

ENVELOPE_TYPE: Final = "application/vnd.siko.envelope"
NOTES_ROUTE: Final = "/v1/channels/{channel}/notes"
MAX_STREAM_ID_PART: Final = 2**64 - 1
_STREAM_ID: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_LIMIT: Final = re.compile(r"[0-9]{1,6}")


def parse_stream_id(text: str, what: str = "cursor") -> str:
    """A Redis stream id ``<ms>-<seq>``, checked before it reaches Redis.

    ASCII digits only (``str.isdigit`` also accepts "²", which ``int`` refuses), and each
    part an unsigned 64-bit number, as Redis requires.
    """
    match = _STREAM_ID.fullmatch(text)
    if match is None or max(int(match[1]), int(match[2])) > MAX_STREAM_ID_PART:
        raise BadRequest(f"{what} must be a stream id like 1764100000000-0")
    return f"{int(match[1])}-{int(match[2])}"


def _page_limit(text: str, page_max: int) -> int:
    if _LIMIT.fullmatch(text) is None or not 1 <= int(text) <= page_max:
        raise BadRequest(f"limit must be 1-{page_max}")
    return int(text)


def _envelope_from(body: bytes, limit: int) -> Envelope:
    if len(body) > limit:
        raise TooLarge(f"envelope larger than this hub's limit of {limit} bytes")
    try:
        return Envelope.parse(body, max_bytes=limit)
    except LimitExceeded as exc:
        raise TooLarge(str(exc)) from None
    except KeysError as exc:
        raise MalformedEnvelope(str(exc)) from None


@dataclass(frozen=True)
class _NoteEvent:
    """A note's audit event and the digest naming the envelope."""

    audit: AuditEvent
    digest: bytes

    @property
    def digest_hex(self) -> str:
        return self.digest.hex()


async def _check_and_append(
    request: web.Request,
    caller: Caller,
    envelope: Envelope,
    body: bytes,
    event: _NoteEvent,
    channel: tuple[ChannelRecord, int],
) -> AppendResult:
    record, version = channel
    readers = await _readers(request, caller, sorted(record.readers()))
    reader_keys = {r.agency: r.current_key for r in readers}
    policy.check_post(record, caller.record, envelope.header, reader_keys)
    return await request.app[STORE].append_note(
        record,
        version,
        message_id=bytes(envelope.header.message_id),
        sender=caller.agency,
        digest_hex=event.digest_hex,
        envelope=body,
        now_ms=now_ms(),
        event=event.audit,
    )


async def _readers(request: web.Request, caller: Caller, names: list[str]) -> list[AgencyRecord]:
    """The readers' directory entries: as read with the caller's (:func:`prefetch_readers`)
    when that covered them all, else read now; fresh in this request either way."""
    if not all(name in caller.entries for name in names):
        return await request.app[DIRECTORY].agencies(names)
    readers = []
    for name in names:
        entry = caller.entries[name]
        if entry is None:
            raise NotFound(f"no agency {name} is registered")
        readers.append(entry)
    return readers


def prefetch_readers(request: web.Request) -> list[str]:
    """For a post: the readers of the channel as last read here, to be read with the caller.

    Authentication reads their directory entries in its own round trip (see
    :data:`hub.auth.PREFETCH`); if the roster has changed since, :func:`_readers` reads
    what is missing.
    """
    route = request.match_info.route.resource
    if request.method != "POST" or route is None or route.canonical != NOTES_ROUTE:
        return []
    known = request.app[STORE].known_channel(request.match_info["channel"])
    return [] if known is None else sorted(known[0].readers())


#: Refusals of the checks that a stale roster could cause: decided again on fresh records.
_ROSTER_REFUSALS: Final = (
    AboveCeiling,
    AgencySuspended,
    Forbidden,
    NotFound,
    NotMember,
    RecipientsMismatch,
    RosterChanged,
    SenderMismatch,
)


async def _append_once(
    request: web.Request, caller: Caller, envelope: Envelope, body: bytes, note: _NoteEvent
) -> AppendResult:
    """Store the note once; a retry gets the first result.

    The channel record as this hub last read it is tried first: the append script
    stores nothing unless the roster version is still the one checked (and answers a
    retry before looking at the version), so a stale record can only cause a refusal,
    and every refusal is decided again below on fresh records. Every reader's entry is
    read fresh in this request either way (a suspension counts at once): with the
    caller's during authentication (:func:`prefetch_readers`), else in one ``HMGET``.

    A retry is recognised before the roster checks: the roster may have changed since
    the note was stored, and the retry must still learn that it was (not be refused).
    Only the sender gets here (its signature on the envelope was checked). The retry
    look-up and the channel record come in one round trip.
    """
    store = request.app[STORE]
    channel = request.match_info["channel"]
    known = store.known_channel(channel)
    if known is not None:
        try:
            return await _check_and_append(request, caller, envelope, body, note, known)
        except RosterChanged:
            # The roster moved since this hub read it: check once more on fresh records.
            return await _fresh_check_and_append(request, caller, envelope, body, note, 1)
        except _ROSTER_REFUSALS:
            pass
    return await _fresh_check_and_append(request, caller, envelope, body, note, 2)


async def _fresh_check_and_append(
    request: web.Request,
    caller: Caller,
    envelope: Envelope,
    body: bytes,
    note: _NoteEvent,
    attempts: int,
) -> AppendResult:
    store = request.app[STORE]
    channel = request.match_info["channel"]
    message_id_hex = bytes(envelope.header.message_id).hex()
    context = await store.post_context(channel, message_id_hex, note.digest_hex)
    if isinstance(context, AppendResult):
        return context
    try:
        return await _check_and_append(request, caller, envelope, body, note, context)
    except RosterChanged:
        if attempts < 2:
            raise
        # The roster moved between check and append: check again against the new one.
        fresh = await store.get_channel(channel)
        return await _check_and_append(request, caller, envelope, body, note, fresh)


async def _receipt(
    request: web.Request, envelope: Envelope, note: _NoteEvent, result: AppendResult
) -> dict[str, object]:
    """The hub's signed receipt: the note is leaf ``index`` of the audit log."""
    audit = request.app[AUDIT]
    header = envelope.header
    index = await audit.settle_channel(str(header.channel), result.event_id)
    leaf = note.audit.leaf
    if result.duplicate:
        leaf = (await audit.leaves(index, index + 1))[0].leaf
    receipt = Receipt(header.channel, header.message_id, note.digest, index, leaf, now_ms())
    return {
        "index": index,
        "statement": receipt.statement(),
        "signature": audit.key.sign_receipt(receipt),
    }


@routes.post(NOTES_ROUTE)
async def post_note(request: web.Request) -> web.Response:
    """Accept a sealed note for the channel's readers."""
    caller = request[CALLER]
    if request.content_type != ENVELOPE_TYPE:
        raise BadRequest(f"send the sealed envelope as {ENVELOPE_TYPE}")
    body = await request.read()
    envelope = _envelope_from(body, request.app[SETTINGS].max_envelope_bytes)
    try:
        verify_envelope(envelope, caller.card)
    except WrongKey:
        raise SenderMismatch(
            f"envelope is from {envelope.header.sender}; seal with the caller's current key"
        ) from None
    except KeysError:
        raise BadEnvelopeSignature("the envelope is not exactly what its sender signed") from None
    digest = envelope.digest()
    note = _NoteEvent(events.note_accepted(envelope, digest, now_ms()), digest)
    result = await _append_once(request, caller, envelope, body, note)
    answer = {
        "channel": str(envelope.header.channel),
        "message_id": str(envelope.header.message_id),
        "stream_id": result.stream_id,
        "duplicate": result.duplicate,
        "receipt": await _receipt(request, envelope, note, result),
    }
    return wire.respond(request, answer, status=200 if result.duplicate else 201)


async def _channel_for(request: web.Request, role: Role) -> ChannelRecord:
    record, _ = await request.app[STORE].get_channel(request.match_info["channel"])
    policy.require_role(record, request[CALLER].record, role)
    return record


@routes.get("/v1/channels/{channel}/notes")
async def page_notes(request: web.Request) -> web.Response:
    """Notes after a cursor, oldest first; ``next`` is the cursor for the next page."""
    record = await _channel_for(request, Role.READ)
    after = parse_stream_id(request.query.get("after", "0-0"))
    limit = _page_limit(request.query.get("limit", "100"), request.app[SETTINGS].page_limit_max)
    notes = await request.app[STORE].read_after(str(record.channel), after, limit)
    return wire.respond(
        request,
        {
            "channel": str(record.channel),
            "notes": [{"id": n.stream_id, "envelope": n.envelope} for n in notes],
            "next": notes[-1].stream_id if notes else after,
        },
    )


@routes.post("/v1/channels/{channel}/reads")
async def post_read(request: web.Request) -> web.Response:
    """Acknowledge reading up to a stream id: moves the agency's read position."""
    record = await _channel_for(request, Role.READ)
    body = await wire.read_map(request)
    stream_id = parse_stream_id(wire.field(body, "id", str), "id")
    at, signature = wire.field(body, "at", int), wire.binary(body, "sig")
    caller = request[CALLER]
    channel = str(record.channel)
    position = await acknowledge(request.app, caller, channel, stream_id, at, signature)
    return wire.respond(request, {"channel": channel, "position": position})


@routes.get("/v1/channels/{channel}/notes/{message_id}/receipts")
async def get_receipts(request: web.Request) -> web.Response:
    """Which readers have read a note (their read position reached it)."""
    record, _ = await request.app[STORE].get_channel(request.match_info["channel"])
    caller = request[CALLER]
    if not record.roles_of(caller.agency):
        policy.require_role(record, caller.record, Role.READ)
    try:
        message_id = MessageId.from_hex(request.match_info["message_id"])
    except KeysError as exc:
        raise BadRequest(str(exc)) from None
    store = request.app[STORE]
    stream_id = await store.find_message(str(record.channel), str(message_id))
    if stream_id is None:
        raise web.HTTPNotFound
    positions = await store.read_positions(str(record.channel))
    read_by = sorted(a for a in record.readers() if _reached(positions.get(a), stream_id))
    return wire.respond(
        request,
        {
            "message_id": str(message_id),
            "stream_id": stream_id,
            "read_by": read_by,
            "unread_by": sorted(str(a) for a in record.readers() if a not in read_by),
        },
    )


def _reached(position: str | None, stream_id: str) -> bool:
    if position is None:
        return False

    def key(text: str) -> tuple[int, int]:
        ms, _, seq = text.partition("-")
        return int(ms), int(seq)

    return key(position) >= key(stream_id)
