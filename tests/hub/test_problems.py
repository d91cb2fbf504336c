"""hub/problems.py: every error of the hub is an RFC 9457 problem, whatever raised it.

Unknown paths and wrong methods (aiohttp's own errors), a hub shutting down, a hub whose
Redis is unreachable, and damaged records in storage (unexpected errors, answered with a
generic 500 that reveals nothing).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis

from clients import errors as sdk
from clients.sdk import HubClient
from clients.transport import Transport
from hub import keyspace
from hub.embedded import EmbeddedRedis
from hub.metrics import SHUTTING_DOWN
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    POLICE,
    RunningHub,
    hub_settings,
    identity,
    start_hub,
)
from tests.hub.test_refusals import (
    assert_problem,
    http_session,
    nothing_written,
    send,
    sign,
    signed,
)

_http = pytest.fixture(http_session, name="http")


async def hub_without_redis(tmp_path: Path) -> AsyncIterator[RunningHub]:
    """A hub whose own Redis was stopped after it started (the hub needs Redis to start:
    it registers its first administrators). Test modules make it their ``down_hub``."""
    server = EmbeddedRedis(tmp_path / "own-redis")
    url = await server.start()
    running = await start_hub(hub_settings(tmp_path, url))
    await server.stop()
    yield running
    await running.stop()


_down_hub = pytest.fixture(hub_without_redis, name="down_hub")


# -- aiohttp's own errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v1/nirgendwo", "/v2/agencies", f"/v1/channels/{CHANNEL}/notes/x/y/z", "/", "/v1/"],
)
async def test_an_unknown_path_is_a_not_found_problem(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis, path: str
) -> None:
    # The request is signed: authentication comes before routing (test_refusals.py), so
    # an unsigned one would be 401 whatever the path. Its nonce is recorded by design.
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, "GET", path)
    assert_problem(answer, 404, "not-found", "/v1/openapi.json")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/agencies", "POST"),
        ("PUT", f"/v1/channels/{CHANNEL}/notes", "GET"),
        ("GET", f"/v1/channels/{CHANNEL}/reads", "POST"),
        ("PATCH", f"/v1/channels/{CHANNEL}/members/{POLICE}", "PUT"),
    ],
)
async def test_a_wrong_method_is_a_bad_request_problem_naming_the_allowed_ones(
    world: RunningHub,
    http: aiohttp.ClientSession,
    redis_db: redis.Redis,
    method: str,
    path: str,
    allowed: str,
) -> None:
    # The hub answers 400 bad-request (not 405) and names the allowed methods in the
    # detail; there is no Allow header.
    with nothing_written(redis_db, nonces=1):
        answer = await signed(http, world, method, path)
    assert_problem(answer, 400, "bad-request", "method not allowed", allowed)


async def test_a_wrong_method_on_a_public_path_needs_no_signature(
    hub: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    with nothing_written(redis_db, nonces=0):
        answer = await send(http, hub.base_url + "/healthz", "POST", {}, b"")
    assert_problem(answer, 400, "bad-request", "GET")


async def test_problem_bodies_are_utf8_json_with_exactly_the_rfc_9457_members(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:
    answer = await signed(http, world, "GET", "/v1/agencies/st%C3%A4dt")
    problem = assert_problem(answer, 404, "not-found", "st\u00e4dt")
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert json.loads(answer.body.decode("utf-8")) == problem
    assert problem["title"] == "No such resource"


# -- shutting down -------------------------------------------------------------------------


async def test_a_hub_shutting_down_refuses_new_work_before_authentication(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    world.app[SHUTTING_DOWN]["now"] = True
    try:
        # Both refusals are logged, the signed one and the unsigned one alike.
        with nothing_written(redis_db, nonces=0, refusals=2):
            for headers in (sign(world, "GET", "/v1/agencies"), {}):
                answer = await send(http, world.base_url + "/v1/agencies", "GET", headers, b"")
                assert_problem(answer, 503, "shutting-down", "another replica")
            health = await send(http, world.base_url + "/healthz", "GET", {}, b"")
            ready = await send(http, world.base_url + "/readyz", "GET", {}, b"")
        assert health.status == 200
        assert ready.status == 503 and json.loads(ready.body) == {"status": "shutting down"}
    finally:
        world.app[SHUTTING_DOWN]["now"] = False
    answer = await signed(http, world, "GET", "/v1/agencies")
    assert answer.status == 200


# -- storage unreachable -------------------------------------------------------------------


async def test_an_unreachable_redis_is_503_unavailable_with_retry_after(
    down_hub: RunningHub, http: aiohttp.ClientSession
) -> None:
    answer = await signed(http, down_hub, "GET", "/v1/agencies")
    assert_problem(answer, 503, "unavailable", "retry")
    assert answer.headers["Retry-After"] == "1"
    assert "127.0.0.1" not in answer.body.decode() and "redis://" not in answer.body.decode()


async def test_the_sdk_sees_unavailable_with_its_retry_after(down_hub: RunningHub) -> None:
    transport = Transport(down_hub.base_url, identity(POLICE), retries=0)
    async with HubClient(down_hub.base_url, identity(POLICE), transport=transport) as police:
        with pytest.raises(sdk.Unavailable) as excinfo:
            await police.agencies()
    assert excinfo.value.status == 503 and excinfo.value.retry_after == 1
    assert excinfo.value.problem_type == "urn:siko:problem:unavailable"


# -- damaged records in storage --------------------------------------------------------------


async def test_a_damaged_directory_entry_is_a_500_that_reveals_nothing(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    hostile = b"\x85\xa5agency\xabpp-duisburg GEHEIMER-WERT"
    redis_db.hset(keyspace.agencies(), POLICE, hostile)
    # An unexpected error is no refusal: it is logged for the operator, not audited. The
    # request's signature verified, so its nonce is used up (hub/auth.py step 5).
    with nothing_written(redis_db, nonces=1, refusals=0):
        answer = await signed(http, world, "GET", "/v1/agencies")
    problem = assert_problem(answer, 500, "internal", "logged")
    assert "GEHEIMER-WERT" not in answer.body.decode() and "Traceback" not in problem["detail"]


async def test_a_damaged_card_is_a_500_naming_only_its_key_id(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    newcomer = identity("stadt-bochum")
    await (await world.client(ADMIN)).register_agency(newcomer.card)
    key_id = str(newcomer.key_id)
    redis_db.hset(keyspace.cards(), key_id, b"GEHEIMER-WERT")
    with nothing_written(redis_db, nonces=0):
        answer = await signed(http, world, "GET", "/v1/agencies", signer=newcomer)
    assert_problem(answer, 500, "internal", key_id)
    assert "GEHEIMER-WERT" not in answer.body.decode()
