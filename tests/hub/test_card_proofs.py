"""GET /v1/audit/cards/{key id}, and the SDK refusing to seal for a card the log lacks.

The route serves the record that registered a card with its salt, leaf, a checkpoint
covering it and the inclusion proof; these tests verify each answer as a client does,
with :mod:`keys` alone. Then they play the malicious operator against
:meth:`clients.sdk.HubClient.post`: a card written straight into Redis (never logged),
a record altered in storage, a checkpoint signed by another key, a log key changed
after the client pinned it. Each time the post raises ``CardRefused`` and no note is
stored.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from clients.keylog import CardEntry, CardRefused, verify_card_logged
from clients.sdk import HubClient
from clients.state import StateFile
from hub import keyspace
from hub.records import AgencyRecord
from hub.state import AUDIT
from keys import AgencyCard, Identity, Note, Suite
from keys.checkpoint import NoteVerifier
from keys.leaf import EventKind, EventRecord, check_record
from keys.logkey import LogKey
from keys.merkle import leaf_hash, verify_inclusion
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    CITY,
    POLICE,
    PROSECUTOR,
    RunningHub,
    hub_settings,
    identity,
    start_hub,
)
from tests.hub.test_refusals import (
    MARKS,
    assert_problem,
    http_session,
    nothing_written,
    signed,
)

_http = pytest.fixture(http_session, name="http")

NOTES_KEY = keyspace.channel_notes(CHANNEL)


async def card_entry(client: HubClient, key_id: str) -> CardEntry:
    response = await client.transport.request("GET", f"/v1/audit/cards/{key_id}")
    return CardEntry.from_answer(response.msgpack())


async def log_verifier(client: HubClient) -> NoteVerifier:
    answer: Any = (await client.transport.request("GET", "/v1/audit/key")).msgpack()
    return NoteVerifier.parse(answer["verifier_key"])


async def sdk_client(
    hub: RunningHub, agency: str, *, state: Path | None = None, log_key: str | None = None
) -> HubClient:
    made = HubClient(
        hub.base_url,
        identity(agency),
        state=StateFile(state) if state else None,
        log_key=log_key,
    )
    await made.__aenter__()
    hub.clients.append(made)
    return made


# -- the route ---------------------------------------------------------------------


async def test_every_card_is_served_with_its_record_proved_into_a_signed_checkpoint(
    world: RunningHub,
) -> None:
    police = await world.client(POLICE)
    verifier = await log_verifier(police)
    rotated = Identity.generate(PROSECUTOR, suite=Suite.X25519)
    await (await world.client(ADMIN)).add_card(PROSECUTOR, rotated.card)
    cards = [identity(a).card for a in (POLICE, PROSECUTOR, CITY)] + [rotated.card]
    for card in cards:
        entry = await card_entry(police, str(card.key_id))
        checkpoint = verify_card_logged(card, entry, verifier)
        # The same checks, spelled out with keys/ alone:
        assert checkpoint.size > entry.index
        check_record(entry.leaf, entry.record, entry.salt)
        verify_inclusion(
            leaf_hash(entry.leaf), entry.index, checkpoint.size, entry.proof, checkpoint.root_hash
        )
        record = EventRecord.parse(entry.record)
        expected = EventKind.KEY_ADDED if card is rotated.card else EventKind.AGENCY_REGISTERED
        assert record.kind is expected
        assert record.fields["card"] == card.serialize()


async def test_a_card_registered_a_moment_ago_is_proved_at_once(hub: RunningHub) -> None:
    admin = await hub.client(ADMIN)
    await admin.register_agency(identity(CITY).card)
    entry = await card_entry(admin, str(identity(CITY).key_id))  # no wait for the checkpointer
    checkpoint = verify_card_logged(identity(CITY).card, entry, await log_verifier(admin))
    assert checkpoint.size > entry.index


async def test_a_status_change_keeps_the_card_pointing_at_its_registration(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    key_id = str(identity(CITY).key_id)
    before = redis_db.hget(keyspace.card_events(), key_id)
    admin = await world.client(ADMIN)
    await admin.set_status(CITY, "suspended")
    await admin.set_status(CITY, "active")
    assert redis_db.hget(keyspace.card_events(), key_id) == before
    entry = await card_entry(await world.client(POLICE), key_id)
    assert EventRecord.parse(entry.record).kind is EventKind.AGENCY_REGISTERED


@pytest.mark.parametrize(
    "key_id",
    ["abc", "0" * 31, "0" * 33, "A" * 32, "g" * 32, "%20" + "0" * 29],
)
async def test_a_malformed_key_id_is_refused_and_changes_nothing(
    world: RunningHub, redis_db: redis.Redis, http: aiohttp.ClientSession, key_id: str
) -> None:
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", f"/v1/audit/cards/{key_id}")
    assert_problem(answer, 400, "bad-request", "32 lower-case hex")


async def test_an_unknown_key_id_is_not_found_and_changes_nothing(
    world: RunningHub, redis_db: redis.Redis, http: aiohttp.ClientSession
) -> None:
    unknown = secrets.token_hex(16)
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", f"/v1/audit/cards/{unknown}")
    assert_problem(answer, 404, "not-found", unknown, "no card")


async def test_a_card_with_no_indexed_event_is_not_found_and_changes_nothing(
    world: RunningHub, redis_db: redis.Redis, http: aiohttp.ClientSession
) -> None:
    key_id = str(identity(CITY).key_id)
    redis_db.hdel(keyspace.card_events(), key_id)  # as for a card registered before the index
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", f"/v1/audit/cards/{key_id}")
    assert_problem(answer, 404, "not-found", key_id, "predates")


async def test_a_card_whose_record_is_gone_is_not_found_and_changes_nothing(
    world: RunningHub, redis_db: redis.Redis, http: aiohttp.ClientSession
) -> None:
    # The hub never deletes a key record (hub.auditlog.KEPT_KINDS): only an operator
    # removing it by hand, or a log older than that rule, can lack one.
    key_id = str(identity(CITY).key_id)
    index = (await card_entry(await world.client(POLICE), key_id)).index
    redis_db.hdel(keyspace.log_records(), str(index))
    redis_db.hdel(keyspace.log_salts(), str(index))
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", f"/v1/audit/cards/{key_id}")
    assert_problem(answer, 404, "not-found", key_id, f"leaf {index}", "deleted")


# -- the SDK against a malicious operator ---------------------------------------------


async def test_a_post_confirms_each_reader_card_once_and_pins_the_log(
    world: RunningHub, tmp_path: Path, redis_db: redis.Redis
) -> None:
    path = tmp_path / "police.json"
    police = await sdk_client(world, POLICE, state=path)
    await police.post(CHANNEL, Note("eins"), MARKS)
    state = StateFile(path).load()
    readers = (POLICE, PROSECUTOR, CITY)
    assert state.logged == {str(identity(a).key_id): a for a in readers}
    assert state.log_key == world.app[AUDIT].key.verifier_key
    assert state.log_checkpoint.startswith(world.app[AUDIT].key.origin + "\n")
    # Confirmed cards are not asked for again: the hub could not answer any more now.
    redis_db.delete(keyspace.card_events())
    await police.post(CHANNEL, Note("zwei"), MARKS)
    again = await sdk_client(world, POLICE, state=path)  # a new process, the same state
    await again.post(CHANNEL, Note("drei"), MARKS)
    assert redis_db.xlen(NOTES_KEY) == 3
    with pytest.raises(CardRefused, match="no registration"):  # no state: asks, and refuses
        await (await sdk_client(world, POLICE)).post(CHANNEL, Note("vier"), MARKS)
    assert redis_db.xlen(NOTES_KEY) == 3


def stored(redis_db: redis.Redis, key: str, name: str) -> bytes:
    value = redis_db.hget(key, name)
    assert isinstance(value, bytes), (key, name)
    return value


def swap_in(redis_db: redis.Redis, card: AgencyCard) -> None:
    """The operator's move: its own card for an agency, written straight into Redis."""
    old = AgencyRecord.parse(stored(redis_db, keyspace.agencies(), str(card.agency)))
    new = AgencyRecord(old.agency, old.kind, old.status, (*old.key_ids, card.key_id), 0)
    redis_db.hset(keyspace.cards(), str(card.key_id), card.serialize())
    redis_db.hset(keyspace.agencies(), str(card.agency), new.serialize())


