"""/v1/agencies and /v1/cards: registration, status, key rotation, and every refusal.

Administrator acts are refused for agencies; bodies that are not a map of the right
fields (msgpack or JSON) are refused before anything is looked up; unknown agencies and
cards are 404; a second registration and a card registered twice are 409. Each refusal
checks status, problem type, detail and that Redis did not change (test_refusals.py).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import msgpack
import pytest
import redis

from clients import errors as sdk
from clients.sdk import HubClient
from keys import Identity, Suite, codec
from tests.hub.conftest import ADMIN, CITY, POLICE, PROSECUTOR, RunningHub, identity
from tests.hub.test_refusals import (
    assert_problem,
    assert_sdk_problem,
    http_session,
    nothing_written,
    signed,
)

_http = pytest.fixture(http_session, name="http")

NEWCOMER = "stadt-bochum"
MSGPACK = "application/msgpack"


def broken_card(agency: str = NEWCOMER) -> bytes:
    """A card whose self-signature does not verify (one bit of the signature flipped)."""
    outer = codec.decode(identity(agency).card.serialize(), max_bytes=4096)
    assert isinstance(outer, dict)
    assert isinstance(outer["sig"], bytes)
    signature = bytearray(outer["sig"])
    signature[0] ^= 0x01
    return codec.encode({**outer, "sig": bytes(signature)})


async def admin_post(
    hub: RunningHub, path: str, body: bytes, content_type: str | None = MSGPACK
) -> Any:
    admin = await hub.client(ADMIN)
    return await admin.transport.request("POST", path, body=body, content_type=content_type)


# -- the directory as it should work ------------------------------------------------------


async def test_register_then_list_get_and_fetch_the_card(world: RunningHub) -> None:
    admin = await world.client(ADMIN)
    card = identity(NEWCOMER).card
    entry = await admin.register_agency(card)
    assert entry["agency"] == NEWCOMER and entry["kind"] == "agency"
    assert entry["status"] == "active" and entry["key_id"] == str(card.key_id)
    assert entry["keys"] == [str(card.key_id)]
    assert entry["fingerprint"] == card.key_id.fingerprint()
    police = await world.client(POLICE)
    listed = {a["agency"]: a for a in await police.agencies()}
    assert set(listed) == {ADMIN, POLICE, PROSECUTOR, CITY, NEWCOMER}
    assert listed[ADMIN]["kind"] == "admin"
    assert await police.card(str(card.key_id)) == card


async def test_a_card_registers_from_json_too(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:

    card = base64.urlsafe_b64encode(identity(NEWCOMER).card.serialize()).rstrip(b"=").decode()
    body = json.dumps({"card": card, "kind": "agency"}).encode()
    answer = await signed(
        http,
        world,
        "POST",
        "/v1/agencies",
        body,
        content_type="application/json",
        signer=identity(ADMIN),
    )
    assert answer.status == 201 and json.loads(answer.body)["agency"] == NEWCOMER


async def test_an_agency_rotates_its_own_key_and_old_cards_stay_readable(
    world: RunningHub,
) -> None:
    rotated = Identity.generate(CITY, suite=Suite.X25519)
    city = await world.client(CITY)
    entry = await city.add_card(CITY, rotated.card)
    assert entry["key_id"] == str(rotated.key_id)
    assert entry["keys"] == [str(identity(CITY).key_id), str(rotated.key_id)]
    async with HubClient(world.base_url, rotated) as fresh:
        assert await fresh.card(str(identity(CITY).key_id)) == identity(CITY).card


async def test_an_administrator_suspends_and_reactivates(world: RunningHub) -> None:
    admin = await world.client(ADMIN)
    assert (await admin.set_status(CITY, "suspended"))["status"] == "suspended"
    with pytest.raises(sdk.AgencySuspended):
        await (await world.client(CITY)).agencies()
    assert (await admin.set_status(CITY, "active"))["status"] == "active"
    assert await (await world.client(CITY)).agencies()


# -- administrators only ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["agency", "admin", "auditor"])
async def test_an_agency_may_not_register_anyone(
    world: RunningHub, redis_db: redis.Redis, kind: str
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Forbidden) as excinfo:
        await police.register_agency(identity(NEWCOMER).card, kind=kind)
    assert_sdk_problem(excinfo, 403, "forbidden", POLICE, "administrator")


async def test_an_agency_may_not_suspend_another(world: RunningHub, redis_db: redis.Redis) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Forbidden) as excinfo:
        await police.set_status(CITY, "suspended")
    assert_sdk_problem(excinfo, 403, "forbidden", "administrator")


async def test_an_agency_may_not_rotate_another_agencys_key(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    police = await world.client(POLICE)
    forged = Identity.generate(CITY, suite=Suite.X25519)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Forbidden) as excinfo:
        await police.add_card(CITY, forged.card)
    assert_sdk_problem(excinfo, 403, "forbidden", POLICE, "administrator")


async def test_an_administrator_may_not_change_its_own_status(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Forbidden) as excinfo:
        await admin.set_status(ADMIN, "suspended")
    assert_sdk_problem(excinfo, 403, "forbidden", "own status")


# -- conflicts ----------------------------------------------------------------------------


@pytest.mark.parametrize("agency", [POLICE, ADMIN])
async def test_registering_twice_is_a_conflict(
    world: RunningHub, redis_db: redis.Redis, agency: str
) -> None:
    admin = await world.client(ADMIN)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Conflict) as excinfo:
        await admin.register_agency(identity(agency).card)
    assert_sdk_problem(excinfo, 409, "conflict", agency, "already registered")


async def test_registering_a_new_card_under_a_taken_name_is_a_conflict(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    impostor = Identity.generate(POLICE, suite=Suite.X25519)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Conflict) as excinfo:
        await admin.register_agency(impostor.card)
    assert_sdk_problem(excinfo, 409, "conflict", POLICE)


async def test_adding_a_card_that_is_already_registered_is_a_conflict(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    city = await world.client(CITY)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Conflict) as excinfo:
        await city.add_card(CITY, identity(CITY).card)
    assert_sdk_problem(excinfo, 409, "conflict", "already registered")


# -- bad bodies ---------------------------------------------------------------------------


BAD_REGISTRATIONS: dict[str, tuple[bytes, str | None, tuple[str, ...]]] = {
    "card not a card": (msgpack.packb({"card": b"\x93\x01\x02\x03"}), MSGPACK, ("card:",)),
    "card self-signature broken": (
        msgpack.packb({"card": broken_card()}),
        MSGPACK,
        ("card:", "does not verify"),
    ),
    "no card": (msgpack.packb({"kind": "agency"}), MSGPACK, ("'card'",)),
    "card a number": (msgpack.packb({"card": 7}), MSGPACK, ("'card'", "bytes")),
    "unknown kind": (
        msgpack.packb({"card": identity(NEWCOMER).card.serialize(), "kind": "root"}),
        MSGPACK,
        ("kind", "'agency', 'admin' or 'auditor'"),
    ),
    "kind not text": (
        msgpack.packb({"card": identity(NEWCOMER).card.serialize(), "kind": 1}),
        MSGPACK,
        ("'kind'", "str"),
    ),
    "not msgpack": (b"\xc1\xc1", MSGPACK, ("msgpack",)),
    "msgpack list": (msgpack.packb([identity(NEWCOMER).card.serialize()]), MSGPACK, ("map",)),
    "msgpack with integer keys": (msgpack.packb({1: b"x"}), MSGPACK, ("msgpack",)),
    "msgpack with trailing bytes": (msgpack.packb({"card": b"x"}) + b"\x00", MSGPACK, ("msgpack",)),
    "empty body": (b"", MSGPACK, ("msgpack",)),
    "not JSON": (b"{card:", "application/json", ("JSON",)),
    "JSON repeats a key": (b'{"card": "AA", "card": "AB"}', "application/json", ("repeats",)),
    "JSON Infinity": (b'{"card": "AA", "n": Infinity}', "application/json", ("JSON",)),
    "JSON nested too deep": (b"[" * 100_000 + b"]" * 100_000, "application/json", ("JSON",)),
    "JSON card not base64url": (b'{"card": "%%%%"}', "application/json", ("card",)),
    "JSON array": (b'["card"]', "application/json", ("map",)),
    "text/plain": (b"card=1", "text/plain", ("application/msgpack", "application/json")),
    "form": (b"card=1", "application/x-www-form-urlencoded", ("application/msgpack",)),
    "no content type": (msgpack.packb({"card": b"x"}), None, ("application/msgpack",)),
    "body above 256 KiB": (
        msgpack.packb({"card": b"\x00" * (256 * 1024)}),
        MSGPACK,
        ("larger than",),
    ),
}


@pytest.mark.parametrize(
    ("body", "content_type", "needles"), BAD_REGISTRATIONS.values(), ids=BAD_REGISTRATIONS.keys()
)
async def test_a_bad_registration_body_is_refused(
    world: RunningHub,
    redis_db: redis.Redis,
    body: bytes,
    content_type: str | None,
    needles: tuple[str, ...],
) -> None:
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await admin_post(world, "/v1/agencies", body, content_type)
    assert_sdk_problem(excinfo, 400, "bad-request", *needles)


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (msgpack.packb({"status": "deleted"}), ("'active' or 'suspended'",)),
        (msgpack.packb({"status": "SUSPENDED"}), ("'active' or 'suspended'",)),
        (msgpack.packb({}), ("missing field 'status'",)),
        (msgpack.packb({"status": True}), ("'status'", "str")),
        (b"\xc1", ("msgpack",)),
    ],
    ids=["unknown status", "upper case", "no status", "status a bool", "not msgpack"],
)
async def test_a_bad_status_body_is_refused(
    world: RunningHub, redis_db: redis.Redis, body: bytes, needles: tuple[str, ...]
) -> None:
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await admin_post(world, f"/v1/agencies/{CITY}/status", body)
    assert_sdk_problem(excinfo, 400, "bad-request", *needles)


async def test_a_card_for_another_agency_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    city = await world.client(CITY)
    other = Identity.generate(POLICE, suite=Suite.X25519)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await city.add_card(CITY, other.card)
    assert_sdk_problem(excinfo, 400, "bad-request", POLICE, CITY)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (msgpack.packb({"card": broken_card(CITY)}), "does not verify"),
        (msgpack.packb({}), "'card'"),
        (b"\xc1", "msgpack"),
    ],
    ids=["broken card", "no card", "not msgpack"],
)
async def test_a_bad_rotation_body_is_refused(
    world: RunningHub, redis_db: redis.Redis, body: bytes, needle: str
) -> None:
    city = await world.client(CITY)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await city.transport.request(
            "POST", f"/v1/agencies/{CITY}/cards", body=body, content_type=MSGPACK
        )
    assert_sdk_problem(excinfo, 400, "bad-request", needle)


# -- unknown agencies and cards -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/agencies/{NEWCOMER}",
        "/v1/agencies/Not-A-Slug",
        "/v1/agencies/%7Bdir%7D",
        f"/v1/cards/{'00' * 16}",
        "/v1/cards/not-a-key-id",
        f"/v1/cards/{identity(NEWCOMER).key_id}",
    ],
)
async def test_unknown_agencies_and_cards_are_not_found(
    world: RunningHub, redis_db: redis.Redis, path: str
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotFound) as excinfo:
        await police.transport.request("GET", path)
    assert_sdk_problem(excinfo, 404, "not-found")


async def test_an_unknown_agency_is_named_in_the_detail(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", f"/v1/agencies/{NEWCOMER}")
    assert_problem(answer, 404, "not-found", NEWCOMER)


async def test_changing_an_unknown_agency_is_not_found(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    with nothing_written(redis_db, nonces=2, refusals=2):
        with pytest.raises(sdk.NotFound) as excinfo:
            await admin.set_status(NEWCOMER, "suspended")
        assert_sdk_problem(excinfo, 404, "not-found", NEWCOMER)
        with pytest.raises(sdk.NotFound):
            await admin.add_card(NEWCOMER, identity(NEWCOMER).card)
