"""/v1/audit over HTTP: the log key, checkpoints, leaves, proofs and erasures.

Everything an auditor checks here it checks as a stranger to the hub would: the log key
comes from ``/v1/audit/key``, every checkpoint is opened with it
(:func:`keys.checkpoint.open_signed_checkpoint`), and every proof the API serves is
verified with :mod:`keys.merkle` against such a signed checkpoint. Refusals show their
problem type and that neither Redis nor the log changed (but for the refusal's own leaf).

:class:`AuditApi` is shared with ``test_receipts.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import msgpack
import pytest
import redis

from clients import errors as sdk
from clients.sdk import HubClient
from hub import events, keyspace
from hub.state import AUDIT
from keys import Note, now_ms
from keys import errors as key_errors
from keys._suites import VerifyKey
from keys.checkpoint import Checkpoint, NoteVerifier, open_signed_checkpoint
from keys.leaf import EventKind, EventRecord, Tombstone, check_record, parse_leaf
from keys.merkle import leaf_hash, verify_consistency, verify_inclusion
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
from tests.hub.test_auditlog import SECRET, raw_hash, settled_size
from tests.hub.test_refusals import (
    Answer,
    assert_problem,
    http_session,
    nothing_written,
    signed,
)

_http = pytest.fixture(http_session, name="http")

AUDITOR = "bfdi-pruefung"
MSGPACK = "application/msgpack"


# -- the auditor's view of the API ----------------------------------------------------


@dataclass
class AuditApi:
    """/v1/audit as seen through one agency's signed requests."""

    client: HubClient

    async def _get(self, path: str, **params: int) -> Any:
        query = [(name, str(value)) for name, value in params.items()]
        response = await self.client.transport.request("GET", path, params=query)
        return response.msgpack()

    async def verifier(self) -> NoteVerifier:
        """The log's verifier, from ``/v1/audit/key``."""
        answer = await self._get("/v1/audit/key")
        verifier = NoteVerifier.parse(answer["verifier_key"])
        assert verifier.name == answer["origin"]
        return verifier

    async def log_key(self) -> VerifyKey:
        """The public log key that signs tombstones and receipts."""
        return VerifyKey((await self.verifier()).public_key)

    async def checkpoint(self) -> Checkpoint:
        """The latest checkpoint, its signature checked with the published key."""
        response = await self.client.transport.request("GET", "/v1/audit/checkpoint")
        return open_signed_checkpoint(response.body, await self.verifier())

    async def checkpoint_at(self, size: int) -> Checkpoint:
        """The checkpoint signed at ``size``, its signature checked."""
        response = await self.client.transport.request("GET", f"/v1/audit/checkpoints/{size}")
        checkpoint = open_signed_checkpoint(response.body, await self.verifier())
        assert checkpoint.size == size
        return checkpoint

    async def leaves(self, start: int, end: int) -> list[dict[str, Any]]:
        answer = await self._get("/v1/audit/leaves", start=start, end=end)
        assert (answer["start"], answer["end"]) == (start, end)
        return cast("list[dict[str, Any]]", answer["leaves"])

    async def inclusion(self, index: int, size: int) -> list[bytes]:
        answer = await self._get("/v1/audit/proofs/inclusion", index=index, size=size)
        assert (answer["index"], answer["size"]) == (index, size)
        return cast("list[bytes]", answer["proof"])

    async def consistency(self, old: int, new: int) -> list[bytes]:
        answer = await self._get("/v1/audit/proofs/consistency", old=old, new=new)
        assert (answer["old"], answer["new"]) == (old, new)
        return cast("list[bytes]", answer["proof"])

    async def erase(self, index: int, reason: str) -> dict[str, Any]:
        body = msgpack.packb({"index": index, "reason": reason})
        response = await self.client.transport.request(
            "POST", "/v1/audit/erasures", body=body, content_type=MSGPACK
        )
        assert response.status == 201
        return cast("dict[str, Any]", response.msgpack())

    async def check_all_included(self, checkpoint: Checkpoint) -> list[dict[str, Any]]:
        """Every leaf up to ``checkpoint`` is proved into it; the leaves."""
        leaves = await self.leaves(0, checkpoint.size)
        assert [entry["index"] for entry in leaves] == list(range(checkpoint.size))
        for entry in leaves:
            proof = await self.inclusion(entry["index"], checkpoint.size)
            verify_inclusion(
                leaf_hash(entry["leaf"]),
                entry["index"],
                checkpoint.size,
                proof,
                checkpoint.root_hash,
            )
        return leaves


