"""hub/store.py against the session's real Redis: every named operation and its refusals.

Each test starts from an empty Redis (the ``redis_db`` fixture flushes it) and checks,
next to the answer, what is (or is not) in Redis afterwards through the synchronous
client, so a refusal is seen to leave nothing behind. Every action writes its audit
event into its slot's outbox in the same script: an action that happens leaves exactly
its event there, one that is refused (or is a retry) leaves none.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from redis.exceptions import DataError

from hub import events, keyspace
from hub.auditlog import AuditLog
from hub.embedded import find_redis_server
from hub.errors import Conflict, IdempotencyConflict, NotFound, RosterChanged, Unavailable
from hub.events import AuditEvent
from hub.logstore import LogStore
from hub.records import AgencyRecord, ChannelRecord, Kind, Role, Status
from hub.store import AppendResult, Store, StoreConnection
from keys import AgencyId, ChannelId, Classification, KeyId, KeysError, now_ms
from keys.leaf import EventKind
from keys.logkey import LogKey
from tests.hub.test_auditlog import ORIGIN, Bench, CommandCountingRedis, CountingLogStore
from tests.hub.test_auditlog import (
    test_two_sequencers_racing_make_each_event_exactly_one_leaf as _two_sequencers_racing,
)
from tests.hub.test_refusals import value_of

CHANNEL = "lage-ruhr"
POLICE, CITY = AgencyId("pp-duisburg"), AgencyId("stadt-essen")
K1, K2 = KeyId(b"\x01" * 16), KeyId(b"\x02" * 16)


@pytest.fixture
async def store(redis_url: str, redis_db: redis.Redis) -> AsyncIterator[Store]:
    opened = Store.connect(redis_url)
    yield opened
    await opened.close()


def channel() -> ChannelRecord:
    """lage-ruhr with the police as its one member."""
    roster = {POLICE: frozenset({Role.POST, Role.READ})}
    return ChannelRecord(ChannelId(CHANNEL), Classification.VS_NFD, 30, roster, now_ms())


def agency(*keys: KeyId, status: Status = Status.ACTIVE) -> AgencyRecord:
    return AgencyRecord(POLICE, Kind.AGENCY, status, keys or (K1,), 1_700_000_000_000)


def event(kind: EventKind = EventKind.AGENCY_STATUS, **fields: object) -> AuditEvent:
    """A fresh audit event (its own salt, so no two are alike)."""
    return AuditEvent.of(kind, now_ms(), **fields)


def outbox(client: redis.Redis, key: str) -> list[tuple[str, AuditEvent]]:
    """The events waiting in an outbox stream, with their ids."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(key)  # type: ignore[assignment]
    return [
        (entry_id.decode(), AuditEvent(f[b"leaf"], f[b"rec"], f[b"salt"]))
        for entry_id, f in entries
    ]


async def create(store: Store, record: ChannelRecord) -> int:
    """Create ``record``; its roster version."""
    version, _ = await store.create_channel(record, event(EventKind.CHANNEL_CREATED))
    return version


async def update(store: Store, record: ChannelRecord, expected: int) -> int:
    """Replace the channel record if still at ``expected``; the new version."""
    version, _ = await store.update_channel(record, expected, event(EventKind.MEMBER_CHANGED))
    return version


async def append(
    store: Store,
    record: ChannelRecord,
    version: int,
    mid: int,
    digest: str = "aa",
    audit: AuditEvent | None = None,
) -> Any:
    return await store.append_note(
        record,
        version,
        message_id=bytes([mid]) * 16,
        sender=str(POLICE),
        digest_hex=digest * 32,
        envelope=b"envelope-" + bytes([mid]) + digest.encode(),
        now_ms=now_ms(),
        event=audit or event(EventKind.NOTE_ACCEPTED, mid=mid),
    )


async def advance(store: Store, agency_id: str, stream_id: str) -> str:
    """Move ``agency_id``'s read position; the position afterwards."""
    position, _ = await store.advance_read(
        CHANNEL, agency_id, stream_id, event(EventKind.NOTE_ACKNOWLEDGED)
    )
    return position


