"""/v1/channels: creating channels, rosters, membership changes, and every refusal.

Creating channels and changing members are administrators' acts; a channel's roster is
shown to its members and administrators only (anyone else gets 404, as if it did not
exist). Each refusal checks status, problem type, detail and that Redis did not change
(see test_refusals.py).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import msgpack
import pytest
import redis

from clients import errors as sdk
from tests.hub.conftest import ADMIN, CHANNEL, CITY, POLICE, PROSECUTOR, RunningHub, identity
from tests.hub.test_refusals import (
    assert_problem,
    assert_sdk_problem,
    http_session,
    nothing_written,
    signed,
)

_http = pytest.fixture(http_session, name="http")

OUTSIDER = "stadt-bochum"
AUDITOR = "bfdi-pruefung"
NEW = "razzia-essen"
MSGPACK = "application/msgpack"


def channel_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": NEW,
        "ceiling": "VS-NfD",
        "retention_days": 30,
        "members": {POLICE: ["post", "read"], PROSECUTOR: ["read"]},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


async def admin_request(
    hub: RunningHub, method: str, path: str, body: bytes, content_type: str = MSGPACK
) -> Any:
    admin = await hub.client(ADMIN)
    return await admin.transport.request(method, path, body=body, content_type=content_type)


# -- channels as they should work ----------------------------------------------------------


async def test_create_then_members_see_the_roster(world: RunningHub) -> None:
    admin = await world.client(ADMIN)
    created = await admin.create_channel(
        NEW, ceiling="GEHEIM", retention_days=7, members={POLICE: {"post", "read"}, CITY: {"read"}}
    )
    assert (created.channel, created.ceiling, created.retention_days) == (NEW, "GEHEIM", 7)
    assert created.version == 1
    assert {a: m.roles for a, m in created.members.items()} == {
        POLICE: {"post", "read"},
        CITY: {"read"},
    }
    police = await world.client(POLICE)
    roster = await police.roster(NEW)
    assert roster.members[CITY].card == identity(CITY).card
    assert [c.agency for c in roster.reader_cards()] == [POLICE, CITY]


async def test_each_agency_lists_only_its_channels_and_an_administrator_all(
    world: RunningHub,
) -> None:

    admin = await world.client(ADMIN)
    await admin.create_channel(NEW, ceiling="OFFEN", retention_days=1, members={CITY: {"read"}})
    police, city = await world.client(POLICE), await world.client(CITY)
    assert await police.channels() == [{"channel": CHANNEL, "roles": ["post", "read"]}]
    assert [c["channel"] for c in await city.channels()] == [CHANNEL, NEW]
    assert [c["channel"] for c in await admin.channels()] == [CHANNEL, NEW]


async def test_membership_changes_bump_the_roster_version(world: RunningHub) -> None:
    admin = await world.client(ADMIN)
    await admin.register_agency(identity(OUTSIDER).card)
    added = await admin.set_member(CHANNEL, OUTSIDER, {"read"})
    assert added.version == 2 and "read" in added.members[OUTSIDER].roles
    removed = await admin.set_member(CHANNEL, OUTSIDER, set())
    assert removed.version == 3 and OUTSIDER not in removed.members
    outsider = await world.client(OUTSIDER)
    with pytest.raises(sdk.NotFound):
        await outsider.roster(CHANNEL)


async def test_a_channel_can_be_created_from_json(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:
    body = json.dumps(channel_body()).encode()
    answer = await signed(
        http,
        world,
        "POST",
        "/v1/channels",
        body,
        content_type="application/json",
        signer=identity(ADMIN),
    )
    assert answer.status == 201
    assert json.loads(answer.body)["readers"] == [POLICE, PROSECUTOR]


# -- administrators only -------------------------------------------------------------------


async def test_an_agency_may_not_create_a_channel(world: RunningHub, redis_db: redis.Redis) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Forbidden) as excinfo:
        await police.create_channel(NEW, ceiling="OFFEN", retention_days=1, members={})
    assert_sdk_problem(excinfo, 403, "forbidden", POLICE, "administrator")


@pytest.mark.parametrize("roles", [{"read"}, set()])
async def test_an_agency_may_not_change_members(
    world: RunningHub, redis_db: redis.Redis, roles: set[str]
) -> None:
    police = await world.client(POLICE)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Forbidden) as excinfo:
        await police.set_member(CHANNEL, PROSECUTOR, roles)
    assert_sdk_problem(excinfo, 403, "forbidden", "administrator")


# -- conflicts and unknowns ------------------------------------------------------------------


async def test_creating_an_existing_channel_is_a_conflict(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.Conflict) as excinfo:
        await admin.create_channel(
            CHANNEL, ceiling="GEHEIM", retention_days=1, members={CITY: {"read"}}
        )
    assert_sdk_problem(excinfo, 409, "conflict", CHANNEL, "already exists")


async def test_a_channel_with_an_unknown_member_is_not_created(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.NotFound) as excinfo:
        await admin.create_channel(
            NEW, ceiling="OFFEN", retention_days=1, members={OUTSIDER: {"read"}}
        )
    assert_sdk_problem(excinfo, 404, "not-found", OUTSIDER)


async def test_an_auditor_cannot_be_a_member(world: RunningHub, redis_db: redis.Redis) -> None:
    admin = await world.client(ADMIN)
    await admin.register_agency(identity(AUDITOR).card, kind="auditor")
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await admin.set_member(CHANNEL, AUDITOR, {"read"})
    assert_sdk_problem(excinfo, 400, "bad-request", AUDITOR, "an auditor, not an agency")


async def test_an_administrator_cannot_be_a_member(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    with nothing_written(redis_db, nonces=2, refusals=2):
        with pytest.raises(sdk.BadRequest) as excinfo:
            await admin.create_channel(
                NEW, ceiling="OFFEN", retention_days=1, members={ADMIN: {"read"}}
            )
        assert_sdk_problem(excinfo, 400, "bad-request", ADMIN, "administrator")
        with pytest.raises(sdk.BadRequest):
            await admin.set_member(CHANNEL, ADMIN, {"read"})


@pytest.mark.parametrize(
    ("channel", "agency", "roles", "error", "status", "slug", "needle"),
    [
        ("gibt-es-nicht", CITY, {"read"}, sdk.NotFound, 404, "not-found", "gibt-es-nicht"),
        ("gibt-es-nicht", CITY, set(), sdk.NotFound, 404, "not-found", "gibt-es-nicht"),
        (CHANNEL, OUTSIDER, {"read"}, sdk.NotFound, 404, "not-found", OUTSIDER),
        (CHANNEL, "Kein-Slug", set(), sdk.BadRequest, 400, "bad-request", "agency id"),
        (CHANNEL, CITY, {"write"}, sdk.BadRequest, 400, "bad-request", "unknown role"),
    ],
    ids=[
        "unknown channel",
        "removal from an unknown channel",
        "unknown agency",
        "agency id not a slug",
        "unknown role",
    ],
)
async def test_bad_membership_changes_are_refused(
    world: RunningHub,
    redis_db: redis.Redis,
    channel: str,
    agency: str,
    roles: set[str],
    error: type[sdk.HubProblem],
    status: int,
    slug: str,
    needle: str,
) -> None:
    admin = await world.client(ADMIN)
    with nothing_written(redis_db, nonces=1), pytest.raises(error) as excinfo:
        await admin.set_member(channel, agency, roles)
    assert_sdk_problem(excinfo, status, slug, needle)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (msgpack.packb({}), "missing field 'roles'"),
        (msgpack.packb({"roles": "read"}), "'roles' must be list"),
        (msgpack.packb({"roles": [1]}), "unknown role"),
        (msgpack.packb(["read"]), "map"),
        (b"\xc1", "msgpack"),
    ],
    ids=["no roles", "roles as text", "role a number", "a list", "not msgpack"],
)
async def test_bad_membership_bodies_are_refused(
    world: RunningHub, redis_db: redis.Redis, body: bytes, needle: str
) -> None:
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await admin_request(world, "PUT", f"/v1/channels/{CHANNEL}/members/{CITY}", body)
    assert_sdk_problem(excinfo, 400, "bad-request", needle)


@pytest.mark.parametrize("who", [OUTSIDER, POLICE])
async def test_a_channel_is_hidden_from_non_members_and_unknown_ones_are_not_found(
    world: RunningHub, redis_db: redis.Redis, who: str
) -> None:
    admin = await world.client(ADMIN)
    await admin.register_agency(identity(OUTSIDER).card)
    await admin.create_channel(NEW, ceiling="OFFEN", retention_days=1, members={CITY: {"read"}})
    client = await world.client(who)
    with nothing_written(redis_db, nonces=2, refusals=2):
        with pytest.raises(sdk.NotFound) as hidden:
            await client.roster(NEW)
        with pytest.raises(sdk.NotFound) as unknown:
            await client.roster("gibt-es-nicht")
    assert_sdk_problem(hidden, 404, "not-found", NEW)
    assert_sdk_problem(unknown, 404, "not-found", "gibt-es-nicht")
    assert hidden.value.detail == unknown.value.detail.replace("gibt-es-nicht", NEW)


# -- bad bodies ------------------------------------------------------------------------------


BAD_CHANNELS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "no channel": (channel_body(channel=None), ("'channel'",)),
    "no ceiling": (channel_body(ceiling=None), ("'ceiling'",)),
    "no retention": (channel_body(retention_days=None), ("'retention_days'",)),
    "no members": (channel_body(members=None), ("'members'",)),
    "channel id not a slug": (channel_body(channel="Razzia Essen"), ("channel id",)),
    "channel id with a brace": (channel_body(channel="ch}x"), ("channel id",)),
    "channel id too long": (channel_body(channel="a" * 64), ("channel id",)),
    "unknown ceiling": (channel_body(ceiling="STRENG-GEHEIM"), ("Classification",)),
    "ceiling in lower case": (channel_body(ceiling="vs-nfd"), ("Classification",)),
    "retention as text": (channel_body(retention_days="30"), ("'retention_days'", "int")),
    "retention as bool": (channel_body(retention_days=True), ("'retention_days'", "int")),
    "retention zero": (channel_body(retention_days=0), ("retention_days",)),
    "retention negative": (channel_body(retention_days=-1), ("retention_days",)),
    "retention beyond ten years": (channel_body(retention_days=3651), ("retention_days",)),
    "members a list": (channel_body(members=[POLICE]), ("'members'", "dict")),
    "member id not a slug": (channel_body(members={"PP Duisburg": ["read"]}), ("agency id",)),
    "roles as text": (channel_body(members={POLICE: "read"}), (f"members.{POLICE}", "roles")),
    "unknown role": (channel_body(members={POLICE: ["admin"]}), (f"members.{POLICE}", "admin")),
    "roles a map": (channel_body(members={POLICE: {"read": True}}), (f"members.{POLICE}",)),
    # Stored, such a member could never be parsed back: every channel listing would fail.
    "member without roles": (channel_body(members={POLICE: []}), (POLICE, "without a role")),
    "more than 256 members": (
        channel_body(members={f"stadt-{n}": ["read"] for n in range(257)}),
        ("at most 256",),
    ),
}


@pytest.mark.parametrize(("body", "needles"), BAD_CHANNELS.values(), ids=BAD_CHANNELS.keys())
async def test_a_bad_channel_body_is_refused(
    world: RunningHub, redis_db: redis.Redis, body: dict[str, Any], needles: tuple[str, ...]
) -> None:
    with nothing_written(redis_db, nonces=1), pytest.raises(sdk.BadRequest) as excinfo:
        await admin_request(world, "POST", "/v1/channels", msgpack.packb(body))
    assert_sdk_problem(excinfo, 400, "bad-request", *needles)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"channel": "a", "channel": "b"}', "application/json"),
        (b'{"retention_days": NaN}', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"\xc1", MSGPACK),
        (msgpack.packb("razzia-essen"), MSGPACK),
        (b"channel=razzia-essen", "text/plain"),
    ],
    ids=["JSON repeats a key", "JSON NaN", "JSON not UTF-8", "not msgpack", "a string", "text"],
)
async def test_a_channel_body_that_is_no_map_is_refused(
    world: RunningHub,
    http: aiohttp.ClientSession,
    redis_db: redis.Redis,
    body: bytes,
    content_type: str,
) -> None:
    with nothing_written(redis_db, nonces=1):
        answer = await signed(
            http,
            world,
            "POST",
            "/v1/channels",
            body,
            content_type=content_type,
            signer=identity(ADMIN),
        )
    assert_problem(answer, 400, "bad-request")
