"""The hub refuses a Redis that could lose its data, and warns about one without an AOF.

The verdict itself (:func:`hub.redischeck.judge`) is checked on ``INFO`` values; the
start, through the real command line against a real redis-server reconfigured with
``CONFIG SET``: a refused start is one line, exit status 1, nothing written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis

from hub.embedded import EmbeddedRedis
from hub.redischeck import judge
from tests.hub.conftest import hub_settings, start_hub
from tests.hub.test_workers import _refused, hub_env

GOOD = {"redis_version": "6.2.14", "maxmemory_policy": "noeviction", "aof_enabled": 1}


@pytest.mark.parametrize("version", ["6.2.0", "6.2.14", "7.2.4", "7.4", "8.0.2", "10.0.0"])
def test_redis_6_2_and_later_with_no_eviction_and_an_aof_pass(version: str) -> None:
    verdict = judge(GOOD | {"redis_version": version})
    assert verdict.refusals == [] and verdict.warnings == []


@pytest.mark.parametrize("version", ["5.0.7", "6.0.16", "6.1.9", "2.8.24"])
def test_an_older_redis_is_refused_naming_its_version(version: str) -> None:
    verdict = judge(GOOD | {"redis_version": version})
    assert verdict.refusals == [
        f"it is Redis {version}; the hub needs Redis 6.2 or later (or Valkey)"
    ]


@pytest.mark.parametrize("version", ["", "seven", "6", "6.2.x", "6.2.1.5", "9" * 50])
def test_a_version_that_does_not_parse_is_refused(version: str) -> None:
    [refusal] = judge(GOOD | {"redis_version": version}).refusals
    assert refusal.startswith("it reports no usable version")
    assert len(refusal) < 100  # a hostile INFO does not flood the message


def test_no_version_at_all_is_refused() -> None:
    info = {k: v for k, v in GOOD.items() if k != "redis_version"}
    assert judge(info).refusals == ["it reports no usable version ('')"]


@pytest.mark.parametrize(
    "policy",
    ["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-ttl", ""],
)
def test_every_eviction_policy_is_refused(policy: str) -> None:
    [refusal] = judge(GOOD | {"maxmemory_policy": policy}).refusals
    assert refusal.startswith(f"its maxmemory-policy is {policy or 'unknown'}:")
    assert refusal.endswith("set maxmemory-policy noeviction")


@pytest.mark.parametrize("aof", [0, None, "1"])
def test_no_append_only_file_is_a_warning_not_a_refusal(aof: object) -> None:
    verdict = judge(GOOD | {"aof_enabled": aof})
    assert verdict.refusals == []
    assert verdict.warnings == [
        "its append-only file is off: a Redis restart loses what was written since its "
        "last snapshot, accepted notes included (appendonly yes keeps them)"
    ]


def test_every_problem_is_named_at_once() -> None:
    verdict = judge({"redis_version": "5.0.7", "maxmemory_policy": "allkeys-lru"})
    assert len(verdict.refusals) == 2 and len(verdict.warnings) == 1


async def test_a_redis_that_evicts_keys_is_refused_at_start_and_nothing_is_written(
    tmp_path: Path, own_redis: EmbeddedRedis
) -> None:
    with redis.Redis.from_url(own_redis.url) as direct:
        direct.config_set("maxmemory-policy", "volatile-lru")  # would evict the nonces
        code, text = await _refused(tmp_path, hub_env(tmp_path, own_redis.url))
        assert code == 1
        assert text.endswith(
            "siko hub: cannot start: the hub cannot keep its data in Redis at "
            f"redis://:***@127.0.0.1:{own_redis.port}/0: its maxmemory-policy is "
            "volatile-lru: when memory runs short it would drop notes, audit leaves or "
            "nonces instead of refusing writes; set maxmemory-policy noeviction\n"
        )
        assert "Traceback" not in text
        assert direct.dbsize() == 0, "no administrator was registered"


async def test_a_redis_without_an_aof_is_used_with_a_warning(
    tmp_path: Path, own_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    with redis.Redis.from_url(own_redis.url) as direct:
        direct.config_set("appendonly", "no")
    with caplog.at_level(logging.WARNING, logger="hub"):
        hub = await start_hub(hub_settings(tmp_path, own_redis.url))
    try:
        warnings = [r.getMessage() for r in caplog.records if "append-only file" in r.message]
        assert warnings == [
            f"Redis at redis://:***@127.0.0.1:{own_redis.port}/0: its append-only file is "
            "off: a Redis restart loses what was written since its last snapshot, accepted "
            "notes included (appendonly yes keeps them)"
        ]
        assert own_redis.password not in warnings[0]
    finally:
        await hub.stop()