def dump_all(client: redis.Redis) -> dict[bytes, object]:
    """Every key of Redis with its type, value and whether it expires."""
    return {
        key: (value_of(client, key), client.pttl(key) >= 0)
        for key in sorted(client.scan_iter(count=1000))
    }


# -- notes: append -----------------------------------------------------------------------


async def test_append_stores_a_note_and_its_message_id_record(
    store: Store, redis_db: redis.Redis
) -> None:
    record = channel()
    version = await create(store, record)
    audit = event(EventKind.NOTE_ACCEPTED)
    result = await append(store, record, version, 1, audit=audit)
    assert not result.duplicate
    assert outbox(redis_db, keyspace.channel_events(CHANNEL))[-1] == (result.event_id, audit)
    assert await store.find_message_event(CHANNEL, (b"\x01" * 16).hex()) == result.event_id
    notes = await store.read_after(CHANNEL, "0-0", 10)
    assert [n.stream_id for n in notes] == [result.stream_id]
    assert notes[0].message_id == b"\x01" * 16
    assert notes[0].sender == POLICE and notes[0].digest_hex == "aa" * 32
    assert notes[0].envelope == b"envelope-\x01aa"
    assert await store.find_message(CHANNEL, (b"\x01" * 16).hex()) == result.stream_id
    assert await store.newest_id(CHANNEL) == result.stream_id
    mid_key = keyspace.channel_message(CHANNEL, (b"\x01" * 16).hex())
    assert 0 < redis_db.pttl(mid_key) <= record.retention_ms


async def test_append_is_idempotent_by_message_id(store: Store, redis_db: redis.Redis) -> None:
    record = channel()
    version = await create(store, record)
    first = await append(store, record, version, 1)
    before = dump_all(redis_db)
    again = await append(store, record, version, 1)
    assert again.duplicate and again.stream_id == first.stream_id
    assert again.event_id == first.event_id
    assert dump_all(redis_db) == before


async def test_same_message_id_with_another_envelope_is_an_idempotency_conflict(
    store: Store, redis_db: redis.Redis
) -> None:
    record = channel()
    version = await create(store, record)
    await append(store, record, version, 1, digest="aa")
    before = dump_all(redis_db)
    with pytest.raises(IdempotencyConflict) as excinfo:
        await append(store, record, version, 1, digest="bb")
    assert excinfo.value.status == 409
    assert "message id" in excinfo.value.detail and "bb" * 32 not in excinfo.value.detail
    assert dump_all(redis_db) == before


async def test_stored_append_answers_a_retry_without_writing(
    store: Store, redis_db: redis.Redis
) -> None:
    record = channel()
    version = await create(store, record)
    mid_hex = (b"\x01" * 16).hex()
    assert await store.stored_append(CHANNEL, mid_hex, "aa" * 32) is None
    first = await append(store, record, version, 1)
    before = dump_all(redis_db)
    seen = await store.stored_append(CHANNEL, mid_hex, "aa" * 32)
    assert seen is not None and seen.duplicate
    assert (seen.stream_id, seen.event_id) == (first.stream_id, first.event_id)
    with pytest.raises(IdempotencyConflict):
        await store.stored_append(CHANNEL, mid_hex, "bb" * 32)
    assert dump_all(redis_db) == before


async def test_a_retry_is_recognised_even_after_the_roster_moved(store: Store) -> None:
    record = channel()
    version = await create(store, record)
    first = await append(store, record, version, 1)
    newer = await update(store, record.with_member(CITY, frozenset({Role.READ})), version)
    again = await append(store, record, version, 1)
    assert again.duplicate and again.stream_id == first.stream_id
    assert again.event_id == first.event_id
    assert newer == version + 1


