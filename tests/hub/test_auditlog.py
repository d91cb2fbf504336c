"""The audit log (hub/auditlog.py, hub/logstore.py) against the session's real Redis.

Four groups:

* exactly once: two sequencers (two ``AuditLog`` over two ``LogStore`` on the same Redis,
  as two hub replicas would be) drain the same outboxes concurrently; every event becomes
  exactly one leaf, in outbox order, and the stored perfect-subtree hashes give the roots
  :func:`keys.merkle.root_from_leaf_hashes` computes. Events that a crash left in an
  outbox are taken by the next drain or sweep; a restarted hub continues the log with
  the same key.
* every action leaves exactly its leaf, with the record an auditor needs and no note
  content; a refused request leaves only its refusal.
* checkpoints are signed while the log grows, never re-signed while it does not.
* deletion removes a record and its salt and queues its signed tombstone in one step;
  every proof still verifies, and a tombstone has no record of its own to delete.

The helpers at the top (:func:`opened`, :func:`new_entries`, :func:`all_leaves`, ...)
are shared with ``test_audit_api.py`` and ``test_receipts.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web

from hub import events, keyspace
from hub.app import StartError, build_app
from hub.auditlog import KEPT_KINDS, RETENTION_REASON, AuditLog, retention_ends
from hub.errors import Conflict, NotFound, Unavailable
from hub.events import AuditEvent
from hub.logstore import LogStore, StoredLeaf
from hub.records import AgencyRecord, ChannelRecord, Kind, Role, Status
from hub.redislink import RedisLink
from hub.state import AUDIT, STORE
from hub.store import Store
from keys import (
    AgencyCard,
    AgencyId,
    ChannelId,
    Classification,
    Envelope,
    Identity,
    KeyId,
    Note,
    Suite,
    now_ms,
)
from keys import errors as key_errors
from keys._suites import VerifyKey
from keys.checkpoint import Checkpoint, NoteVerifier, open_signed_checkpoint
from keys.leaf import EventKind, EventRecord, Tombstone, check_record, parse_leaf
from keys.logkey import LogKey
from keys.merkle import (
    Frontier,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from keys.statements import ReadAck
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    CITY,
    MARKS,
    POLICE,
    PROSECUTOR,
    RunningHub,
    hub_settings,
    identity,
    make_world,
    start_hub,
)

#: The text of the notes these tests post: it must never reach the audit log.
SECRET = "Vertraulich: V-Person wohnt Altendorfer Str. 12, Essen"
ORIGIN = "test.siko.example/log"


# -- shared helpers -------------------------------------------------------------------


def opened(stored: StoredLeaf) -> EventRecord:
    """The record of an event leaf, after checking that the leaf commits to it."""
    assert stored.record is not None and stored.salt is not None, f"leaf {stored.index}"
    check_record(stored.leaf, stored.record, stored.salt)
    return EventRecord.parse(stored.record)


async def all_leaves(audit: AuditLog) -> list[StoredLeaf]:
    """Every leaf of the log, with what is kept of records and salts."""
    size = await audit.size()
    leaves: list[StoredLeaf] = []
    for start in range(0, size, 1000):
        leaves += await audit.leaves(start, min(size, start + 1000))
    assert [s.index for s in leaves] == list(range(size))
    return leaves


async def settled_size(hub: RunningHub) -> int:
    """The log size once every pending event (refusals, too) is sequenced."""
    audit = hub.app[AUDIT]
    await audit.drain_all()
    return await audit.size()


async def new_entries(hub: RunningHub, since: int) -> list[tuple[StoredLeaf, EventRecord]]:
    """The leaves added since size ``since`` (after draining), with their opened records."""
    audit = hub.app[AUDIT]
    await audit.drain_all()
    leaves = await audit.leaves(since, await audit.size())
    return [(stored, opened(stored)) for stored in leaves]


def verifier_of(hub: RunningHub) -> NoteVerifier:
    """The verifier an auditor configures for this hub's log."""
    return NoteVerifier.parse(hub.app[AUDIT].key.verifier_key)


def log_verify_key(hub: RunningHub) -> VerifyKey:
    """The log key's public key, as tombstones and receipts are verified with."""
    return VerifyKey(verifier_of(hub).public_key)


async def signed_checkpoint(hub: RunningHub) -> Checkpoint:
    """A checkpoint of the log as it is now, signed and opened with the verifier."""
    audit = hub.app[AUDIT]
    await audit.drain_all()
    await audit.sign_checkpoint()
    return open_signed_checkpoint(await audit.latest_checkpoint(), verifier_of(hub))