async def audit_api(hub: RunningHub, agency: str) -> AuditApi:
    return AuditApi(await hub.client(agency))


async def with_auditor(hub: RunningHub) -> AuditApi:
    """Register the data-protection auditor and act as it."""
    admin = await hub.client(ADMIN)
    await admin.register_agency(identity(AUDITOR).card, kind="auditor")
    return await audit_api(hub, AUDITOR)


async def sealed_checkpoint(hub: RunningHub, api: AuditApi) -> Checkpoint:
    """Have the hub sequence what is pending and sign; then read it as an auditor."""
    audit = hub.app[AUDIT]
    await audit.drain_all()
    await audit.sign_checkpoint()
    checkpoint = await api.checkpoint()
    assert checkpoint.size == await audit.size()
    return checkpoint


def decoded(answer: Answer) -> Any:
    assert answer.content_type == MSGPACK, answer
    return msgpack.unpackb(answer.body)


# -- key and checkpoints ---------------------------------------------------------------


async def test_the_published_key_opens_the_checkpoints_and_no_other_key_does(
    world: RunningHub,
) -> None:
    api = await audit_api(world, POLICE)
    verifier = await api.verifier()
    assert str(verifier) == world.app[AUDIT].key.verifier_key
    checkpoint = await sealed_checkpoint(world, api)
    assert checkpoint.origin == verifier.name
    response = await api.client.transport.request("GET", "/v1/audit/checkpoint")
    impostor = NoteVerifier(verifier.name, identity(ADMIN).signing.public.raw)
    with pytest.raises(key_errors.InvalidSignature):
        open_signed_checkpoint(response.body, impostor)


async def test_a_checkpoint_never_signed_is_not_found(
    world: RunningHub, redis_db: redis.Redis, http: aiohttp.ClientSession
) -> None:
    await sealed_checkpoint(world, await audit_api(world, POLICE))
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", "/v1/audit/checkpoints/999999")
    assert_problem(answer, 404, "not-found", "999999")


async def test_the_checkpoint_is_resigned_at_least_every_second_while_the_log_grows(
    hub: RunningHub,
) -> None:
    assert hub.settings.checkpoint_interval_s == 1.0  # the default
    api = await audit_api(hub, ADMIN)
    audit = hub.app[AUDIT]
    grown: list[tuple[float, int]] = []  # (when, log size reached)
    seen: list[tuple[float, int]] = []  # (when, latest checkpoint's size)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 4.0:
        await audit.append(
            events.request_refused(
                agency=None, method="GET", path=f"/n/{n}", problem="x", status=404, at=now_ms()
            )
        )
        grown.append((time.monotonic(), await audit.size()))
        seen.append((time.monotonic(), (await api.checkpoint()).size))
        n += 1
        await asyncio.sleep(0.05)
    # At every moment, the checkpoint covers what the log held 1 s (+ slack for two
    # shared cores) before: it was re-signed at least every second.
    slack = 0.6
    for when, size in seen:
        due = max((s for t, s in grown if t <= when - 1.0 - slack), default=0)
        assert size >= due, f"checkpoint of {size} at {when - started:.2f}s, {due} due"
    sizes = {size for _, size in seen}
    assert len(sizes) >= 3  # it moved with the log, not once


# -- proofs ----------------------------------------------------------------------------