async def test_append_against_a_moved_roster_is_refused_and_writes_nothing(
    store: Store, redis_db: redis.Redis
) -> None:
    record = channel()
    version = await create(store, record)
    await update(store, record.with_member(CITY, frozenset({Role.READ})), version)
    before = dump_all(redis_db)
    with pytest.raises(RosterChanged) as excinfo:
        await append(store, record, version, 1)
    assert excinfo.value.status == 409 and CHANNEL in excinfo.value.detail
    assert isinstance(excinfo.value, Conflict)
    assert dump_all(redis_db) == before
    assert await store.find_message(CHANNEL, (b"\x01" * 16).hex()) is None


async def test_append_to_a_missing_channel_is_not_found_and_writes_nothing(
    store: Store, redis_db: redis.Redis
) -> None:
    with pytest.raises(NotFound) as excinfo:
        await append(store, channel(), 1, 1)
    assert CHANNEL in excinfo.value.detail
    assert dump_all(redis_db) == {}


# -- notes: read_after -------------------------------------------------------------------


async def test_read_after_pages_oldest_first_and_excludes_the_cursor(store: Store) -> None:
    record = channel()
    version = await create(store, record)
    ids = [(await append(store, record, version, n)).stream_id for n in range(1, 6)]
    pages, after = [], "0-0"
    while page := await store.read_after(CHANNEL, after, 2):
        pages.append([n.stream_id for n in page])
        after = page[-1].stream_id
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    assert [n.message_id for n in await store.read_after(CHANNEL, ids[1], 100)] == [
        bytes([n]) * 16 for n in (3, 4, 5)
    ]
    assert await store.read_after(CHANNEL, ids[-1], 10) == []


async def test_read_after_a_cursor_between_ids_starts_at_the_next_note(store: Store) -> None:
    record = channel()
    version = await create(store, record)
    first = (await append(store, record, version, 1)).stream_id
    ms, _, seq = first.partition("-")
    assert (await store.read_after(CHANNEL, f"{int(ms) - 1}-99", 10))[0].stream_id == first
    assert await store.read_after(CHANNEL, f"{ms}-{int(seq) + 1}", 10) == []


async def test_an_empty_or_missing_channel_reads_as_empty(store: Store) -> None:
    assert await store.read_after("gibt-es-nicht", "0-0", 10) == []
    assert await store.newest_id("gibt-es-nicht") == "0-0"
    assert await store.find_message("gibt-es-nicht", "00" * 16) is None
    assert await store.find_message_event("gibt-es-nicht", "00" * 16) is None
    assert await store.wait_after("gibt-es-nicht", "0-0", count=1, block_ms=10) == []


# -- read positions ----------------------------------------------------------------------


async def test_advance_read_only_moves_forward(store: Store, redis_db: redis.Redis) -> None:
    record = channel()
    version = await create(store, record)
    ids = [(await append(store, record, version, n)).stream_id for n in range(1, 4)]
    audit = event(EventKind.NOTE_ACKNOWLEDGED)
    moved = await store.advance_read(CHANNEL, POLICE, ids[1], audit)
    assert moved[0] == ids[1]
    assert outbox(redis_db, keyspace.channel_events(CHANNEL))[-1] == (moved[1], audit)
    before = dump_all(redis_db)
    for not_forward in (ids[0], ids[1], "0-0"):
        stays = await store.advance_read(CHANNEL, POLICE, not_forward, event())
        assert stays == (ids[1], None)
    assert dump_all(redis_db) == before
    assert await advance(store, POLICE, ids[2]) == ids[2]
    assert await store.read_positions(CHANNEL) == {POLICE: ids[2]}


async def test_advance_read_beyond_the_newest_note_is_refused(
    store: Store, redis_db: redis.Redis
) -> None:
    record = channel()
    version = await create(store, record)
    newest = (await append(store, record, version, 1)).stream_id
    await advance(store, POLICE, newest)
    ms, _, seq = newest.partition("-")
    before = dump_all(redis_db)
    for beyond in (f"{ms}-{int(seq) + 1}", f"{int(ms) + 1}-0", "99999999999999-0"):
        with pytest.raises(Conflict) as excinfo:
            await advance(store, CITY, beyond)
        assert excinfo.value.status == 409
        assert beyond in excinfo.value.detail and newest in excinfo.value.detail
    assert dump_all(redis_db) == before


