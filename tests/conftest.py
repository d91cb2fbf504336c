"""Fixtures shared by the hub and client tests (see tests/hub/conftest.py for the parts).

Defined once here, at the top of the tests, so that every test module uses the same
session redis-server; a module that imported these functions would get its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from hub.embedded import EmbeddedRedis
from tests.hub.conftest import RunningHub, hub_settings, make_world, start_hub


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendfsync="always")
    url = asyncio.run(server.start())
    yield url
    asyncio.run(server.stop())


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client of the session Redis, flushed before the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
async def hub(tmp_path: Path, redis_url: str, redis_db: redis.Redis) -> AsyncIterator[RunningHub]:
    running = await start_hub(hub_settings(tmp_path, redis_url))
    yield running
    await running.stop()


@pytest.fixture
async def world(hub: RunningHub) -> RunningHub:
    await make_world(hub)
    return hub


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A redis-server of this test alone (appendfsync always), which it may kill, pause
    and restart: fault tests must not touch the session one."""
    server = EmbeddedRedis(tmp_path / "redis", appendfsync="always")
    await server.start()
    yield server
    await server.stop()