async def test_proofs_verify_against_signed_checkpoints_for_many_sizes(world: RunningHub) -> None:
    api = await with_auditor(world)
    audit = world.app[AUDIT]
    police = await world.client(POLICE)
    sizes = [await settled_size(world)]
    await audit.sign_checkpoint()
    # Grow one leaf at a time (notes, then refusals), signing a checkpoint at each size.
    for n in range(26):
        if n < 8:
            await police.post_note(CHANNEL, Note(f"{SECRET} {n}"), MARKS)
        else:
            await audit.append(
                events.request_refused(
                    agency=None, method="GET", path=f"/{n}", problem="x", status=404, at=n
                )
            )
        await audit.drain_all()
        await audit.sign_checkpoint()
        sizes.append(await audit.size())
    assert sizes == list(range(sizes[0], sizes[0] + 27))
    checkpoints = {size: await api.checkpoint_at(size) for size in sizes}
    leaves = [entry["leaf"] for entry in await api.leaves(0, sizes[-1])]
    for size, checkpoint in checkpoints.items():
        for index in range(size):
            proof = await api.inclusion(index, size)
            verify_inclusion(leaf_hash(leaves[index]), index, size, proof, checkpoint.root_hash)
    for old in sizes:
        for new in sizes[sizes.index(old) :: 3]:
            proof = await api.consistency(old, new)
            old_root, new_root = checkpoints[old].root_hash, checkpoints[new].root_hash
            verify_consistency(old, new, old_root, new_root, proof)
    # The checks can fail: another leaf, another index or another root is refused.
    last = checkpoints[sizes[-1]]
    proof = await api.inclusion(3, last.size)
    with pytest.raises(key_errors.InvalidProof):
        verify_inclusion(leaf_hash(leaves[4]), 3, last.size, proof, last.root_hash)
    with pytest.raises(key_errors.InvalidProof):
        verify_inclusion(leaf_hash(leaves[3]), 3, last.size, proof, checkpoints[sizes[0]].root_hash)
    proof = await api.consistency(sizes[0], last.size)
    with pytest.raises(key_errors.InvalidProof):
        verify_consistency(sizes[0], last.size, last.root_hash, last.root_hash, proof)


async def test_proofs_in_a_large_log_verify(world: RunningHub) -> None:
    api = await audit_api(world, PROSECUTOR)
    audit = world.app[AUDIT]
    checkpoints: dict[int, Checkpoint] = {}
    for target in (63, 64, 65, 127, 128, 129, 333):
        while await settled_size(world) < target:
            await audit.append(
                events.request_refused(
                    agency=None, method="GET", path="/x", problem="x", status=404, at=1
                )
            )
        await audit.sign_checkpoint()
        checkpoints[target] = await api.checkpoint_at(target)
    leaves = [entry["leaf"] for entry in await api.leaves(0, 333)]
    for size, checkpoint in checkpoints.items():
        for index in {0, 1, size // 2, size - 2, size - 1, 62, 63, 64} - {size, size + 1}:
            if index < size:
                proof = await api.inclusion(index, size)
                verify_inclusion(leaf_hash(leaves[index]), index, size, proof, checkpoint.root_hash)
        for old, earlier in checkpoints.items():
            if old <= size:
                proof = await api.consistency(old, size)
                verify_consistency(old, size, earlier.root_hash, checkpoint.root_hash, proof)


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("proofs/inclusion?index=5&size=5", "below the tree size"),
        ("proofs/inclusion?index=0&size=99999", "leaves"),
        ("proofs/inclusion?index=-1&size=3", "'index'"),
        ("proofs/inclusion?size=3", "'index'"),
        ("proofs/inclusion?index=%C2%B2&size=3", "'index'"),
        ("proofs/inclusion?index=0&size=99999999999999999999", "'size'"),
        ("checkpoints/%C2%B2", "size"),
        ("proofs/consistency?old=4&new=3", "old size"),
        ("proofs/consistency?old=1&new=99999", "leaves"),
        ("proofs/consistency?old=x&new=3", "'old'"),
        ("leaves?start=3&end=2", "start"),
        ("leaves?start=0&end=99999", "start"),
    ],
)
async def test_proof_and_leaf_requests_out_of_range_are_refused(
    world: RunningHub, redis_db: redis.Redis, http: aiohttp.ClientSession, query: str, needle: str
) -> None:
    await settled_size(world)
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", f"/v1/audit/{query}")
    assert_problem(answer, 400, "bad-request", needle)


# -- leaves and who sees records -------------------------------------------------------