async def test_advance_read_on_an_empty_channel_accepts_only_the_start(
    store: Store, redis_db: redis.Redis
) -> None:
    await create(store, channel())
    before = dump_all(redis_db)
    assert await advance(store, POLICE, "0-0") == "0-0"
    with pytest.raises(Conflict):
        await advance(store, POLICE, "1-0")
    assert dump_all(redis_db) == before
    assert await store.read_positions(CHANNEL) == {}


# -- nonces ------------------------------------------------------------------------------


async def test_a_nonce_is_remembered_once_with_its_lifetime(
    store: Store, redis_db: redis.Redis
) -> None:
    key_id = K1.hex()
    assert await store.remember_nonce(key_id, "n" * 22, 120)
    assert not await store.remember_nonce(key_id, "n" * 22, 120)
    assert await store.remember_nonce(K2.hex(), "n" * 22, 120)
    assert await store.remember_nonce(key_id, "m" * 22, 120)
    ttl = redis_db.ttl(keyspace.nonce(key_id, "n" * 22))
    assert 118 <= ttl <= 120
    assert all(k.startswith(b"siko:{n:") for k in redis_db.scan_iter())


async def test_agencies_and_nonce_reads_the_entries_and_records_the_nonce_once(
    store: Store, redis_db: redis.Redis
) -> None:
    await store.register_agency(agency(), b"card", event())
    key_id = K1.hex()
    records, fresh = await store.agencies_and_nonce([POLICE, CITY], key_id, "n" * 22, 120)
    assert (records, fresh) == ([agency(), None], True)
    assert await store.agencies_and_nonce([POLICE], key_id, "n" * 22, 120) == ([agency()], False)
    assert 118 <= redis_db.ttl(keyspace.nonce(key_id, "n" * 22)) <= 120


async def test_concurrent_requests_with_the_same_nonce_find_it_fresh_exactly_once(
    store: Store, redis_db: redis.Redis
) -> None:
    """Many requests at once share the store's one connection: each gets its own answer."""
    await store.register_agency(agency(), b"card", event())
    nonces = [f"{i % 50:022d}" for i in range(200)]
    answers = await asyncio.gather(
        *(store.agencies_and_nonce([POLICE], K1.hex(), n, 60) for n in nonces)
    )
    assert all(records == [agency()] for records, _ in answers)
    fresh = Counter(n for n, (_, is_fresh) in zip(nonces, answers, strict=True) if is_fresh)
    assert fresh == Counter(set(nonces))


async def test_a_damaged_entry_read_with_a_nonce_fails_and_uses_the_nonce_up(
    store: Store, redis_db: redis.Redis
) -> None:
    """The request fails (500), and its nonce stays recorded as for any verified request;
    nothing else changes."""
    redis_db.hset(keyspace.agencies(), str(POLICE), b"\xc1 not msgpack")
    before = dump_all(redis_db)
    with pytest.raises(KeysError):
        await store.agencies_and_nonce([POLICE], K1.hex(), "n" * 22, 120)
    nonce = keyspace.nonce(K1.hex(), "n" * 22)
    after = dump_all(redis_db)
    assert nonce.encode() in after
    assert {k: v for k, v in after.items() if k != nonce.encode()} == before


async def test_post_context_answers_a_retry_or_the_channel(
    store: Store, redis_db: redis.Redis
) -> None:
    record = channel()
    version = await create(store, record)
    mid = (bytes([1]) * 16).hex()
    assert await store.post_context(CHANNEL, mid, "aa" * 32) == (record, version)
    first = await append(store, record, version, 1)
    retry = await store.post_context(CHANNEL, mid, "aa" * 32)
    assert retry == AppendResult(first.stream_id, duplicate=True, event_id=first.event_id)
    with pytest.raises(IdempotencyConflict):
        await store.post_context(CHANNEL, mid, "bb" * 32)
    with pytest.raises(NotFound):
        await store.post_context("lage-leer", mid, "aa" * 32)


