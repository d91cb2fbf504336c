"""A poster's receipt: the hub's signed word that its note is leaf ``index`` of the log.

A receipt is what an agency keeps to hold the hub to account later: signed with the log
key (published at ``/v1/audit/key``), naming channel, message id, envelope digest, leaf
index and the leaf itself. Any later signed checkpoint must include that leaf at that
index; the inclusion proof the API serves shows it. Erasing the note's record, repeating
the post, or restarting the hub changes none of that.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis

from clients.sdk import Posted, envelope_digest
from keys import Note
from keys import errors as key_errors
from keys.checkpoint import Checkpoint
from keys.leaf import Tombstone, parse_leaf
from keys.merkle import leaf_hash, verify_inclusion
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
from tests.hub.test_audit_api import AuditApi, audit_api, sealed_checkpoint
from tests.hub.test_auditlog import SECRET
from tests.hub.test_refusals import sealed


async def check_receipt(api: AuditApi, posted: Posted, checkpoint: Checkpoint) -> None:
    """The receipt is the hub's, and its leaf is at its index in ``checkpoint``'s tree."""
    receipt = posted.receipt
    receipt.verify(posted.receipt_signature, await api.log_key())
    assert receipt.index < checkpoint.size
    proof = await api.inclusion(receipt.index, checkpoint.size)
    verify_inclusion(
        leaf_hash(receipt.leaf), receipt.index, checkpoint.size, proof, checkpoint.root_hash
    )


async def test_a_receipt_checks_against_a_later_checkpoint(world: RunningHub) -> None:
    police, city = await world.client(POLICE), await world.client(CITY)
    posted = await police.post_note(CHANNEL, Note(SECRET), MARKS)
    receipt = posted.receipt
    envelope = (await police.page_notes(CHANNEL)).notes[0].envelope
    assert (str(receipt.channel), str(receipt.message_id)) == (CHANNEL, posted.message_id)
    assert receipt.digest == envelope_digest(envelope)
    for n in range(5):  # the log moves on
        await city.post_note(CHANNEL, Note(f"{SECRET} {n}"), MARKS)
    api = await audit_api(world, PROSECUTOR)  # anyone registered may check
    later = await sealed_checkpoint(world, api)
    assert later.size >= receipt.index + 6
    await check_receipt(api, posted, later)
    [entry] = await api.leaves(receipt.index, receipt.index + 1)
    assert entry["leaf"] == receipt.leaf


async def test_a_receipt_is_the_log_keys_word_and_cannot_be_bent(world: RunningHub) -> None:
    police, city = await world.client(POLICE), await world.client(CITY)
    posted = await police.post_note(CHANNEL, Note(SECRET), MARKS)
    other = await city.post_note(CHANNEL, Note(SECRET), MARKS)
    api = await audit_api(world, CITY)
    checkpoint = await sealed_checkpoint(world, api)
    log_key = await api.log_key()
    # Another index, another note's leaf: the signature no longer holds.
    for bent in (
        dataclasses.replace(posted.receipt, index=other.index),
        dataclasses.replace(posted.receipt, leaf=other.receipt.leaf),
        dataclasses.replace(posted.receipt, digest=other.receipt.digest),
    ):
        with pytest.raises(key_errors.InvalidSignature):
            bent.verify(posted.receipt_signature, log_key)
    # Not signed by any agency key: only the log key verifies it.
    with pytest.raises(key_errors.InvalidSignature):
        posted.receipt.verify(posted.receipt_signature, identity(ADMIN).card.sign_key)
    # A leaf at another index than the receipt's does not prove in.
    proof = await api.inclusion(posted.index, checkpoint.size)
    with pytest.raises(key_errors.InvalidProof):
        verify_inclusion(
            leaf_hash(other.receipt.leaf),
            posted.index,
            checkpoint.size,
            proof,
            checkpoint.root_hash,
        )


async def test_a_repeated_post_gets_the_same_receipt_index_and_leaf(world: RunningHub) -> None:
    police = await world.client(POLICE)
    envelope = sealed(POLICE)
    first = await police.post_envelope(CHANNEL, envelope)
    again = await police.post_envelope(CHANNEL, envelope)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (again.index, again.receipt.leaf) == (first.index, first.receipt.leaf)
    api = await audit_api(world, POLICE)
    checkpoint = await sealed_checkpoint(world, api)
    await check_receipt(api, first, checkpoint)
    await check_receipt(api, again, checkpoint)


async def test_a_receipt_still_checks_after_the_notes_record_is_erased(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    posted = await police.post_note(CHANNEL, Note(SECRET), MARKS)
    admin = await audit_api(world, ADMIN)
    answer = await admin.erase(posted.index, "Löschung nach § 75 BDSG")
    checkpoint = await sealed_checkpoint(world, admin)
    await check_receipt(admin, posted, checkpoint)
    [erased, tomb] = [await admin.leaves(i, i + 1) for i in (posted.index, answer["tombstone"])]
    assert erased == [{"index": posted.index, "leaf": posted.receipt.leaf}]
    tombstone = parse_leaf(tomb[0]["leaf"])
    assert isinstance(tombstone, Tombstone) and tombstone.index == posted.index


async def test_a_receipt_from_before_a_restart_checks_after_it(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    first = await start_hub(hub_settings(tmp_path, redis_url))
    try:
        await make_world(first)
        police = await first.client(POLICE)
        posted = await police.post_note(CHANNEL, Note(SECRET), MARKS)
    finally:
        await first.stop()
    second = await start_hub(hub_settings(tmp_path, redis_url))
    try:
        city = await second.client(CITY)
        await city.post_note(CHANNEL, Note(SECRET), MARKS)
        api = await audit_api(second, CITY)
        checkpoint = await sealed_checkpoint(second, api)
        assert checkpoint.size == posted.index + 2
        await check_receipt(api, posted, checkpoint)
    finally:
        await second.stop()