async def test_only_auditors_and_administrators_get_records(world: RunningHub) -> None:
    auditor = await with_auditor(world)
    police = await world.client(POLICE)
    await police.post_note(CHANNEL, Note(SECRET), MARKS)
    size = await settled_size(world)
    for agency in (AUDITOR, ADMIN):
        entries = await (await audit_api(world, agency)).leaves(0, size)
        assert all(set(e) == {"index", "leaf", "record", "salt"} for e in entries)
        for entry in entries:
            check_record(entry["leaf"], entry["record"], entry["salt"])
        kinds = [EventRecord.parse(e["record"]).kind for e in entries]
        assert kinds[-1] is EventKind.NOTE_ACCEPTED
    for agency in (POLICE, PROSECUTOR, CITY):
        entries = await (await audit_api(world, agency)).leaves(0, size)
        assert [e["index"] for e in entries] == list(range(size))
        assert all(set(e) == {"index", "leaf"} for e in entries), agency
        assert [e["leaf"] for e in entries] == [e["leaf"] for e in await auditor.leaves(0, size)]


# -- erasures --------------------------------------------------------------------------


@contextlib.contextmanager
def records_kept(client: redis.Redis) -> Iterator[None]:
    """The block deletes no record and no salt of the log."""
    records = raw_hash(client, keyspace.log_records())
    salts = raw_hash(client, keyspace.log_salts())
    yield
    after_records = raw_hash(client, keyspace.log_records())
    assert {k: v for k, v in after_records.items() if k in records} == records
    assert raw_hash(client, keyspace.log_salts()).items() >= salts.items()


async def no_tombstone_since(hub: RunningHub, size: int) -> None:
    """Since ``size``, the log only grew by refusals (no tombstone, nothing else)."""
    audit = hub.app[AUDIT]
    await audit.drain_all()
    for stored in await audit.leaves(size, await audit.size()):
        assert not isinstance(parse_leaf(stored.leaf), Tombstone), stored.index
        assert stored.record is not None
        assert EventRecord.parse(stored.record).kind is EventKind.REQUEST_REFUSED