async def test_the_append_script_is_loaded_again_when_redis_lost_its_scripts(
    store: Store, redis_db: redis.Redis
) -> None:
    """A Redis restart or SCRIPT FLUSH empties the script cache; appends go on."""
    record = channel()
    version = await create(store, record)
    await append(store, record, version, 1)
    redis_db.script_flush()
    second = await append(store, record, version, 2)
    assert not second.duplicate
    assert redis_db.xlen(keyspace.channel_notes(CHANNEL)) == 2


async def test_an_error_reply_on_the_posts_path_is_unavailable_and_changes_nothing(
    store: Store, redis_db: redis.Redis
) -> None:
    """Over the link as over the pool: a Redis error is a 503 with Retry-After, and the
    connection stays in step for the next request."""
    mid = "00" * 16
    redis_db.hset(keyspace.channel_message(CHANNEL, mid), "not", "a string")
    before = dump_all(redis_db)
    with pytest.raises(Unavailable) as excinfo:
        await store.post_context(CHANNEL, mid, "aa" * 32)
    assert excinfo.value.status == 503 and excinfo.value.retry_after == 1
    assert dump_all(redis_db) == before
    with pytest.raises(NotFound):
        await store.post_context("lage-leer", mid, "aa" * 32)


# -- channels ----------------------------------------------------------------------------


async def test_create_channel_then_get_and_list(store: Store, redis_db: redis.Redis) -> None:
    record = channel()
    audit = event(EventKind.CHANNEL_CREATED)
    version, event_id = await store.create_channel(record, audit)
    assert version == 1
    assert outbox(redis_db, keyspace.channel_events(CHANNEL)) == [(event_id, audit)]
    assert await store.get_channel(CHANNEL) == (record, 1)
    assert await store.list_channels() == [CHANNEL]


async def test_creating_an_existing_channel_is_a_conflict_and_changes_nothing(
    store: Store, redis_db: redis.Redis
) -> None:
    record = channel()
    await create(store, record)
    before = dump_all(redis_db)
    members = {**record.members, CITY: frozenset({Role.READ})}
    other = ChannelRecord(record.channel, record.ceiling, 7, members, record.created + 1000)
    with pytest.raises(Conflict) as excinfo:
        await create(store, other)
    assert "already exists" in excinfo.value.detail
    assert dump_all(redis_db) == before
    assert await store.get_channel(CHANNEL) == (record, 1)


async def test_update_channel_is_compare_and_set_on_the_version(
    store: Store, redis_db: redis.Redis
) -> None:
    record = channel()
    v1 = await create(store, record)
    with_city = record.with_member(CITY, frozenset({Role.READ}))
    audit = event(EventKind.MEMBER_CHANGED)
    v2, event_id = await store.update_channel(with_city, v1, audit)
    assert v2 == v1 + 1
    assert outbox(redis_db, keyspace.channel_events(CHANNEL))[-1] == (event_id, audit)
    before = dump_all(redis_db)
    for stale in (v1, v2 + 1, 0):
        with pytest.raises(Conflict) as excinfo:
            await update(store, record, stale)
        assert "changed meanwhile" in excinfo.value.detail
    assert dump_all(redis_db) == before
    assert await store.get_channel(CHANNEL) == (with_city, v2)


async def test_a_missing_channel_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as excinfo:
        await store.get_channel("gibt-es-nicht")
    assert excinfo.value.status == 404 and "gibt-es-nicht" in excinfo.value.detail


# -- directory ---------------------------------------------------------------------------