async def wait_for(condition: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def raw_hash(redis_db: redis.Redis, key: str) -> dict[bytes, bytes]:
    """A Redis hash as the bytes it holds (the test client does not decode)."""
    return cast("dict[bytes, bytes]", redis_db.hgetall(key))


def stored_roots_match(leaves: Sequence[bytes], nodes: dict[bytes, bytes]) -> None:
    """Every stored perfect subtree hash is the MTH of its leaves, and there are all."""
    hashes = [leaf_hash(leaf) for leaf in leaves]
    expected_count = sum(len(hashes) >> level for level in range(len(hashes).bit_length()))
    assert len(nodes) == expected_count
    for name, digest in nodes.items():
        level, index = (int(part) for part in name.decode().split(":"))
        span = hashes[index << level : (index + 1) << level]
        assert len(span) == 1 << level
        assert digest == root_from_leaf_hashes(span), name


# -- exactly once, two sequencers -----------------------------------------------------


class CountingLogStore(LogStore):
    """A LogStore that counts lost races and can run a hook before sequencing."""

    def __init__(self, client: aioredis.Redis, link: RedisLink | None = None) -> None:
        super().__init__(client, link)
        self.results: list[int | None] = []
        self.before_sequence: Callable[[], Awaitable[None]] | None = None

    async def sequence(self, **kwargs: Any) -> int | None:
        hook, self.before_sequence = self.before_sequence, None
        if hook is not None:
            await hook()
        result = await super().sequence(**kwargs)
        self.results.append(result)
        return result


@dataclass
class Bench:
    """A Store (the actions' side) and sequencers over one Redis, with what was written."""

    store: Store
    logs: list[AuditLog]
    stores: list[CountingLogStore]
    clients: list[aioredis.Redis]
    written: dict[str, list[tuple[str, AuditEvent]]] = field(default_factory=dict)
    channels: dict[str, tuple[ChannelRecord, int]] = field(default_factory=dict)

    def wrote(self, outbox: str, event_id: str, event: AuditEvent) -> None:
        self.written.setdefault(outbox, []).append((event_id, event))

    async def register(self, name: str) -> None:
        record = AgencyRecord(AgencyId(name), Kind.AGENCY, Status.ACTIVE, (KeyId(b"\1" * 16),), 1)
        event = AuditEvent.of(EventKind.AGENCY_REGISTERED, now_ms(), agency=name)
        event_id = await self.store.register_agency(record, b"card of " + name.encode(), event)
        self.wrote(keyspace.directory_events(), event_id, event)

    async def create_channel(self, name: str) -> None:
        members = {AgencyId(POLICE): frozenset({Role.POST, Role.READ})}
        record = ChannelRecord(ChannelId(name), Classification.VS_NFD, 30, members, now_ms())
        event = events.channel_created(record, ADMIN, now_ms())
        version, event_id = await self.store.create_channel(record, event)
        self.channels[name] = (record, version)
        self.wrote(keyspace.channel_events(name), event_id, event)

    async def change_member(self, name: str, agency: str, roles: frozenset[Role]) -> None:
        record, version = self.channels[name]
        updated = record.with_member(AgencyId(agency), roles)
        event = events.member_changed(updated, agency, ADMIN, now_ms())
        version, event_id = await self.store.update_channel(updated, version, event)
        self.channels[name] = (updated, version)
        self.wrote(keyspace.channel_events(name), event_id, event)

    async def refuse(self, path: str) -> None:
        event = events.request_refused(
            agency=None, method="GET", path=path, problem="not-found", status=404, at=now_ms()
        )
        event_id = await self.stores[0].append_inbox(event)
        self.wrote(keyspace.log_inbox(), event_id, event)

    def total(self) -> int:
        return sum(len(items) for items in self.written.values())


@pytest.fixture
async def bench(redis_url: str, redis_db: redis.Redis) -> AsyncIterator[Bench]:
    key = LogKey.generate(ORIGIN)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    stores = [CountingLogStore(client) for client in clients[1:]]
    logs = [AuditLog(s, key, checkpoint_interval_s=1.0) for s in stores]
    yield Bench(Store(clients[0]), logs, stores, clients)
    for client in clients:
        await client.aclose()


async def check_exactly_once(bench: Bench, redis_db: redis.Redis) -> list[StoredLeaf]:
    """Every written event is exactly one leaf, in outbox order; the nodes are right."""
    logstore = bench.stores[0]
    size = await logstore.size()
    assert size == bench.total()
    leaves = await logstore.leaves(0, size)
    assert [s.index for s in leaves] == list(range(size))
    seen: list[int] = []
    for outbox, written in bench.written.items():
        found = [await logstore.source_index(outbox, event_id) for event_id, _ in written]
        indexes = [i for i in found if i is not None]
        assert len(indexes) == len(found), f"{outbox}: events missing from the log"
        assert indexes == sorted(indexes), f"{outbox} out of order"
        for index, (_, event) in zip(indexes, written, strict=True):
            stored = leaves[index]
            assert (stored.leaf, stored.record, stored.salt) == (
                event.leaf,
                event.record,
                event.salt,
            )
            seen.append(index)
        assert await logstore.cursor(outbox) == written[-1][0]
        assert redis_db.xlen(outbox) == 0, f"{outbox} not trimmed"
    assert sorted(seen) == list(range(size))
    assert redis_db.hlen(keyspace.log_sources()) == size
    stored_roots_match([s.leaf for s in leaves], raw_hash(redis_db, keyspace.log_nodes()))
    for k in range(size + 1):
        frontier = Frontier(k, tuple(await logstore.nodes(Frontier.node_ids(k))))  # type: ignore[arg-type]
        assert frontier.root() == root_from_leaf_hashes(leaf_hash(s.leaf) for s in leaves[:k])
    return leaves


async def test_two_sequencers_racing_make_each_event_exactly_one_leaf(
    bench: Bench, redis_db: redis.Redis
) -> None:
    await bench.create_channel("lage-ruhr")
    await bench.create_channel("lage-essen")
    producing = True

    async def produce() -> None:
        nonlocal producing
        for n in range(50):
            await bench.register(f"amt-{n}")
            roles = frozenset({Role.READ}) if n % 2 else frozenset({Role.POST, Role.READ})
            await bench.change_member("lage-ruhr", CITY, roles)
            await bench.change_member("lage-essen", PROSECUTOR, roles)
            await bench.refuse(f"/v1/nothing/{n}")
            await asyncio.sleep(0)
        producing = False

    async def sequence(audit: AuditLog, outbox: str | None) -> None:
        while producing:
            await (audit.drain_all() if outbox is None else audit.drain(outbox))
            await asyncio.sleep(0)

    first, second = bench.logs
    await asyncio.gather(
        produce(),
        sequence(first, None),
        sequence(second, None),
        sequence(first, keyspace.channel_events("lage-ruhr")),
        sequence(second, keyspace.channel_events("lage-ruhr")),
        sequence(second, keyspace.directory_events()),
    )
    await asyncio.gather(first.drain_all(), second.drain_all(), first.drain_all())
    assert bench.total() == 202
    await check_exactly_once(bench, redis_db)
    # Who wins how many races depends on scheduling (under load one sequencer may drain
    # everything first); exactly-once must hold whatever the interleaving. The next test
    # makes a sequencer lose a race deterministically.
    assert any(result is not None for store in bench.stores for result in store.results)


async def test_a_sequencer_that_lost_the_race_reloads_and_appends_after_the_winner(
    bench: Bench, redis_db: redis.Redis
) -> None:
    first, second = bench.logs
    first_store = bench.stores[0]
    for n in range(3):
        await bench.refuse(f"/a/{n}")
    inbox = keyspace.log_inbox()

    async def winner_goes_first() -> None:
        await second.drain(inbox)

    # The first sequencer has read size and events when the second one takes them all.
    first_store.before_sequence = winner_goes_first
    await first.drain(inbox)
    assert first_store.results == [None]  # it lost, changed nothing, and found no more
    assert await first_store.size() == 3

    # Its cached view is now stale: the other one appended to another outbox meanwhile.
    await bench.create_channel("lage-ruhr")
    await second.drain_all()
    await bench.change_member("lage-ruhr", CITY, frozenset({Role.READ}))
    await bench.refuse("/a/3")
    await first.drain_all()
    # Inbox first: a conflict on the size, a reload, then leaf 4; then the channel's.
    assert first_store.results == [None, None, 4, 5]
    await check_exactly_once(bench, redis_db)


async def test_waiters_arriving_during_a_batch_are_sequenced_together_by_the_next(
    bench: Bench, redis_db: redis.Redis
) -> None:
    first, store = bench.logs[0], bench.stores[0]
    inbox = keyspace.log_inbox()
    await bench.refuse("/g/0")
    later: list[asyncio.Future[int]] = []

    async def more_arrive_meanwhile() -> None:
        for n in range(1, 11):
            await bench.refuse(f"/g/{n}")
        for event_id, _ in bench.written[inbox][1:]:
            later.append(asyncio.ensure_future(first.index_of(inbox, event_id)))
        await asyncio.sleep(0)  # they register and ask for another pass

    store.before_sequence = more_arrive_meanwhile
    assert await first.index_of(inbox, bench.written[inbox][0][0]) == 0
    assert await asyncio.gather(*later) == list(range(1, 11))
    assert store.results == [0, 1], "the ten that came during the first batch share one"
    await first.drain(inbox)
    await check_exactly_once(bench, redis_db)


async def test_events_a_crash_left_in_the_outboxes_are_taken_by_the_next_drain(
    bench: Bench, redis_db: redis.Redis
) -> None:
    # The actions happened (with their events, atomically); no sequencer ran.
    await bench.create_channel("lage-ruhr")
    await bench.register("amt-1")
    await bench.change_member("lage-ruhr", CITY, frozenset({Role.READ}))
    await bench.refuse("/x")
    assert redis_db.exists(keyspace.log_size()) == 0
    first, second = bench.logs
    await first.drain_all()
    await check_exactly_once(bench, redis_db)

    # A crash after the log took events (step 4) but before they were trimmed from the
    # outbox: the next drain must not take them a second time.
    await bench.register("amt-2")
    await bench.register("amt-3")
    outbox = keyspace.directory_events()
    logstore = bench.stores[1]
    size, cursor = await logstore.size(), await logstore.cursor(outbox)
    pending = await logstore.read_outbox(outbox, cursor, 100)
    assert [p.event_id for p in pending] == [i for i, _ in bench.written[outbox][-2:]]
    frontier = Frontier(size, tuple(await logstore.nodes(Frontier.node_ids(size))))  # type: ignore[arg-type]
    nodes = []
    for item in pending:
        frontier, completed = frontier.append(leaf_hash(item.event.leaf))
        nodes += completed
    first_index = await logstore.sequence(
        size=size, outbox=outbox, cursor=cursor, events=pending, nodes=nodes
    )
    assert first_index == size
    assert redis_db.xlen(outbox) == 2  # the "crash": not trimmed
    await second.drain_all()
    await first.drain_all()
    assert await logstore.size() == size + 2
    await bench.register("amt-4")  # the next batch trims the leftovers too
    await second.drain(outbox)
    await check_exactly_once(bench, redis_db)


async def test_the_sweep_sequences_events_nobody_drained(world: RunningHub) -> None:
    size = await settled_size(world)
    card = Identity.generate("ordnungsamt-bochum", suite=Suite.X25519).card
    record = AgencyRecord(card.agency, Kind.AGENCY, Status.ACTIVE, (card.key_id,), now_ms())
    event = events.agency_registered(record, card, ADMIN, now_ms())
    # The action as a handler would do it, but "crashing" before it settles its event.
    event_id = await world.app[STORE].register_agency(record, card.serialize(), event)
    audit = world.app[AUDIT]

    async def sequenced() -> bool:
        return await audit.size() > size

    await wait_for(sequenced)
    assert await audit.settle_directory(event_id) == size
    assert (await audit.leaves(size, size + 1))[0].leaf == event.leaf


async def test_waiting_for_an_index_is_bounded(
    world: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hub.auditlog.WAIT_FOR_INDEX_S", 0.2)
    # An id that no outbox holds never becomes a leaf: the caller gets a 503 to retry.
    with pytest.raises(Unavailable, match="not keeping up"):
        await world.app[AUDIT].settle_directory("1-1")


# -- restarts and the log key ----------------------------------------------------------


async def test_a_restarted_hub_continues_the_log_with_the_same_key(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    first = await start_hub(hub_settings(tmp_path, redis_url))
    try:
        await make_world(first)
        police = await first.client(POLICE)
        for n in range(3):
            await police.post_note(CHANNEL, Note(f"{SECRET} {n}"), MARKS)
        old = await signed_checkpoint(first)
        audit = first.app[AUDIT]
        old_leaves = await all_leaves(audit)
        old_proofs = [await audit.inclusion_proof(i, old.size) for i in range(old.size)]
        verifier_key = audit.key.verifier_key
        key_file = first.settings.log_key_path
        key_bytes = key_file.read_bytes()
    finally:
        await first.stop()

    # While no hub runs, an action's event is left in its outbox (a crashed replica).
    store = Store.connect(redis_url)
    card = Identity.generate("ordnungsamt-bochum", suite=Suite.X25519).card
    record = AgencyRecord(card.agency, Kind.AGENCY, Status.ACTIVE, (card.key_id,), now_ms())
    left = events.agency_registered(record, card, ADMIN, now_ms())
    await store.register_agency(record, card.serialize(), left)
    await store.close()

    second = await start_hub(hub_settings(tmp_path, redis_url))
    try:
        audit = second.app[AUDIT]
        assert audit.key.verifier_key == verifier_key
        assert key_file.read_bytes() == key_bytes
        city = await second.client(CITY)
        posted = await city.post_note(CHANNEL, Note(SECRET), MARKS)
        assert posted.index >= old.size
        new = await signed_checkpoint(second)
        assert new.size == old.size + 2  # the left-over event and the new post
        leaves = await all_leaves(audit)
        assert [s.leaf for s in leaves[: old.size]] == [s.leaf for s in old_leaves]
        assert left.leaf in [s.leaf for s in leaves[old.size :]]
        for index, proof in enumerate(old_proofs):
            verify_inclusion(leaf_hash(leaves[index].leaf), index, old.size, proof, old.root_hash)
            proof = await audit.inclusion_proof(index, new.size)
            verify_inclusion(leaf_hash(leaves[index].leaf), index, new.size, proof, new.root_hash)
        proof = await audit.consistency_proof(old.size, new.size)
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        assert await audit.checkpoint_at(old.size) is not None
    finally:
        await second.stop()


async def test_a_log_origin_that_does_not_match_the_key_file_stops_the_start(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    settings = hub_settings(tmp_path, redis_url, log_origin="hub.polizei.nrw/siko-log")
    settings.log_key_path.parent.mkdir(parents=True)
    LogKey.generate("other.example/siko-log").save(settings.log_key_path)
    kept = settings.log_key_path.read_bytes()
    runner = web.AppRunner(build_app(settings))
    try:
        with pytest.raises(StartError) as refused:
            await runner.setup()
    finally:
        await runner.cleanup()
    message = str(refused.value)
    assert str(settings.log_key_path) in message
    assert "'other.example/siko-log'" in message and "'hub.polizei.nrw/siko-log'" in message
    assert "--log-origin" in message
    assert settings.log_key_path.read_bytes() == kept  # never replaced


async def test_the_first_start_makes_a_private_log_key_for_the_configured_origin(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    settings = hub_settings(tmp_path, redis_url, log_origin="hub.polizei.nrw/siko-log")
    assert not settings.log_key_path.exists()
    running = await start_hub(settings)
    try:
        assert settings.log_key_path.stat().st_mode & 0o777 == 0o600
        key = LogKey.load(settings.log_key_path)
        assert key.origin == "hub.polizei.nrw/siko-log"
        assert key.verifier_key == running.app[AUDIT].key.verifier_key
        note = await running.app[AUDIT].latest_checkpoint()
        assert open_signed_checkpoint(note, key.verifier).origin == key.origin
    finally:
        await running.stop()


# -- every action leaves exactly its leaf ---------------------------------------------


async def test_registering_an_agency_leaves_its_card_in_the_log(world: RunningHub) -> None:
    admin = await world.client(ADMIN)
    size = await settled_size(world)
    card = Identity.generate("ordnungsamt-bochum", suite=Suite.X25519).card
    await admin.register_agency(card)
    [(_, record)] = await new_entries(world, size)
    assert record.kind is EventKind.AGENCY_REGISTERED
    assert record.fields == {
        "agency": "ordnungsamt-bochum",
        "role": "agency",
        "key_id": bytes(card.key_id),
        "card": card.serialize(),
        "by": ADMIN,
    }
    assert AgencyCard.parse(record.fields["card"]) == card


async def test_the_world_is_in_the_log_from_the_first_administrator_on(world: RunningHub) -> None:
    entries = await new_entries(world, 0)
    kinds = [(r.kind, r.fields.get("agency"), r.fields.get("by")) for _, r in entries]
    assert kinds == [
        (EventKind.AGENCY_REGISTERED, ADMIN, "hub-start"),
        (EventKind.AGENCY_REGISTERED, POLICE, ADMIN),
        (EventKind.AGENCY_REGISTERED, PROSECUTOR, ADMIN),
        (EventKind.AGENCY_REGISTERED, CITY, ADMIN),
        (EventKind.CHANNEL_CREATED, None, ADMIN),
    ]


async def test_rotating_a_key_leaves_the_new_card(world: RunningHub) -> None:
    police = await world.client(POLICE)
    size = await settled_size(world)
    new = Identity.generate(POLICE, suite=Suite.X25519)
    await police.add_card(POLICE, new.card)
    [(_, record)] = await new_entries(world, size)
    assert record.kind is EventKind.KEY_ADDED
    assert record.fields == {
        "agency": POLICE,
        "key_id": bytes(new.card.key_id),
        "card": new.card.serialize(),
        "by": POLICE,
    }


async def test_suspending_an_agency_leaves_its_status(world: RunningHub) -> None:
    admin = await world.client(ADMIN)
    size = await settled_size(world)
    await admin.set_status(CITY, "suspended")
    await admin.set_status(CITY, "active")
    entries = await new_entries(world, size)
    assert [(r.kind, r.fields) for _, r in entries] == [
        (EventKind.AGENCY_STATUS, {"agency": CITY, "status": "suspended", "by": ADMIN}),
        (EventKind.AGENCY_STATUS, {"agency": CITY, "status": "active", "by": ADMIN}),
    ]


async def test_creating_a_channel_leaves_its_members_ceiling_and_retention(
    world: RunningHub,
) -> None:
    admin = await world.client(ADMIN)
    size = await settled_size(world)
    await admin.create_channel(
        "lage-essen",
        ceiling="OFFEN",
        retention_days=7,
        members={POLICE: {"post", "read"}, CITY: {"read"}},
    )
    [(_, record)] = await new_entries(world, size)
    assert record.kind is EventKind.CHANNEL_CREATED
    assert record.fields == {
        "channel": "lage-essen",
        "ceiling": "OFFEN",
        "retention_days": 7,
        "members": {POLICE: ["post", "read"], CITY: ["read"]},
        "by": ADMIN,
    }


async def test_changing_a_member_leaves_its_roles(world: RunningHub) -> None:
    admin = await world.client(ADMIN)
    size = await settled_size(world)
    await admin.set_member(CHANNEL, PROSECUTOR, {"post", "read"})
    await admin.set_member(CHANNEL, CITY, [])
    entries = await new_entries(world, size)
    assert [(r.kind, r.fields) for _, r in entries] == [
        (
            EventKind.MEMBER_CHANGED,
            {"channel": CHANNEL, "agency": PROSECUTOR, "roles": ["post", "read"], "by": ADMIN},
        ),
        (EventKind.MEMBER_CHANGED, {"channel": CHANNEL, "agency": CITY, "roles": [], "by": ADMIN}),
    ]


async def test_a_post_leaves_header_signature_and_digest_and_no_content(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    size = await settled_size(world)
    posted = await police.post_note(CHANNEL, Note(SECRET), MARKS)
    [(stored, record)] = await new_entries(world, size)
    assert stored.index == posted.index
    envelope = Envelope.parse((await police.page_notes(CHANNEL)).notes[0].envelope)
    header = envelope.header
    assert record.kind is EventKind.NOTE_ACCEPTED
    assert record.fields == {
        "channel": CHANNEL,
        "message_id": bytes(header.message_id),
        "sender": POLICE,
        "sender_key": bytes(header.sender_key),
        "recipients": [[str(r.agency), bytes(r.key_id)] for r in header.recipients],
        "classification": "VS-NfD",
        "handling": header.markings.handling.value,
        "digest": envelope.digest(),
        "header": envelope.header_bytes,
        "signature": envelope.signature,
    }
    # No note content anywhere in the log: not the text, not the ciphertext, no key.
    everything = b"".join(
        k + v for k, v in raw_hash(redis_db, keyspace.log_records()).items()
    ) + b"".join(raw_hash(redis_db, keyspace.log_leaves()).values())
    for secret in (SECRET.encode(), envelope.ciphertext, *envelope.wrapped_keys):
        assert secret not in everything


async def test_an_acknowledgement_leaves_the_readers_own_signed_statement(
    world: RunningHub,
) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    posted = await police.post_note(CHANNEL, Note(SECRET), MARKS)
    size = await settled_size(world)
    await prosecutor.ack(CHANNEL, posted.stream_id)
    await prosecutor.ack(CHANNEL, posted.stream_id)  # the position does not move: no leaf
    [(_, record)] = await new_entries(world, size)
    assert record.kind is EventKind.NOTE_ACKNOWLEDGED
    assert set(record.fields) == {"channel", "agency", "position", "statement", "signature"}
    assert record.fields["agency"] == PROSECUTOR
    assert record.fields["position"] == posted.stream_id
    ack = ReadAck.parse(record.fields["statement"])
    assert (str(ack.agency), str(ack.channel), ack.position) == (
        PROSECUTOR,
        CHANNEL,
        posted.stream_id,
    )
    # The evidence stands on the log alone: the reader's card, as the log recorded its
    # registration, verifies the reader's signature.
    registered = [
        AgencyCard.parse(r.fields["card"])
        for _, r in await new_entries(world, 0)
        if r.kind is EventKind.AGENCY_REGISTERED and r.fields["key_id"] == bytes(ack.key_id)
    ]
    assert registered == [identity(PROSECUTOR).card]
    card = registered[0]
    assert card == await police.card(str(ack.key_id))  # the directory agrees
    ack.verify(record.fields["signature"], card.sign_key)
    with pytest.raises(key_errors.InvalidSignature):
        ack.verify(record.fields["signature"], identity(POLICE).card.sign_key)


async def test_a_refused_post_leaves_only_its_refusal(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    from clients import errors as sdk

    prosecutor = await world.client(PROSECUTOR)
    size = await settled_size(world)
    with pytest.raises(sdk.NotMember):
        await prosecutor.post_note(CHANNEL, Note(SECRET), MARKS)
    [(_, record)] = await new_entries(world, size)
    assert record.kind is EventKind.REQUEST_REFUSED
    assert record.fields == {
        "agency": PROSECUTOR,
        "method": "POST",
        "path": f"/v1/channels/{CHANNEL}/notes",
        "problem": "not-member",
        "status": 403,
    }
    assert redis_db.xlen(keyspace.channel_notes(CHANNEL)) == 0


async def test_a_refused_registration_leaves_only_its_refusal(world: RunningHub) -> None:
    from clients import errors as sdk

    police = await world.client(POLICE)
    size = await settled_size(world)
    with pytest.raises(sdk.Forbidden):
        await police.register_agency(Identity.generate("amt-x", suite=Suite.X25519).card)
    [(_, record)] = await new_entries(world, size)
    assert record.kind is EventKind.REQUEST_REFUSED
    assert record.fields["agency"] == POLICE
    assert record.fields["problem"] == "forbidden"


async def test_an_unauthenticated_refusal_is_only_counted_until_the_summary(
    world: RunningHub,
) -> None:
    """A refusal that names nobody costs no leaf of its own: it is counted, and the next
    summary holds it (by problem and status; no path, no agency)."""
    import aiohttp

    size = await settled_size(world)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{world.base_url}/v1/agencies") as response:
            assert response.status == 401
    assert await new_entries(world, size) == []
    assert await world.app[AUDIT].summarize_refusals()
    [(_, record)] = await new_entries(world, size)
    assert record.kind is EventKind.REFUSALS_SUMMARIZED
    assert record.fields["counts"] == [["unauthenticated", 401, 1]]
    assert set(record.fields) == {"from", "to", "counts"}
    assert record.fields["from"] <= record.fields["to"] == record.at


# -- checkpoints ----------------------------------------------------------------------


async def test_checkpoints_follow_a_growing_log_and_stop_when_it_stops(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed: list[int] = []
    original = LogKey.sign_checkpoint

    def counting(self: LogKey, size: int, root_hash: bytes) -> bytes:
        signed.append(size)
        return original(self, size, root_hash)

    monkeypatch.setattr(LogKey, "sign_checkpoint", counting)
    running = await start_hub(hub_settings(tmp_path, redis_url, checkpoint_interval_s=0.1))
    try:
        audit = running.app[AUDIT]
        admin = await running.client(ADMIN)
        verifier = verifier_of(running)
        started = time.monotonic()
        for n in range(12):
            await admin.register_agency(Identity.generate(f"amt-{n}", suite=Suite.X25519).card)
            await asyncio.sleep(0.08)
        grew_for = time.monotonic() - started

        async def caught_up() -> bool:
            note = await audit.latest_checkpoint()
            return open_signed_checkpoint(note, verifier).size == await audit.size()

        await wait_for(caught_up, 2.0)
        sizes = {int(k) for k in redis_db.hkeys(keyspace.log_checkpoints())}
        # At least one checkpoint per two intervals while the log grew (not one per second).
        assert len(sizes) >= grew_for / 0.2
        latest = open_signed_checkpoint(await audit.latest_checkpoint(), verifier)
        assert latest.size == max(sizes) == await audit.size() == 13
        hashes = [leaf_hash(s.leaf) for s in await all_leaves(audit)]
        for size in sizes:
            note = await audit.checkpoint_at(size)
            assert note is not None
            checkpoint = open_signed_checkpoint(note, verifier)
            assert checkpoint.size == size
            assert checkpoint.root_hash == root_from_leaf_hashes(hashes[:size])
        # Nothing changes: nothing is signed again.
        signed.clear()
        before = redis_db.hgetall(keyspace.log_checkpoints())
        await asyncio.sleep(0.6)
        assert signed == []
        assert redis_db.hgetall(keyspace.log_checkpoints()) == before
        assert await audit.sign_checkpoint() is None
    finally:
        await running.stop()


async def test_a_smaller_checkpoint_never_replaces_the_latest(bench: Bench) -> None:
    store = bench.stores[0]
    key = bench.logs[0].key
    big, small = key.sign_checkpoint(5, b"\5" * 32), key.sign_checkpoint(3, b"\3" * 32)
    assert await store.latest_checkpoint() is None
    await store.put_checkpoint(5, big)
    await store.put_checkpoint(3, small)  # another replica, late
    assert await store.latest_checkpoint() == big
    assert await store.checkpoint_at(3) == small
    await store.put_checkpoint(5, small)  # a different note at a signed size never wins
    assert await store.checkpoint_at(5) == big


async def test_the_first_checkpoint_is_signed_on_demand(bench: Bench) -> None:
    audit = bench.logs[0]
    note = await audit.latest_checkpoint()
    checkpoint = open_signed_checkpoint(note, audit.key.verifier)
    assert (checkpoint.size, checkpoint.root_hash) == (0, root_from_leaf_hashes([]))
    assert await audit.sign_checkpoint() is None  # nothing new
    assert await bench.logs[1].latest_checkpoint() == note


# -- deletion -------------------------------------------------------------------------


async def test_deleting_a_record_leaves_a_signed_tombstone_and_every_proof(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    posted = await police.post_note(CHANNEL, Note(SECRET), MARKS)
    audit = world.app[AUDIT]
    size = await settled_size(world)
    at = now_ms()
    tomb_index = await audit.delete_record(posted.index, "Löschung nach § 75 BDSG", at)
    assert tomb_index == size
    assert not redis_db.hexists(keyspace.log_records(), str(posted.index))
    assert not redis_db.hexists(keyspace.log_salts(), str(posted.index))
    leaves = await all_leaves(audit)
    deleted = leaves[posted.index]
    assert (deleted.record, deleted.salt) == (None, None)
    assert deleted.leaf == posted.receipt.leaf  # the leaf itself stays
    tombstone = parse_leaf(leaves[tomb_index].leaf)
    assert isinstance(tombstone, Tombstone)
    assert (tombstone.index, tombstone.reason, tombstone.at) == (
        posted.index,
        "Löschung nach § 75 BDSG",
        at,
    )
    tombstone.verify(log_verify_key(world))
    with pytest.raises(key_errors.InvalidSignature):
        tombstone.verify(identity(ADMIN).card.sign_key)
    checkpoint = await signed_checkpoint(world)
    assert checkpoint.size == tomb_index + 1
    for stored in leaves:
        proof = await audit.inclusion_proof(stored.index, checkpoint.size)
        verify_inclusion(
            leaf_hash(stored.leaf), stored.index, checkpoint.size, proof, checkpoint.root_hash
        )
        if stored.index not in (posted.index, tomb_index):
            opened(stored)  # every other record still matches its leaf
    with pytest.raises(NotFound, match="already deleted"):
        await audit.delete_record(posted.index, "noch einmal", now_ms())
    with pytest.raises(NotFound):
        await audit.delete_record(checkpoint.size + 5, "gibt es nicht", now_ms())
    assert await audit.size() == checkpoint.size  # refusals log no tombstone


async def test_a_tombstone_has_no_record_to_delete(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    audit = world.app[AUDIT]
    posted = await (await world.client(POLICE)).post_note(CHANNEL, Note(SECRET), MARKS)
    tomb_index = await audit.delete_record(posted.index, "Löschung", now_ms())
    # The tombstone's leaf is all there is: no (empty) record, no salt stored for it.
    assert not redis_db.hexists(keyspace.log_records(), str(tomb_index))
    assert not redis_db.hexists(keyspace.log_salts(), str(tomb_index))
    [stored] = await audit.leaves(tomb_index, tomb_index + 1)
    assert (stored.record, stored.salt) == (None, None)
    size = await settled_size(world)
    with pytest.raises(NotFound, match="already deleted"):
        await audit.delete_record(tomb_index, "Löschung der Löschung", now_ms())
    assert await settled_size(world) == size  # no second tombstone naming a tombstone


async def test_a_record_is_never_gone_without_its_tombstone(
    world: RunningHub, redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = world.app[AUDIT]
    index = (await (await world.client(POLICE)).post_note(CHANNEL, Note(SECRET), MARKS)).index
    size = await settled_size(world)
    logstore: LogStore = audit._store  # inject storage faults around the deletion step
    deleting = logstore.delete_record

    async def unavailable_before(index: int, tombstone: bytes) -> str | None:
        raise Unavailable("the hub cannot reach its storage right now; retry shortly")

    async def crash_after(index: int, tombstone: bytes) -> str | None:
        await deleting(index, tombstone)
        raise Unavailable("the hub cannot reach its storage right now; retry shortly")

    # Storage fails before the step: nothing changed, no tombstone.
    monkeypatch.setattr(logstore, "delete_record", unavailable_before)
    with pytest.raises(Unavailable):
        await audit.delete_record(index, "Löschung", now_ms())
    assert redis_db.hexists(keyspace.log_records(), str(index))
    assert redis_db.hexists(keyspace.log_salts(), str(index))
    assert await settled_size(world) == size

    # The hub fails right after the step (before the tombstone has its index): the
    # record is gone and its tombstone was queued with it, so the sweep logs it.
    monkeypatch.setattr(logstore, "delete_record", crash_after)
    with pytest.raises(Unavailable):
        await audit.delete_record(index, "Löschung", now_ms())
    monkeypatch.undo()
    assert not redis_db.hexists(keyspace.log_records(), str(index))
    assert not redis_db.hexists(keyspace.log_salts(), str(index))

    async def tombstone_logged() -> bool:
        return await audit.size() > size

    await wait_for(tombstone_logged)
    tombstones = [parse_leaf(s.leaf) for s in (await all_leaves(audit))[size:]]
    assert [t.index for t in tombstones if isinstance(t, Tombstone)] == [index]

    # The caller retries the 503: the record is already deleted, and stays one tombstone.
    with pytest.raises(NotFound, match="already deleted"):
        await audit.delete_record(index, "Löschung", now_ms())
    assert await settled_size(world) == size + 1


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def test_retention_ends_with_the_year_after_the_records_year() -> None:
    """BDSG section 76(4): deleted at the end of the year following the record's year."""
    assert retention_ends(utc_ms(2024, 1, 1)) == utc_ms(2026, 1, 1)
    assert retention_ends(utc_ms(2024, 12, 31, 23, 59)) == utc_ms(2026, 1, 1)
    assert retention_ends(utc_ms(2025, 1, 1)) == utc_ms(2027, 1, 1)


async def test_the_retention_sweep_deletes_expired_records_and_logs_their_tombstones(
    bench: Bench, redis_db: redis.Redis
) -> None:
    audit = bench.logs[0]
    logstore = bench.stores[0]
    old, kept = utc_ms(2023, 3, 1), utc_ms(2025, 7, 1)
    for n, at in enumerate([old, old, old + 1, old + 2, kept, kept + 1]):
        event = events.request_refused(
            agency=None, method="GET", path=f"/{n}", problem="x", status=404, at=at
        )
        await audit.append(event)
    now = utc_ms(2025, 8, 1)  # 2023's records are due since 2025-01-01; 2025's are not

    assert await audit.retention_sweep(now) == [0, 1, 2, 3]
    for index in range(6):
        gone = index < 4
        assert redis_db.hexists(keyspace.log_records(), str(index)) is not gone
        assert redis_db.hexists(keyspace.log_salts(), str(index)) is not gone
    leaves = await all_leaves(audit)
    assert len(leaves) == 10
    tombstones = [parse_leaf(s.leaf) for s in leaves[6:]]
    for target, tombstone in enumerate(tombstones):
        assert isinstance(tombstone, Tombstone)
        assert (tombstone.index, tombstone.reason, tombstone.at) == (target, RETENTION_REASON, now)
        tombstone.verify(VerifyKey(audit.key.verifier.public_key))
    # Every leaf, deleted or not, still proves into the tree; kept records still match.
    size = len(leaves)
    root = root_from_leaf_hashes(leaf_hash(s.leaf) for s in leaves)
    for stored in leaves:
        proof = await audit.inclusion_proof(stored.index, size)
        verify_inclusion(leaf_hash(stored.leaf), stored.index, size, proof, root)
    for stored in leaves[4:6]:
        opened(stored)
    # The next sweep starts at the first kept record and finds nothing more to do.
    assert await logstore.retention_cursor() == 4
    assert await audit.retention_sweep(now) == []
    assert await audit.size() == size
    # Years later the rest goes; the tombstones have no record and stay as they are.
    assert await audit.retention_sweep(utc_ms(2030, 1, 1)) == [4, 5]
    assert await audit.size() == size + 2
    assert redis_db.hlen(keyspace.log_records()) == 0
    assert redis_db.hlen(keyspace.log_salts()) == 0
    assert await logstore.retention_cursor() == size


async def test_key_records_outlive_retention_and_refuse_erasure(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    audit = world.app[AUDIT]
    await (await world.client(POLICE)).post_note(CHANNEL, Note(SECRET), MARKS)
    size = await settled_size(world)
    kinds = {s.index: EventRecord.parse(s.record).kind for s in await all_leaves(audit) if s.record}
    keys = sorted(i for i, k in kinds.items() if k in KEPT_KINDS)
    assert keys, "the world registers agencies: their cards are key records"
    # Decades later, retention deletes everything but the agencies' keys.
    deleted = await audit.retention_sweep(utc_ms(2090, 1, 1))
    assert sorted(deleted) == sorted(set(kinds) - set(keys))
    for index in keys:
        assert redis_db.hexists(keyspace.log_records(), str(index))
        assert redis_db.hexists(keyspace.log_salts(), str(index))
    # An erasure of a key record is refused, and nothing changes.
    before = await settled_size(world)
    with pytest.raises(Conflict, match="public key"):
        await audit.delete_record(keys[0], "Löschung", now_ms())
    assert redis_db.hexists(keyspace.log_records(), str(keys[0]))
    assert await settled_size(world) == before > size


# -- the cost of a proof ----------------------------------------------------------------


class CommandCountingRedis(aioredis.Redis):
    """A Redis client that records each command it sends and its number of arguments."""

    commands: list[tuple[str, int]]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append((str(args[0]).upper(), len(args) - 1))
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


async def test_each_proof_reads_a_logarithmic_number_of_stored_hashes(
    redis_url: str, redis_db: redis.Redis
) -> None:
    """Proofs come from stored perfect-subtree hashes: one GET of the size and one HMGET
    of at most about 2 * log2(n) fields, never a walk over leaves."""
    client = cast("CommandCountingRedis", CommandCountingRedis.from_url(redis_url))
    client.commands = []
    try:
        audit = AuditLog(LogStore(client), LogKey.generate(ORIGIN), checkpoint_interval_s=1.0)
        refusal = events.request_refused(
            agency=None, method="GET", path="/", problem="x", status=404, at=1
        )
        total = 3000
        store = LogStore(client)
        for _ in range(0, total, 20):  # a few connections at a time, as a hub would
            await asyncio.gather(*(store.append_inbox(refusal) for _ in range(20)))
        await audit.drain_all()
        assert await audit.size() == total
        hashes = [leaf_hash(s.leaf) for s in await all_leaves(audit)]

        def cost(size: int) -> int:
            """The node fields a proof may read in a tree of ``size`` leaves."""
            return 2 * max(1, (size - 1).bit_length()) + 2

        most = 0
        for size in (1, 2, 3, 7, 8, 9, 100, 1023, 1024, 1025, 2047, 2999, 3000):
            root = root_from_leaf_hashes(hashes[:size])
            for index in {0, 1, size // 3, size // 2, size - 2, size - 1} & set(range(size)):
                client.commands.clear()
                proof = await audit.inclusion_proof(index, size)
                reads = client.commands[:]
                verify_inclusion(hashes[index], index, size, proof, root)
                assert [name for name, _ in reads] == ["GET", "HMGET"][: len(reads)]
                fields = sum(n - 1 for name, n in reads if name == "HMGET")
                assert fields <= cost(size), (index, size, fields)
                most = max(most, fields)
            for old in {1, size // 2, size - 1} & set(range(1, size)):
                client.commands.clear()
                proof = await audit.consistency_proof(old, size)
                reads = client.commands[:]
                old_root = root_from_leaf_hashes(hashes[:old])
                verify_consistency(old, size, old_root, root, proof)
                assert [name for name, _ in reads] == ["GET", "HMGET"][: len(reads)]
                fields = sum(n - 1 for name, n in reads if name == "HMGET")
                assert fields <= cost(size), (old, size, fields)
        assert 10 <= most <= cost(total)  # proofs in 3000 leaves read a dozen-odd hashes
    finally:
        await client.aclose()