async def test_a_card_that_was_never_logged_is_refused_and_nothing_is_posted(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await sdk_client(world, POLICE)
    swap_in(redis_db, Identity.generate(PROSECUTOR, suite=Suite.X25519).card)
    with nothing_written(redis_db, nonces=None), pytest.raises(CardRefused) as exc:
        await police.post(CHANNEL, Note("darf nicht raus"), MARKS)
    assert "no registration of sta-essen's key" in str(exc.value)
    assert "Nothing was posted" in str(exc.value)
    assert redis_db.xlen(NOTES_KEY) == 0


async def test_a_card_pointed_at_another_cards_registration_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await sdk_client(world, POLICE)
    fake = Identity.generate(PROSECUTOR, suite=Suite.X25519).card
    swap_in(redis_db, fake)
    genuine = stored(redis_db, keyspace.card_events(), str(identity(PROSECUTOR).key_id))
    redis_db.hset(keyspace.card_events(), str(fake.key_id), genuine)
    with nothing_written(redis_db, nonces=None, refusals=0), pytest.raises(CardRefused) as exc:
        await police.post(CHANNEL, Note("darf nicht raus"), MARKS)
    assert "never logged, or was swapped" in str(exc.value)
    assert redis_db.xlen(NOTES_KEY) == 0


async def test_a_record_altered_in_storage_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await sdk_client(world, POLICE)
    index = (await card_entry(police, str(identity(CITY).key_id))).index
    record = stored(redis_db, keyspace.log_records(), str(index))
    redis_db.hset(keyspace.log_records(), str(index), record.replace(b"admin-lka", b"admin-lkb"))
    with nothing_written(redis_db, nonces=None, refusals=0), pytest.raises(CardRefused) as exc:
        await police.post(CHANNEL, Note("darf nicht raus"), MARKS)
    assert "does not match its leaf" in str(exc.value)
    redis_db.hset(keyspace.log_records(), str(index), record)
    redis_db.hset(keyspace.log_salts(), str(index), bytes(32))
    with pytest.raises(CardRefused, match="does not match its leaf"):
        await police.post(CHANNEL, Note("darf nicht raus"), MARKS)
    assert redis_db.xlen(NOTES_KEY) == 0


async def test_a_checkpoint_not_signed_by_the_given_log_key_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    other = LogKey.generate(world.app[AUDIT].key.origin)
    police = await sdk_client(world, POLICE, log_key=other.verifier_key)
    with nothing_written(redis_db, nonces=None, refusals=0), pytest.raises(CardRefused) as exc:
        await police.post(CHANNEL, Note("darf nicht raus"), MARKS)
    assert "not signed by the log key you trust" in str(exc.value)
    right = await sdk_client(world, POLICE, log_key=world.app[AUDIT].key.verifier_key)
    await right.post(CHANNEL, Note("jetzt"), MARKS)
    assert redis_db.xlen(NOTES_KEY) == 1


async def test_a_log_key_changed_after_first_use_is_refused(
    world: RunningHub, tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    path = tmp_path / "police.json"
    await (await sdk_client(world, POLICE, state=path)).post(CHANNEL, Note("eins"), MARKS)
    pinned = StateFile(path).load().log_key
    await world.stop()
    # The operator restarts the hub with a log key of its own (same Redis, same origin).
    other = await start_hub(hub_settings(tmp_path, redis_url, data_dir=tmp_path / "other"))
    try:
        assert other.app[AUDIT].key.verifier_key != pinned
        admin = await other.client(ADMIN)
        rotated = Identity.generate(CITY, suite=Suite.X25519)
        await admin.add_card(CITY, rotated.card)  # a card the client has not confirmed
        await other.app[AUDIT].drain_all()
        await other.app[AUDIT].sign_checkpoint()
        police = await sdk_client(other, POLICE, state=path)
        with pytest.raises(CardRefused, match="not signed by the log key you trust"):
            await police.post(CHANNEL, Note("darf nicht raus"), MARKS)
        assert redis_db.xlen(NOTES_KEY) == 1
        assert StateFile(path).load().log_key == pinned
        # Giving the new key explicitly does not silently replace the pin either.
        told = await sdk_client(
            other, POLICE, state=path, log_key=other.app[AUDIT].key.verifier_key
        )
        with pytest.raises(CardRefused, match="differs from the one pinned"):
            await told.post(CHANNEL, Note("darf nicht raus"), MARKS)
        assert redis_db.xlen(NOTES_KEY) == 1
    finally:
        await other.stop()


async def test_a_log_that_does_not_extend_the_pinned_checkpoint_is_refused(
    world: RunningHub, tmp_path: Path, redis_db: redis.Redis
) -> None:
    path = tmp_path / "police.json"
    await (await sdk_client(world, POLICE, state=path)).post(CHANNEL, Note("eins"), MARKS)
    # Replace the pin by a checkpoint of the same log key over another history.
    key = world.app[AUDIT].key
    state = StateFile(path).load()
    size = int(state.log_checkpoint.split("\n")[1])
    forged = key.sign_checkpoint(size, bytes(32)).decode()
    StateFile(path).update(lambda s: setattr(s, "log_checkpoint", forged))
    rotated = Identity.generate(CITY, suite=Suite.X25519)
    await (await world.client(ADMIN)).add_card(CITY, rotated.card)
    police = await sdk_client(world, POLICE, state=path)
    with pytest.raises(CardRefused, match="a fork"):
        await police.post(CHANNEL, Note("darf nicht raus"), MARKS)
    assert redis_db.xlen(NOTES_KEY) == 1


async def test_the_route_is_in_the_openapi_document(hub: RunningHub) -> None:
    admin = await hub.client(ADMIN)
    document: Any = (await admin.transport.request("GET", "/v1/openapi.json")).json()
    operation = document["paths"]["/v1/audit/cards/{key_id}"]["get"]
    assert "registered a card" in operation["summary"]
    assert operation["security"] == [{"httpSignature": []}]