async def test_register_agency_stores_the_entry_and_its_card(
    store: Store, redis_db: redis.Redis
) -> None:
    audit = event(EventKind.AGENCY_REGISTERED)
    event_id = await store.register_agency(agency(K1), b"card-1", audit)
    assert outbox(redis_db, keyspace.directory_events()) == [(event_id, audit)]
    assert await store.get_agency(POLICE) == agency(K1)
    assert await store.get_card(K1.hex()) == b"card-1"
    assert await store.get_cards([K1.hex(), K2.hex()]) == [b"card-1", None]
    assert await store.get_cards([]) == []
    assert await store.list_agencies() == [agency(K1)]
    assert await store.get_agency("stadt-essen") is None


async def test_registering_twice_is_a_conflict_and_keeps_the_first(
    store: Store, redis_db: redis.Redis
) -> None:
    await store.register_agency(agency(K1), b"card-1", event())
    before = dump_all(redis_db)
    with pytest.raises(Conflict) as excinfo:
        await store.register_agency(agency(K2), b"card-2", event())
    assert "already registered" in excinfo.value.detail
    assert dump_all(redis_db) == before
    assert await store.get_card(K2.hex()) is None


async def test_replace_agency_is_compare_and_set_on_the_whole_entry(
    store: Store, redis_db: redis.Redis
) -> None:
    first = agency(K1)
    await store.register_agency(first, b"card-1", event())
    rotated = agency(K1, K2)
    audit = event(EventKind.KEY_ADDED)
    event_id = await store.replace_agency(first, rotated, b"card-2", audit)
    assert outbox(redis_db, keyspace.directory_events())[-1] == (event_id, audit)
    assert await store.get_agency(POLICE) == rotated
    assert await store.get_card(K1.hex()) == b"card-1"
    assert await store.get_card(K2.hex()) == b"card-2"
    before = dump_all(redis_db)
    suspended = agency(K1, status=Status.SUSPENDED)
    with pytest.raises(Conflict) as excinfo:
        await store.replace_agency(first, suspended, b"card-1", event())
    assert "changed meanwhile" in excinfo.value.detail
    assert dump_all(redis_db) == before


async def test_replacing_an_unregistered_agency_is_a_conflict(
    store: Store, redis_db: redis.Redis
) -> None:
    with pytest.raises(Conflict):
        await store.replace_agency(agency(K1), agency(K1, K2), b"card-2", event())
    assert dump_all(redis_db) == {}


async def test_a_replacement_never_overwrites_a_stored_card(store: Store) -> None:
    first = agency(K1)
    await store.register_agency(first, b"card-1", event())
    await store.replace_agency(first, agency(K1, K2), b"card-2", event())
    await store.replace_agency(agency(K1, K2), agency(K1, K2, K1), b"forged", event())
    assert await store.get_card(K1.hex()) == b"card-1"


# -- storage unreachable -----------------------------------------------------------------