async def test_an_erasure_deletes_the_record_and_logs_a_signed_tombstone(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    posted = await police.post_note(CHANNEL, Note(SECRET), MARKS)
    await police.post_note(CHANNEL, Note(SECRET + " 2"), MARKS)
    admin = await audit_api(world, ADMIN)
    before = await sealed_checkpoint(world, admin)
    answer = await admin.erase(posted.index, "Antrag nach Art. 17 DSGVO, Az. 4711")
    assert answer == {"index": posted.index, "tombstone": before.size}
    assert not redis_db.hexists(keyspace.log_records(), str(posted.index))
    assert not redis_db.hexists(keyspace.log_salts(), str(posted.index))
    after = await sealed_checkpoint(world, admin)
    assert after.size == before.size + 1
    leaves = await admin.check_all_included(after)  # every leaf, the erased one too
    erased = leaves[posted.index]
    assert set(erased) == {"index", "leaf"} and erased["leaf"] == posted.receipt.leaf
    tombstone = parse_leaf(leaves[before.size]["leaf"])
    assert isinstance(tombstone, Tombstone)
    assert tombstone.index == posted.index
    assert tombstone.reason == "erasure: Antrag nach Art. 17 DSGVO, Az. 4711"
    tombstone.verify(await admin.log_key())
    for entry in leaves:
        if entry["index"] not in (posted.index, before.size):
            check_record(entry["leaf"], entry["record"], entry["salt"])
    proof = await admin.consistency(before.size, after.size)
    verify_consistency(before.size, after.size, before.root_hash, after.root_hash, proof)


async def erasure(
    http: aiohttp.ClientSession, hub: RunningHub, body: bytes, signer: str = ADMIN
) -> Answer:
    return await signed(
        http,
        hub,
        "POST",
        "/v1/audit/erasures",
        body,
        content_type="application/json",
        signer=identity(signer),
    )


@pytest.mark.parametrize("who", [POLICE, AUDITOR])
async def test_only_an_administrator_may_erase(
    world: RunningHub, redis_db: redis.Redis, http: aiohttp.ClientSession, who: str
) -> None:
    await with_auditor(world)
    size = await settled_size(world)
    body = json.dumps({"index": 1, "reason": "weg damit"}).encode()
    with records_kept(redis_db), nothing_written(redis_db, nonces=1):
        answer = await erasure(http, world, body, signer=who)
    assert_problem(answer, 403, "forbidden", who, "administrator")
    await no_tombstone_since(world, size)


async def test_erasing_what_is_not_there_is_refused_and_changes_nothing(
    world: RunningHub, redis_db: redis.Redis, http: aiohttp.ClientSession
) -> None:
    api = await audit_api(world, ADMIN)
    note = (await (await world.client(POLICE)).post_note(CHANNEL, Note(SECRET), MARKS)).index
    tomb = (await api.erase(note, "Löschung"))["tombstone"]
    size = await settled_size(world)
    cases = [
        (size + 10, "no leaf"),  # unknown index
        (note, "already deleted"),  # erased before
        (tomb, "already deleted"),  # a tombstone has no record of its own
    ]
    for index, needle in cases:
        body = json.dumps({"index": index, "reason": "noch einmal"}).encode()
        with records_kept(redis_db), nothing_written(redis_db, nonces=1):
            answer = await erasure(http, world, body)
        assert_problem(answer, 404, "not-found", str(index), needle)
    await no_tombstone_since(world, size)
    assert await settled_size(world) == size + len(cases)  # only the refusals


async def test_a_key_record_is_not_erased_and_nothing_changes(
    world: RunningHub, redis_db: redis.Redis, http: aiohttp.ClientSession
) -> None:
    size = await settled_size(world)
    body = json.dumps({"index": 1, "reason": "Löschung"}).encode()  # pp-duisburg's card
    with records_kept(redis_db), nothing_written(redis_db, nonces=1):
        answer = await erasure(http, world, body)
    assert_problem(answer, 409, "conflict", "leaf 1", "public key")
    await no_tombstone_since(world, size)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"index": 1}, "'reason'"),
        ({"index": 1, "reason": ""}, "reason"),
        ({"index": 1, "reason": "x" * 201}, "reason"),
        ({"reason": "weg"}, "'index'"),
        ({"index": "1", "reason": "weg"}, "'index'"),
        ({"index": -1, "reason": "weg"}, "no leaf"),
    ],
)
async def test_a_malformed_erasure_is_refused_and_changes_nothing(
    world: RunningHub,
    redis_db: redis.Redis,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    needle: str,
) -> None:
    size = await settled_size(world)
    with records_kept(redis_db), nothing_written(redis_db, nonces=1):
        answer = await erasure(http, world, json.dumps(body).encode())
    status, slug = (404, "not-found") if needle == "no leaf" else (400, "bad-request")
    assert_problem(answer, status, slug, needle)
    await no_tombstone_since(world, size)


async def test_the_sdk_sees_an_erasure_refusal_as_its_problem(world: RunningHub) -> None:
    api = await audit_api(world, CITY)
    with pytest.raises(sdk.Forbidden):
        await api.erase(1, "weg")


# -- a restarted hub -------------------------------------------------------------------


async def test_proofs_across_a_hub_restart_verify(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    first = await start_hub(hub_settings(tmp_path, redis_url))
    try:
        await make_world(first)
        police = await first.client(POLICE)
        await police.post_note(CHANNEL, Note(SECRET), MARKS)
        api = await audit_api(first, PROSECUTOR)
        old = await sealed_checkpoint(first, api)
        old_key = str(await api.verifier())
        old_proofs = [await api.inclusion(i, old.size) for i in range(old.size)]
    finally:
        await first.stop()

    second = await start_hub(hub_settings(tmp_path, redis_url))
    try:
        api = await audit_api(second, PROSECUTOR)
        assert str(await api.verifier()) == old_key
        assert await api.checkpoint_at(old.size) == old  # the old checkpoint is still served
        city = await second.client(CITY)
        await city.post_note(CHANNEL, Note(SECRET), MARKS)
        new = await sealed_checkpoint(second, api)
        assert new.size == old.size + 1
        proof = await api.consistency(old.size, new.size)
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        leaves = await api.check_all_included(new)
        for index, proof in enumerate(old_proofs):
            verify_inclusion(
                leaf_hash(leaves[index]["leaf"]), index, old.size, proof, old.root_hash
            )
    finally:
        await second.stop()
