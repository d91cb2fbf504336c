"""``siko post --log-key`` / ``SIKO_LOG_KEY``: reader cards are checked against that log key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis

from hub.state import AUDIT
from keys.logkey import LogKey
from tests.clients.conftest import Siko
from tests.clients.helpers import assert_refused
from tests.clients.test_cli_agency import ENV, POST, Agencies
from tests.clients.test_sdk import NOTES_KEY
from tests.hub.conftest import POLICE, RunningHub


@pytest.fixture
def agencies(siko: Siko, world: RunningHub, tmp_path: Path) -> Agencies:
    return Agencies(siko, world, tmp_path)


async def test_post_with_the_right_log_key_pins_it(
    agencies: Agencies, world: RunningHub, redis_db: redis.Redis
) -> None:
    key = world.app[AUDIT].key.verifier_key
    result = await agencies.run(POLICE, *POST, "--log-key", key, "--text", "mit Schlüssel")
    assert result.exit_code == 0, result.output
    state = json.loads(agencies.state(POLICE).read_text())
    assert state["log_key"] == key and len(state["logged"]) == 3
    assert redis_db.xlen(NOTES_KEY) == 1


async def test_post_with_another_log_key_is_refused_exit_4_nothing_posted(
    agencies: Agencies, world: RunningHub, siko: Siko, redis_db: redis.Redis
) -> None:
    other = LogKey.generate(world.app[AUDIT].key.origin).verifier_key
    result = await agencies.run(POLICE, *POST, "--log-key", other, "--text", "darf nicht raus")
    assert_refused(result, 4, "not signed by the log key you trust")
    argv = ["post", "--key", str(agencies.key(POLICE)), "--passphrase-env", "SIKO_TEST_PASS"]
    env = {**ENV, "SIKO_HUB": world.base_url, "SIKO_LOG_KEY": other,
           "SIKO_STATE": str(agencies.state(POLICE))}  # fmt: skip
    from_env = await asyncio.to_thread(siko, *argv, *POST[1:], "--text", "auch nicht", env=env)
    assert_refused(from_env, 4, "not signed by the log key you trust")
    bad = await agencies.run(POLICE, *POST, "--log-key", "kein-schluessel", "--text", "x")
    assert bad.exit_code == 2 and "not a log verifier key" in bad.output
    assert redis_db.xlen(NOTES_KEY) == 0