def closed_port() -> int:
    """A loopback port that was just bound and closed: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


OPERATIONS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "get_agency": lambda s: s.get_agency(POLICE),
    "list_agencies": lambda s: s.list_agencies(),
    "get_card": lambda s: s.get_card(K1.hex()),
    "get_cards": lambda s: s.get_cards([K1.hex()]),
    "register_agency": lambda s: s.register_agency(agency(), b"card", event()),
    "replace_agency": lambda s: s.replace_agency(agency(), agency(K1, K2), b"card", event()),
    "get_channel": lambda s: s.get_channel(CHANNEL),
    "list_channels": lambda s: s.list_channels(),
    "create_channel": lambda s: create(s, channel()),
    "update_channel": lambda s: update(s, channel(), 1),
    "append_note": lambda s: append(s, channel(), 1, 1),
    "read_after": lambda s: s.read_after(CHANNEL, "0-0", 10),
    "wait_after": lambda s: s.wait_after(CHANNEL, "0-0", count=1, block_ms=10),
    "newest_id": lambda s: s.newest_id(CHANNEL),
    "find_message": lambda s: s.find_message(CHANNEL, "00" * 16),
    "find_message_event": lambda s: s.find_message_event(CHANNEL, "00" * 16),
    "stored_append": lambda s: s.stored_append(CHANNEL, "00" * 16, "aa" * 32),
    "advance_read": lambda s: advance(s, POLICE, "1-0"),
    "read_positions": lambda s: s.read_positions(CHANNEL),
    "remember_nonce": lambda s: s.remember_nonce(K1.hex(), "n" * 22, 10),
    "agencies_and_nonce": lambda s: s.agencies_and_nonce([POLICE], K1.hex(), "n" * 22, 10),
    "post_context": lambda s: s.post_context(CHANNEL, "00" * 16, "aa" * 32),
}


@pytest.fixture
async def unreachable() -> AsyncIterator[Store]:
    opened = Store.connect(f"redis://127.0.0.1:{closed_port()}/0")
    yield opened
    await opened.close()


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_redis_errors_become_unavailable_with_retry_after(
    unreachable: Store, operation: Callable[[Store], Awaitable[object]]
) -> None:
    with pytest.raises(Unavailable) as excinfo:
        await operation(unreachable)
    error = excinfo.value
    assert error.status == 503 and error.retry_after == 1
    assert error.problem_type() == "urn:siko:problem:unavailable"
    assert "retry" in error.detail and "127.0.0.1" not in error.detail


async def test_ping_answers_false_instead_of_raising(unreachable: Store, store: Store) -> None:
    assert await unreachable.ping() is False
    assert await store.ping() is True


# -- the connection's command packer (hiredis) -------------------------------------------


async def test_commands_of_every_argument_type_reach_redis_as_sent(
    store: Store, redis_db: redis.Redis
) -> None:
    """Names of several words are split, as redis-py's packers do; bytes, memoryviews,
    text, integers and floats arrive as the server would store them from redis-py."""
    client = store.client
    await client.execute_command("CLIENT SETNAME", "siko-packer")
    assert await client.execute_command("CLIENT GETNAME") == "siko-packer"
    await client.execute_command(b"RPUSH", "k", b"\x00\xffraw", memoryview(b"view"), 7, 2.5)
    await client.execute_command("RPUSH", bytearray(b"k"), "ü")
    assert redis_db.lrange("k", 0, -1) == [b"\x00\xffraw", b"view", b"7", b"2.5", "ü".encode()]


async def test_a_value_hiredis_cannot_pack_is_a_data_error_and_nothing_is_sent(
    store: Store, redis_db: redis.Redis
) -> None:
    connection = StoreConnection()
    for bad in (None, {"a": 1}, object()):
        with pytest.raises(DataError):
            connection.pack_command("SET", "k", bad)
    assert redis_db.dbsize() == 0


# -- the audit log's sequencer over the store's link -------------------------------------


@pytest.fixture
async def linked_bench(redis_url: str, redis_db: redis.Redis) -> AsyncIterator[Bench]:
    """test_auditlog's bench, but every LogStore is handed a Store's link, as in the hub."""
    stores = [Store.connect(redis_url) for _ in range(3)]
    logstores = [CountingLogStore(store.client, store.link) for store in stores[1:]]
    key = LogKey.generate(ORIGIN)
    logs = [AuditLog(logstore, key, checkpoint_interval_s=1.0) for logstore in logstores]
    yield Bench(stores[0], logs, logstores, [store.client for store in stores])
    for store in stores:
        await store.close()


async def test_the_sequencers_batches_go_over_the_link_of_the_store_it_shares(
    redis_url: str, redis_db: redis.Redis
) -> None:
    """Reading the outbox, sequencing and trimming never touch the pool when the LogStore
    is handed the Store's link; the log comes out as over the pool."""
    client = cast("CommandCountingRedis", CommandCountingRedis.from_url(redis_url))
    client.commands = []
    store = Store(client)
    try:
        logstore = LogStore(client, store.link)
        audit = AuditLog(logstore, LogKey.generate(ORIGIN), checkpoint_interval_s=1.0)
        refusal = events.request_refused(
            agency=None, method="GET", path="/", problem="x", status=404, at=1
        )
        ids = [await logstore.append_inbox(refusal) for _ in range(5)]
        client.commands.clear()
        assert [await audit.index_of(keyspace.log_inbox(), i) for i in ids] == list(range(5))
        await audit.drain(keyspace.log_inbox())
        assert redis_db.xlen(keyspace.log_inbox()) == 0
        pooled = {name for name, _ in client.commands}
        assert pooled.isdisjoint({"XRANGE", "XTRIM", "EVALSHA", "EVAL"}), pooled
        assert await audit.size() == 5
    finally:
        await store.close()


