"""/v1/channels/{channel}/notes, /reads, /receipts and /v1/subscribe: every refusal.

The world: police and city office post and read in ``lage-ruhr``, the prosecutor reads;
``stadt-bochum`` is registered but no member. Each refusal asserts status, problem type,
detail, and (via :func:`nothing_written`) that Redis did not change; every request here
is correctly signed, so each leaves exactly its own nonce (see test_refusals.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import redis

from clients import errors as sdk
from clients.sdk import HubClient
from hub.state import STORE
from hub.store import Store
from keys import (
    Classification,
    Envelope,
    Identity,
    Markings,
    MessageId,
    Note,
    Suite,
    codec,
    now_ms,
)
from keys.statements import ReadAck
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    CITY,
    POLICE,
    PROSECUTOR,
    RunningHub,
    hub_settings,
    identity,
    make_world,
    start_hub,
)
from tests.hub.test_refusals import (
    ENVELOPE,
    MARKS,
    NOTES_PATH,
    SECRET_TEXT,
    assert_problem,
    assert_sdk_problem,
    http_session,
    nothing_written,
    sealed,
    signed,
)

_http = pytest.fixture(http_session, name="http")

MSGPACK = "application/msgpack"
READS_PATH = f"/v1/channels/{CHANNEL}/reads"


OUTSIDER = "stadt-bochum"
NOTES_KEY = f"siko:{{ch:{CHANNEL}}}:notes"


@pytest.fixture
async def outsider(world: RunningHub) -> HubClient:
    """A registered agency that is no member of lage-ruhr."""
    admin = await world.client(ADMIN)
    await admin.register_agency(identity(OUTSIDER).card)
    return await world.client(OUTSIDER)


async def post_one(world: RunningHub, text: str = "erste Notiz") -> str:
    police = await world.client(POLICE)
    return (await police.post_note(CHANNEL, Note(text), MARKS)).stream_id


def altered(envelope: bytes, **fields: Any) -> bytes:
    """``envelope`` with outer fields replaced, re-encoded canonically (so it parses)."""
    outer = codec.decode(envelope, max_bytes=len(envelope), max_depth=2)
    assert isinstance(outer, dict)
    return codec.encode({**outer, **fields})


def ack_frame(signer: str, channel: str, position: str, *, at: int | None = None) -> dict[str, Any]:
    """An ack frame for the WebSocket, signed by ``signer`` (not necessarily the caller)."""
    when = now_ms() if at is None else at
    _, sig = ReadAck.make(identity(signer), channel, position, when)
    return {"t": "ack", "ch": channel, "id": position, "at": when, "sig": sig}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def flip(data: bytes, at: int = -1) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x01
    return bytes(changed)


# -- posting: the happy path, and idempotency --------------------------------------------


async def test_a_post_is_stored_once_and_a_retry_answers_200_duplicate(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    envelope = sealed()
    first = await police.post_envelope(CHANNEL, envelope)
    with nothing_written(redis_db, nonces=1, refusals=0):
        again = await police.post_envelope(CHANNEL, envelope)
    assert again.duplicate and (again.stream_id, again.message_id) == (
        first.stream_id,
        first.message_id,
    )
    # The same leaf of the audit log, receipted afresh.
    assert (again.receipt.index, again.receipt.leaf) == (first.receipt.index, first.receipt.leaf)
    assert redis_db.xlen(NOTES_KEY) == 1


async def test_same_message_id_with_another_envelope_is_an_idempotency_conflict(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    mid = MessageId.new()
    await police.post_envelope(CHANNEL, sealed(message_id=mid))
    other = sealed(message_id=mid, text="eine andere Notiz")
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.IdempotencyConflict) as excinfo:
        await police.post_envelope(CHANNEL, other)
    assert_sdk_problem(excinfo, 409, "idempotency-conflict", "message id")
    assert redis_db.xlen(NOTES_KEY) == 1


async def test_same_message_id_from_another_sender_is_an_idempotency_conflict(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    mid = MessageId.new()
    await (await world.client(POLICE)).post_envelope(CHANNEL, sealed(message_id=mid))
    city = await world.client(CITY)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.IdempotencyConflict) as excinfo:
        await city.post_envelope(CHANNEL, sealed(CITY, message_id=mid))
    assert_sdk_problem(excinfo, 409, "idempotency-conflict", "message id")


async def test_a_retry_after_a_roster_change_still_answers_duplicate(
    world: RunningHub, outsider: HubClient, redis_db: redis.Redis
) -> None:
    # The note was stored, its answer lost, and the roster changed before the retry: the
    # retry must still learn that the note is stored (the first result), not be checked
    # against the new roster and refused.
    police = await world.client(POLICE)
    envelope = sealed()
    first = await police.post_envelope(CHANNEL, envelope)
    admin = await world.client(ADMIN)
    await admin.set_member(CHANNEL, OUTSIDER, {"read"})
    again = await police.post_envelope(CHANNEL, envelope)
    assert again.duplicate and again.stream_id == first.stream_id


async def test_a_roster_change_between_check_and_append_is_checked_again_then_refused(
    world: RunningHub, redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = world.app[STORE]
    real_append = Store.append_note
    calls: list[int] = []

    async def roster_always_moved(self: Store, channel: Any, version: int, **kw: Any) -> Any:
        calls.append(version)
        return await real_append(self, channel, version - 1, **kw)  # as if it moved since

    monkeypatch.setattr(store, "append_note", roster_always_moved.__get__(store))
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.RosterChanged) as excinfo:
        await police.post_envelope(CHANNEL, sealed())
    assert_sdk_problem(excinfo, 409, "roster-changed", CHANNEL, "seal again")
    assert len(calls) == 2, "the hub checks once more against the new roster"


async def test_a_member_removed_after_posting_is_refused_at_once(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    # The hub has just read the channel for a post; the roster changes; the next post
    # must be refused on the new roster, with nothing written.
    police = await world.client(POLICE)
    await police.post_envelope(CHANNEL, sealed())
    await (await world.client(ADMIN)).set_member(CHANNEL, POLICE, {"read"})
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotMember) as excinfo:
        await police.post_envelope(CHANNEL, sealed())
    assert_sdk_problem(excinfo, 403, "not-member", POLICE, "post", CHANNEL)


async def test_a_reader_removed_after_a_post_is_no_recipient_of_the_next(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    await police.post_envelope(CHANNEL, sealed())
    await (await world.client(ADMIN)).set_member(CHANNEL, PROSECUTOR, set())
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.RecipientsMismatch) as excinfo:
        await police.post_envelope(CHANNEL, sealed())
    assert_sdk_problem(excinfo, 422, "recipients-mismatch", f"not readers: {PROSECUTOR}")
    stored = await police.post_envelope(CHANNEL, sealed(readers=(POLICE, CITY)))
    assert not stored.duplicate


# -- posting: who may post ---------------------------------------------------------------


async def test_a_reader_without_post_role_may_not_post(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    prosecutor = await world.client(PROSECUTOR)
    # Nonces: the roster, the log key, one card proof per reader (3), the post.
    with nothing_written(redis_db, nonces=6), pytest.raises(sdk.NotMember) as excinfo:
        await prosecutor.post_note(CHANNEL, Note(SECRET_TEXT), MARKS)
    assert_sdk_problem(excinfo, 403, "not-member", PROSECUTOR, "post", CHANNEL)


async def test_a_non_member_may_not_post(
    world: RunningHub, outsider: HubClient, redis_db: redis.Redis
) -> None:
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotMember) as excinfo:
        await outsider.post_envelope(CHANNEL, sealed(OUTSIDER))
    assert_sdk_problem(excinfo, 403, "not-member", OUTSIDER, "post")


async def test_a_non_member_sees_no_roster_to_seal_for(
    world: RunningHub, outsider: HubClient, redis_db: redis.Redis
) -> None:
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotFound) as excinfo:
        await outsider.post_note(CHANNEL, Note(SECRET_TEXT), MARKS)
    assert_sdk_problem(excinfo, 404, "not-found", CHANNEL)


# -- posting: the envelope ---------------------------------------------------------------


async def test_an_envelope_of_another_sender_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.SenderMismatch) as excinfo:
        await police.post_envelope(CHANNEL, sealed(CITY))
    assert_sdk_problem(excinfo, 403, "sender-mismatch", CITY)


async def test_an_envelope_sealed_with_the_senders_old_key_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    old_envelope = sealed(POLICE)
    rotated = Identity.generate(POLICE, suite=Suite.X25519)
    await (await world.client(ADMIN)).add_card(POLICE, rotated.card)
    async with HubClient(world.base_url, rotated) as police:
        with nothing_written(redis_db, nonces=1), pytest.raises(sdk.SenderMismatch) as excinfo:
            await police.post_envelope(CHANNEL, old_envelope)
    assert_sdk_problem(excinfo, 403, "sender-mismatch", POLICE, "current key")


async def test_an_envelope_sealed_for_another_channel_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    # Refused as sender-mismatch by hub/policy.py (the type says "sender", the detail
    # names both channels).
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.SenderMismatch) as excinfo:
        await police.post_envelope(CHANNEL, sealed(channel="andere-lage"))
    assert_sdk_problem(excinfo, 403, "sender-mismatch", "andere-lage", CHANNEL)


async def test_an_envelope_for_an_unknown_channel_is_not_found(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotFound) as excinfo:
        await police.post_envelope("gibt-es-nicht", sealed(channel="gibt-es-nicht"))
    assert_sdk_problem(excinfo, 404, "not-found", "gibt-es-nicht")


def _bad_signature(envelope: bytes) -> bytes:
    return altered(envelope, sig=b"\x00" * 64)


def _flipped_signature(envelope: bytes) -> bytes:
    return altered(envelope, sig=flip(Envelope.parse(envelope).signature))


def _tampered_ciphertext(envelope: bytes) -> bytes:
    return altered(envelope, ct=flip(Envelope.parse(envelope).ciphertext, 0))


def _tampered_wrapped_key(envelope: bytes) -> bytes:
    wrapped = list(Envelope.parse(envelope).wrapped_keys)
    wrapped[1] = flip(wrapped[1], 5)
    return altered(envelope, wk=wrapped)


def _swapped_wrapped_keys(envelope: bytes) -> bytes:
    wrapped = list(Envelope.parse(envelope).wrapped_keys)
    return altered(envelope, wk=[wrapped[1], wrapped[0], wrapped[2]])


TAMPERED = {
    "zero signature": _bad_signature,
    "flipped signature bit": _flipped_signature,
    "ciphertext changed": _tampered_ciphertext,
    "a wrapped key changed": _tampered_wrapped_key,
    "wrapped keys swapped": _swapped_wrapped_keys,
}


@pytest.mark.parametrize("tamper", TAMPERED.values(), ids=TAMPERED.keys())
async def test_an_envelope_that_is_not_what_its_sender_signed_is_refused(
    world: RunningHub, redis_db: redis.Redis, tamper: Any
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadEnvelopeSignature) as exc:
        await police.post_envelope(CHANNEL, tamper(sealed()))
    assert_sdk_problem(exc, 422, "bad-envelope-signature", "signed")


RECIPIENT_CASES = {
    "a reader missing": ((POLICE, CITY), (f"missing: {PROSECUTOR}",)),
    "only the sender": ((POLICE,), (PROSECUTOR, CITY)),
    "a non-member added": ((POLICE, PROSECUTOR, CITY, OUTSIDER), (f"not readers: {OUTSIDER}",)),
    "a non-member instead of a reader": (
        (POLICE, CITY, OUTSIDER),
        (f"missing: {PROSECUTOR}", f"not readers: {OUTSIDER}"),
    ),
}


@pytest.mark.parametrize(
    ("readers", "needles"), RECIPIENT_CASES.values(), ids=RECIPIENT_CASES.keys()
)
async def test_recipients_other_than_the_readers_are_refused(
    world: RunningHub,
    outsider: HubClient,
    redis_db: redis.Redis,
    readers: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.RecipientsMismatch) as excinfo:
        await police.post_envelope(CHANNEL, sealed(readers=readers))
    assert_sdk_problem(excinfo, 422, "recipients-mismatch", *needles)


async def test_a_post_only_member_is_no_recipient(
    world: RunningHub, outsider: HubClient, redis_db: redis.Redis
) -> None:
    await (await world.client(ADMIN)).set_member(CHANNEL, OUTSIDER, {"post"})
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.RecipientsMismatch) as excinfo:
        await police.post_envelope(CHANNEL, sealed(readers=(POLICE, PROSECUTOR, CITY, OUTSIDER)))
    assert_sdk_problem(excinfo, 422, "recipients-mismatch", f"not readers: {OUTSIDER}")
    await police.post_note(CHANNEL, Note("für die Leser"), MARKS)
    await outsider.post_envelope(CHANNEL, sealed(OUTSIDER))


async def test_a_readers_new_key_counts_even_for_a_channel_the_hub_has_read(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    # The first post makes the hub remember the channel; authentication of the next
    # post then reads the readers' entries with the caller's, and they must be fresh.
    police = await world.client(POLICE)
    await police.post_envelope(CHANNEL, sealed())
    old_envelope = sealed()
    rotated = Identity.generate(PROSECUTOR, suite=Suite.X25519)
    await (await world.client(PROSECUTOR)).add_card(PROSECUTOR, rotated.card)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.RecipientsMismatch) as excinfo:
        await police.post_envelope(CHANNEL, old_envelope)
    assert_sdk_problem(excinfo, 422, "recipients-mismatch", PROSECUTOR, "old keys")


async def test_a_note_sealed_to_a_readers_old_key_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    old_envelope = sealed()
    rotated = Identity.generate(PROSECUTOR, suite=Suite.X25519)
    await (await world.client(PROSECUTOR)).add_card(PROSECUTOR, rotated.card)
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.RecipientsMismatch) as excinfo:
        await police.post_envelope(CHANNEL, old_envelope)
    assert_sdk_problem(excinfo, 422, "recipients-mismatch", PROSECUTOR, "old keys")
    posted = await police.post_note(CHANNEL, Note("neu versiegelt"), MARKS)
    assert not posted.duplicate


@pytest.mark.parametrize("level", [Classification.VS_VERTRAULICH, Classification.GEHEIM])
async def test_a_note_above_the_ceiling_is_refused(
    world: RunningHub, redis_db: redis.Redis, level: Classification
) -> None:
    police = await world.client(POLICE)
    marks = Markings(level, MARKS.handling)
    # Nonces: the roster, the log key, one card proof per reader (3), the post.
    with nothing_written(redis_db, nonces=6), pytest.raises(sdk.AboveCeiling) as excinfo:
        await police.post_note(CHANNEL, Note(SECRET_TEXT), marks)
    assert_sdk_problem(excinfo, 422, "above-ceiling", level.value, "VS-NfD")


async def test_a_note_at_or_below_the_ceiling_is_accepted(world: RunningHub) -> None:
    police = await world.client(POLICE)
    for level in (Classification.OFFEN, Classification.VS_NFD):
        marks = Markings(level, MARKS.handling)
        assert not (await police.post_note(CHANNEL, Note("ok"), marks)).duplicate


SMALL_LIMIT = 8192


@pytest.fixture
async def small_hub(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> AsyncIterator[RunningHub]:
    """A hub that accepts envelopes of at most 8 KiB, with the same world."""
    running = await start_hub(hub_settings(tmp_path, redis_url, max_envelope_bytes=SMALL_LIMIT))
    await make_world(running)
    yield running
    await running.stop()


async def test_an_envelope_above_the_size_limit_is_refused(
    small_hub: RunningHub, redis_db: redis.Redis
) -> None:
    big = sealed(text="x" * SMALL_LIMIT)
    assert SMALL_LIMIT < len(big) <= SMALL_LIMIT + 64 * 1024
    police = await small_hub.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.TooLarge) as excinfo:
        await police.post_envelope(CHANNEL, big)
    assert_sdk_problem(excinfo, 413, "too-large", str(SMALL_LIMIT))
    assert not (await police.post_note(CHANNEL, Note("klein"), MARKS)).duplicate


async def test_a_body_beyond_what_the_server_reads_is_refused_before_authentication(
    small_hub: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    body = b"\x00" * (SMALL_LIMIT + 65 * 1024)
    with nothing_written(redis_db, nonces=0):
        answer = await signed(http, small_hub, "POST", NOTES_PATH, body, content_type=ENVELOPE)
    assert_problem(answer, 413, "too-large", "larger")


def _non_canonical(envelope: bytes) -> bytes:
    outer = codec.decode(envelope, max_bytes=len(envelope), max_depth=2)
    assert isinstance(outer, dict)
    return bytes(msgpack.packb(dict(reversed(list(outer.items()))), use_bin_type=True))


def _header_version_2(envelope: bytes) -> bytes:
    parsed = Envelope.parse(envelope)
    header = codec.decode(parsed.header_bytes, max_bytes=len(parsed.header_bytes))
    assert isinstance(header, dict)
    return altered(envelope, h=codec.encode({**header, "v": 2}))


MALFORMED = {
    "empty": lambda e: b"",
    "garbage": lambda e: b"\xc1\xc1\xc1 not msgpack",
    "truncated": lambda e: e[: len(e) // 2],
    "trailing byte": lambda e: e + b"\x00",
    "not canonical": _non_canonical,
    "a list": lambda e: codec.encode([b"h", [], b"ct", b"sig"]),
    "a field missing": lambda e: codec.encode({"h": b"", "wk": [], "ct": b""}),
    "an extra field": lambda e: altered(e, extra=b"1"),
    "one wrapped key missing": lambda e: altered(e, wk=list(Envelope.parse(e).wrapped_keys)[:2]),
    "header of version 2": _header_version_2,
    "short signature": lambda e: altered(e, sig=b"\x00" * 63),
}


@pytest.mark.parametrize("make", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_envelope_is_refused(
    world: RunningHub, redis_db: redis.Redis, make: Any
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.MalformedEnvelope) as excinfo:
        await police.post_envelope(CHANNEL, make(sealed()))
    assert_sdk_problem(excinfo, 400, "malformed-envelope", "malformed input")


@pytest.mark.parametrize(
    "content_type", ["application/msgpack", "application/json", "application/octet-stream", None]
)
async def test_an_envelope_sent_as_another_content_type_is_refused(
    world: RunningHub, redis_db: redis.Redis, content_type: str | None
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await police.transport.request("POST", NOTES_PATH, body=sealed(), content_type=content_type)
    assert_sdk_problem(excinfo, 400, "bad-request", ENVELOPE)


# -- paging ------------------------------------------------------------------------------


async def test_paging_returns_notes_oldest_first_with_a_cursor(world: RunningHub) -> None:
    ids = [await post_one(world, f"Notiz {n}") for n in range(3)]
    prosecutor = await world.client(PROSECUTOR)
    first = await prosecutor.page_notes(CHANNEL, limit=2)
    assert [n.stream_id for n in first.notes] == ids[:2] and first.next == ids[1]
    rest = await prosecutor.page_notes(CHANNEL, after=first.next, limit=2)
    assert [n.stream_id for n in rest.notes] == ids[2:] and rest.next == ids[2]
    empty = await prosecutor.page_notes(CHANNEL, after=rest.next)
    assert empty.notes == () and empty.next == ids[2]


async def test_a_non_member_may_not_page(
    world: RunningHub, outsider: HubClient, redis_db: redis.Redis
) -> None:
    await post_one(world)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotMember) as excinfo:
        await outsider.page_notes(CHANNEL)
    assert_sdk_problem(excinfo, 403, "not-member", OUTSIDER, "read")


async def test_a_post_only_member_may_not_page_or_ack(
    world: RunningHub, outsider: HubClient, redis_db: redis.Redis
) -> None:
    newest = await post_one(world)
    await (await world.client(ADMIN)).set_member(CHANNEL, OUTSIDER, {"post"})
    with nothing_written(redis_db, nonces=2, refusals=2):
        with pytest.raises(sdk.NotMember):
            await outsider.page_notes(CHANNEL)
        with pytest.raises(sdk.NotMember) as excinfo:
            await outsider.ack(CHANNEL, newest)
    assert_sdk_problem(excinfo, 403, "not-member", "read")


async def test_an_administrator_is_no_reader(world: RunningHub, redis_db: redis.Redis) -> None:
    admin = await world.client(ADMIN)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotMember) as excinfo:
        await admin.page_notes(CHANNEL)
    assert_sdk_problem(excinfo, 403, "not-member", ADMIN, "read")


async def test_paging_an_unknown_channel_is_not_found(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotFound) as excinfo:
        await police.page_notes("gibt-es-nicht")
    assert_sdk_problem(excinfo, 404, "not-found", "gibt-es-nicht")


BAD_CURSORS = ["abc", "1", "-1", "1-", "1-2-3", "1.5-0", " 1-0", "", "0x1-0", "1-0" + "0" * 40]


@pytest.mark.parametrize("after", BAD_CURSORS)
async def test_a_bad_cursor_is_refused(
    world: RunningHub, redis_db: redis.Redis, after: str
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await police.page_notes(CHANNEL, after=after)
    assert_sdk_problem(excinfo, 400, "bad-request", "cursor", "stream id")


@pytest.mark.parametrize("limit", ["0", "501", "-1", "abc", "1e2", "", "10.0", " 5"])
async def test_a_bad_limit_is_refused(world: RunningHub, redis_db: redis.Redis, limit: str) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await police.transport.request("GET", NOTES_PATH, params={"limit": limit})
    assert_sdk_problem(excinfo, 400, "bad-request", "limit", "1-500")


@pytest.mark.parametrize(
    ("name", "value"),
    [("limit", "\u00b2"), ("after", "\u00b2-0"), ("after", "1-\u00b9")],
    ids=["superscript limit", "superscript ms", "superscript seq"],
)
async def test_unicode_digits_in_a_cursor_or_limit_are_a_bad_request(
    world: RunningHub, redis_db: redis.Redis, name: str, value: str
) -> None:
    # str.isdigit() is True for "²", which int() refuses: only ASCII digits are digits.
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await police.transport.request("GET", NOTES_PATH, params={name: value})
    assert_sdk_problem(excinfo, 400, "bad-request", name if name == "limit" else "cursor")


async def test_unicode_digits_in_an_ack_are_a_bad_request(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    # The SDK cannot even sign such a position: the request is made by hand.
    await post_one(world)
    prosecutor = await world.client(PROSECUTOR)
    body = msgpack.packb({"id": "1-\u00b2", "at": now_ms(), "sig": b"\x00" * 64})
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await prosecutor.transport.request("POST", READS_PATH, body=body, content_type=MSGPACK)
    assert_sdk_problem(excinfo, 400, "bad-request", "id")


@pytest.mark.parametrize(
    "after",
    [
        "18446744073709551616-0",
        "99999999999999999999999999999999999999-0",
        "1-18446744073709551616",
    ],
)
async def test_a_cursor_beyond_the_stream_id_range_is_a_bad_request(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis, after: str
) -> None:
    # Redis stream ids are two unsigned 64-bit numbers; a larger one is the caller's
    # mistake (400), not a storage outage (Redis would answer "ERR Invalid stream ID").
    path = f"{NOTES_PATH}?after={after}"
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", path)
    assert_problem(answer, 400, "bad-request", "cursor")


# -- acknowledgements ----------------------------------------------------------------------


async def test_acks_only_move_forward_and_write_nothing_when_they_do_not(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    first, second = await post_one(world), await post_one(world, "zweite")
    prosecutor = await world.client(PROSECUTOR)
    assert await prosecutor.ack(CHANNEL, second) == second
    with nothing_written(redis_db, nonces=2, refusals=0):
        assert await prosecutor.ack(CHANNEL, first) == second
        assert await prosecutor.ack(CHANNEL, "0-0") == second


async def test_acking_beyond_the_newest_note_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    newest = await post_one(world)
    ms, _, seq = newest.partition("-")
    prosecutor = await world.client(PROSECUTOR)
    for beyond in (f"{ms}-{int(seq) + 1}", f"{int(ms) + 60_000}-0"):
        with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Conflict) as excinfo:
            await prosecutor.ack(CHANNEL, beyond)
        assert_sdk_problem(excinfo, 409, "conflict", beyond, newest)


async def test_acking_in_an_empty_channel_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    prosecutor = await world.client(PROSECUTOR)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Conflict) as excinfo:
        await prosecutor.ack(CHANNEL, "1-0")
    assert_sdk_problem(excinfo, 409, "conflict", "0-0")


async def test_a_non_member_may_not_ack(
    world: RunningHub, outsider: HubClient, redis_db: redis.Redis
) -> None:
    newest = await post_one(world)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotMember) as excinfo:
        await outsider.ack(CHANNEL, newest)
    assert_sdk_problem(excinfo, 403, "not-member", OUTSIDER)


async def test_acking_in_an_unknown_channel_is_not_found(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotFound) as excinfo:
        await police.ack("gibt-es-nicht", "0-0")
    assert_sdk_problem(excinfo, 404, "not-found", "gibt-es-nicht")


BAD_ACKS: dict[str, tuple[bytes, str, tuple[str, ...]]] = {
    "no id": (msgpack.packb({}), "application/msgpack", ("missing field 'id'",)),
    "id a number": (msgpack.packb({"id": 1}), "application/msgpack", ("'id'", "str")),
    "id not a stream id": (msgpack.packb({"id": "neu"}), "application/msgpack", ("id",)),
    "body a list": (msgpack.packb(["1-0"]), "application/msgpack", ("map",)),
    "body not msgpack": (b"\xc1", "application/msgpack", ("msgpack",)),
    "body not JSON": (b'{"id": ', "application/json", ("JSON",)),
    "JSON repeats a key": (b'{"id": "1-0", "id": "2-0"}', "application/json", ("repeats",)),
    "JSON with NaN": (b'{"id": NaN}', "application/json", ("JSON",)),
    "text body": (b"id=1-0", "text/plain", ("application/msgpack",)),
    "no body": (b"", "application/msgpack", ("msgpack",)),
}


@pytest.mark.parametrize(
    ("body", "content_type", "needles"), BAD_ACKS.values(), ids=BAD_ACKS.keys()
)
async def test_a_bad_ack_body_is_refused(
    world: RunningHub,
    redis_db: redis.Redis,
    body: bytes,
    content_type: str,
    needles: tuple[str, ...],
) -> None:
    await post_one(world)
    prosecutor = await world.client(PROSECUTOR)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await prosecutor.transport.request(
            "POST", f"/v1/channels/{CHANNEL}/reads", body=body, content_type=content_type
        )
    assert_sdk_problem(excinfo, 400, "bad-request", *needles)


def _ack_body(signer: str = PROSECUTOR, *, position: str | None = None, **kw: Any) -> Any:
    """A builder of an ack body for ``newest``: signed by ``signer``, fields overridden."""

    def build(newest: str) -> dict[str, Any]:
        frame = ack_frame(signer, CHANNEL, position or newest)
        body = {"id": newest, "at": frame["at"], "sig": frame["sig"], **kw}
        return {k: v for k, v in body.items() if v is not None}

    return build


SIGNED_ACK_REFUSALS: dict[str, tuple[Any, int, str, tuple[str, ...]]] = {
    "no time": (_ack_body(at=None), 400, "bad-request", ("'at'",)),
    "time as text": (_ack_body(at="jetzt"), 400, "bad-request", ("'at'", "int")),
    "no signature": (_ack_body(sig=None), 400, "bad-request", ("'sig'",)),
    "signature as a number": (_ack_body(sig=7), 400, "bad-request", ("'sig'", "bytes")),
    "signature truncated": (_ack_body(sig=b"\x00" * 63), 401, "unauthenticated", ("signature",)),
    "signed by another agency": (_ack_body(CITY), 401, "unauthenticated", ("current key",)),
    "signed for another position": (
        _ack_body(position="0-0"),
        401,
        "unauthenticated",
        ("does not verify",),
    ),
}


@pytest.mark.parametrize(
    ("make", "status", "slug", "needles"),
    SIGNED_ACK_REFUSALS.values(),
    ids=SIGNED_ACK_REFUSALS.keys(),
)
async def test_an_ack_that_is_not_the_callers_signed_statement_is_refused(
    world: RunningHub,
    redis_db: redis.Redis,
    make: Any,
    status: int,
    slug: str,
    needles: tuple[str, ...],
) -> None:
    newest = await post_one(world)
    prosecutor = await world.client(PROSECUTOR)
    body = msgpack.packb(make(newest))
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.ClientError) as excinfo:
        await prosecutor.transport.request("POST", READS_PATH, body=body, content_type=MSGPACK)
    assert_sdk_problem(excinfo, status, slug, *needles)
    assert await prosecutor.read_position(CHANNEL) == "0-0"


async def test_an_ack_signed_at_a_time_far_from_now_is_stale(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    newest = await post_one(world)
    prosecutor = await world.client(PROSECUTOR)
    at = now_ms() - 3_600_000
    _, sig = ReadAck.make(identity(PROSECUTOR), CHANNEL, newest, at)
    body = msgpack.packb({"id": newest, "at": at, "sig": sig})
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.StaleRequest) as excinfo:
        await prosecutor.transport.request("POST", READS_PATH, body=body, content_type=MSGPACK)
    assert_sdk_problem(excinfo, 401, "stale-request", "clock")


async def test_an_ack_in_json_works(world: RunningHub, http: aiohttp.ClientSession) -> None:
    newest = await post_one(world)
    at = now_ms()
    _, sig = ReadAck.make(identity(CITY), CHANNEL, newest, at)
    body = json.dumps({"id": newest, "at": at, "sig": b64url(sig)}).encode()
    answer = await signed(
        http,
        world,
        "POST",
        f"/v1/channels/{CHANNEL}/reads",
        body,
        content_type="application/json",
        signer=identity(CITY),
    )
    assert answer.status == 200 and json.loads(answer.body)["position"] == newest


# -- receipts ------------------------------------------------------------------------------


async def test_receipts_name_who_has_read(world: RunningHub) -> None:
    police = await world.client(POLICE)
    posted = await police.post_note(CHANNEL, Note("gelesen?"), MARKS)
    await (await world.client(CITY)).ack(CHANNEL, posted.stream_id)
    receipts = await police.receipts(CHANNEL, posted.message_id)
    assert receipts["read_by"] == [CITY] and receipts["unread_by"] == [POLICE, PROSECUTOR]


async def test_a_non_member_gets_no_receipts(
    world: RunningHub, outsider: HubClient, redis_db: redis.Redis
) -> None:
    posted = await (await world.client(POLICE)).post_note(CHANNEL, Note("x"), MARKS)
    admin = await world.client(ADMIN)
    with nothing_written(redis_db, nonces=2, refusals=2):
        with pytest.raises(sdk.NotMember) as excinfo:
            await outsider.receipts(CHANNEL, posted.message_id)
        assert_sdk_problem(excinfo, 403, "not-member", OUTSIDER)
        with pytest.raises(sdk.NotMember):
            await admin.receipts(CHANNEL, posted.message_id)


@pytest.mark.parametrize(
    ("channel", "message_id", "error", "status", "slug"),
    [
        ("gibt-es-nicht", "00" * 16, sdk.NotFound, 404, "not-found"),
        (CHANNEL, "00" * 16, sdk.NotFound, 404, "not-found"),
        (CHANNEL, "AB" * 16, sdk.BadRequest, 400, "bad-request"),
        (CHANNEL, "0" * 31, sdk.BadRequest, 400, "bad-request"),
        (CHANNEL, "zz" * 16, sdk.BadRequest, 400, "bad-request"),
    ],
    ids=["unknown channel", "unknown message", "upper-case hex", "short id", "not hex"],
)
async def test_bad_receipt_requests_are_refused(
    world: RunningHub,
    redis_db: redis.Redis,
    channel: str,
    message_id: str,
    error: type[sdk.HubProblem],
    status: int,
    slug: str,
) -> None:
    await post_one(world)
    prosecutor = await world.client(PROSECUTOR)
    with nothing_written(redis_db, nonces=1), pytest.raises(error) as excinfo:
        await prosecutor.receipts(channel, message_id)
    assert_sdk_problem(excinfo, status, slug)


# -- subscribing ---------------------------------------------------------------------------


SUBSCRIBE_REFUSALS = {
    "no cursor": ("", 400, "bad-request", ("cursor",)),
    "cursor without colon": (f"cursor={CHANNEL}", 400, "bad-request", ("<channel>:<stream id>",)),
    "bad stream id": (f"cursor={CHANNEL}:neu", 400, "bad-request", ("stream id",)),
    "same channel twice": (
        f"cursor={CHANNEL}:0-0&cursor={CHANNEL}:0-0",
        400,
        "bad-request",
        ("one per channel",),
    ),
    "too many cursors": (
        "&".join(f"cursor=kanal-{n}:0-0" for n in range(65)),
        400,
        "bad-request",
        ("1-64",),
    ),
    "unknown channel": ("cursor=gibt-es-nicht:0-0", 404, "not-found", ("gibt-es-nicht",)),
}


@pytest.mark.parametrize(
    ("query", "status", "slug", "needles"),
    SUBSCRIBE_REFUSALS.values(),
    ids=SUBSCRIBE_REFUSALS.keys(),
)
async def test_bad_subscriptions_are_refused_before_the_upgrade(
    world: RunningHub,
    http: aiohttp.ClientSession,
    redis_db: redis.Redis,
    query: str,
    status: int,
    slug: str,
    needles: tuple[str, ...],
) -> None:
    path = "/v1/subscribe" + (f"?{query}" if query else "")
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", path)
    assert_problem(answer, status, slug, *needles)


async def test_a_subscription_without_upgrade_is_told_to_upgrade(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    # The detail is aiohttp's explanation, not just "Bad Request".
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", f"/v1/subscribe?cursor={CHANNEL}:0-0")
    assert_problem(answer, 400, "bad-request", "WebSocket")


async def test_a_non_member_may_not_subscribe(
    world: RunningHub,
    outsider: HubClient,
    http: aiohttp.ClientSession,
    redis_db: redis.Redis,
) -> None:
    with nothing_written(redis_db, nonces=1):
        answer = await signed(
            http, world, "GET", f"/v1/subscribe?cursor={CHANNEL}:0-0", signer=identity(OUTSIDER)
        )
    assert_problem(answer, 403, "not-member", OUTSIDER, "read")
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Forbidden) as excinfo:
        await outsider.transport.open_websocket(
            "/v1/subscribe", params={"cursor": f"{CHANNEL}:0-0"}
        )
    assert excinfo.value.status == 403  # a refused upgrade carries no body to the SDK


async def test_bad_acks_over_the_websocket_are_error_frames_that_change_nothing(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    newest = await post_one(world)
    ms, _, seq = newest.partition("-")
    prosecutor = await world.client(PROSECUTOR)
    ws = await prosecutor.transport.open_websocket(
        "/v1/subscribe", params={"cursor": f"{CHANNEL}:0-0"}
    )
    try:

        async def frame() -> dict[str, Any]:
            value = msgpack.unpackb((await ws.receive(timeout=5)).data, raw=False)
            assert isinstance(value, dict)
            return value

        assert [(await frame())["t"], (await frame())["t"]] == ["note", "live"]
        beyond = f"{ms}-{int(seq) + 1}"
        hostile: list[tuple[dict[str, Any], str, str]] = [
            (ack_frame(PROSECUTOR, CHANNEL, beyond), "conflict", newest),
            (ack_frame(PROSECUTOR, "andere-lage", newest), "bad-request", "subscription"),
            ({"t": "ack", "ch": CHANNEL, "id": "neu", "at": now_ms(), "sig": b"\x00" * 64},
             "bad-request", "id"),
            ({"t": "ack", "ch": CHANNEL, "id": newest}, "bad-request", "'sig'"),
            ({**ack_frame(CITY, CHANNEL, newest)}, "unauthenticated", "signature"),
            (ack_frame(PROSECUTOR, CHANNEL, newest, at=now_ms() - 3_600_000),
             "stale-request", "clock"),
            ({"t": "nack"}, "bad-request", "ack"),
        ]  # fmt: skip
        with nothing_written(redis_db, nonces=0, refusals=len(hostile) + 1):
            for data, slug, needle in hostile:
                await ws.send_bytes(msgpack.packb(data))
                error = await frame()
                assert error["t"] == "error" and error["type"] == f"urn:siko:problem:{slug}"
                assert needle in error["detail"]
            await ws.send_bytes(b"\xc1")
            error = await frame()
            assert error["type"] == "urn:siko:problem:bad-request"
            assert "msgpack" in error["detail"]
        await ws.send_bytes(msgpack.packb(ack_frame(PROSECUTOR, CHANNEL, newest)))
        assert await frame() == {"t": "acked", "ch": CHANNEL, "pos": newest}
    finally:
        await ws.close()