async def test_two_sequencers_over_store_links_make_each_event_exactly_one_leaf(
    linked_bench: Bench, redis_db: redis.Redis
) -> None:
    await _two_sequencers_racing(linked_bench, redis_db)


# -- URL schemes: unix:// and rediss:// ---------------------------------------------------


async def test_a_unix_socket_url_reaches_redis_over_the_pool_and_the_link(
    tmp_path: Path,
) -> None:
    """unix://:password@/path?db=n, as OPERATIONS.md documents it."""
    sock = tmp_path / "r.sock"
    options = {"port": "0", "unixsocket": str(sock), "unixsocketperm": "700"}
    options |= {"requirepass": "pw", "save": "", "dir": str(tmp_path)}
    server = subprocess.Popen(
        [str(find_redis_server()), *(part for k, v in options.items() for part in (f"--{k}", v))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = Store.connect(f"unix://:pw@{sock}?db=2")
    try:
        async with asyncio.timeout(10):
            while not await store.ping():
                await asyncio.sleep(0.02)
            await store.register_agency(agency(), b"card", event())  # the pool
            found = await store.agencies_and_nonce([POLICE], K1.hex(), "n" * 22, 60)  # the link
        assert found == ([agency()], True)
        with redis.Redis(unix_socket_path=str(sock), password="pw", db=2) as direct:
            assert direct.exists(keyspace.agencies(), keyspace.nonce(K1.hex(), "n" * 22)) == 2
    finally:
        await store.close()
        server.terminate()
        server.wait(10)


async def test_a_rediss_url_speaks_tls_and_never_sends_the_password_in_clear() -> None:
    """Pool and link both open with a TLS handshake; a server that is not TLS (here one
    that records the first bytes and hangs up) makes them fail, not fall back."""
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(4096))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = Store.connect(f"rediss://:s3cret-pw@127.0.0.1:{port}/0")
    try:
        async with asyncio.timeout(10):
            assert await store.ping() is False
            with pytest.raises(Unavailable):
                await store.agencies_and_nonce([POLICE], K1.hex(), "n" * 22, 60)
    finally:
        await store.close()
        server.close()
        await server.wait_closed()
    assert len(received) >= 2
    assert all(first.startswith(b"\x16\x03") for first in received)  # a TLS ClientHello
    assert not any(b"s3cret-pw" in first for first in received)


# -- the pool's bound ---------------------------------------------------------------------


async def test_a_full_pool_makes_a_request_wait_then_answers_unavailable(
    redis_url: str, redis_db: redis.Redis
) -> None:
    """With every pooled connection held by a feed's blocking read, a request waits for
    one and is answered 503 when none frees up in time (an unbounded pool would have
    opened a third), and once a connection is free requests go through again."""
    bounded = Store.connect(redis_url, max_connections=2, pool_wait_s=0.3)
    try:
        waits = [
            asyncio.create_task(bounded.wait_after(CHANNEL, "$", count=1, block_ms=1500))
            for _ in range(2)
        ]
        await asyncio.sleep(0.2)  # both blocking reads hold their connections now
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await bounded.list_channels()
        assert 0.25 <= time.monotonic() - started < 1.2
        assert await asyncio.gather(*waits) == [[], []]
        assert await bounded.list_channels() == []
    finally:
        await bounded.close()
